"""eap-radius in the engine, review revradius: what an Access-Accept says of the session travels
with its IKE SA.

- The Accept's Session-Timeout, Class and Acct-Interim-Interval (``RelayReply.accepted``) come out
  with the IKE SA in its IkeSaUp (``IkeSaUp.accepted``), whenever the client sends its last AUTH:
  the engine keeps them with the half-open SA (GatewayEap), not the edge in a table that other
  logins share and can push them out of (F2; tests/radius/test_review_revradius_unclaimed.py).

Two engines on the test network (tunsec.ike.testing), the backend is the test (test_engine_eap_relay)."""
from __future__ import annotations

import dataclasses

from test_engine_eap_relay import NOW, A, B, MschapBackend, client, gateway, only, relay

from tunsec.ike.eap.relay import RelayOutcome, RelayReply
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import Accepted, EapRelayRequest, IkeSaUp
from tunsec.ike.testing import Network, Sent

TERMS = Accepted((b"vpn-gold", b"cc-7"), 600, 3600)


class WithTerms(MschapBackend):
    """The backend's Access-Accept says ``TERMS`` of the session."""

    def __call__(self, ev: EapRelayRequest) -> RelayReply:
        reply = super().__call__(ev)
        return dataclasses.replace(reply, accepted=TERMS) if reply.outcome is RelayOutcome.ACCEPT else reply


def test_the_accepts_session_timeout_and_class_come_up_with_the_ike_sa() -> None:
    net = Network()
    gw = net.add(B, IkeEndpoint([gateway()], wall_clock=lambda: NOW))
    net.add(A, IkeEndpoint([client()], wall_clock=lambda: NOW)).initiate("rw", "net", net.now)
    backend = WithTerms()

    def slow_last_auth(sent: Sent) -> bool:
        """The client's last AUTH (after EAP-Success) gets through only on a retransmission, seconds later."""
        return sent.src[0] == A and len(backend.asked) == 3 and net.now < 5.0

    net.drop = slow_last_auth
    relay(net, gw, backend, until=30.0)
    (up,) = only([e for _, e in net.events[B]], IkeSaUp)
    assert up.accepted == TERMS   # main: no such field; the edge's shared table held them (RadiusRelay._accepted)


def test_an_accept_that_says_nothing_of_the_session_comes_up_without_terms() -> None:
    net = Network()
    gw = net.add(B, IkeEndpoint([gateway()], wall_clock=lambda: NOW))
    net.add(A, IkeEndpoint([client()], wall_clock=lambda: NOW)).initiate("rw", "net", net.now)
    relay(net, gw, MschapBackend(), until=20.0)
    (up,) = only([e for _, e in net.events[B]], IkeSaUp)
    assert up.accepted is None
