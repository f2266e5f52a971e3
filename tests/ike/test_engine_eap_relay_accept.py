"""eap-radius in the engine, review revradius: what an Access-Accept says of the session travels
with its IKE SA, and an IDi the RADIUS User-Name cannot hold whole is refused.

- The Accept's Session-Timeout, Class and Acct-Interim-Interval (``RelayReply.accepted``) come out
  with the IKE SA in its IkeSaUp (``IkeSaUp.accepted``), whenever the client sends its last AUTH:
  the engine keeps them with the half-open SA (GatewayEap), not the edge in a table that other
  logins share and can push them out of (F2; tests/radius/test_radius_accept_kept_with_sa.py).
- Without ``eap_id`` the relay's EAP identity is IDi, and the Access-Request's User-Name holds 253
  bytes: a longer IDi was cut there, the server checked the cut name, and an Accept without a
  User-Name of its own proved the whole IDi.  Refused before the backend is asked, as a longer
  EAP-Identity already is (remark c).

Two engines on the test network (tunsec.ike.testing), the backend is the test (test_engine_eap_relay)."""
from __future__ import annotations

import dataclasses

import pytest
from test_engine_eap_relay import NOW, A, B, MschapBackend, client, gateway, only, relay

from tunsec.ike.eap.relay import RelayOutcome, RelayReply
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import Accepted, AuthFailed, EapRelayRequest, Event, IkeSaUp
from tunsec.ike.identity import Identity
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


def _login_as(ike_id: str) -> tuple[list[Event], MschapBackend]:
    """A client whose IDi is ``ike_id`` at a gateway without eap_id (IDi is the EAP identity)."""
    net = Network()
    gw = net.add(B, IkeEndpoint([gateway(eap_id="")], wall_clock=lambda: NOW))
    net.add(A, IkeEndpoint([client(ike_id=ike_id)], wall_clock=lambda: NOW)).initiate("rw", "net", net.now)
    backend = MschapBackend(passwords={Identity.parse(ike_id).data: "Alice-pw-1"})
    relay(net, gw, backend, until=20.0)
    return [e for _, e in net.events[B]], backend


@pytest.mark.parametrize(("ike_id", "length"), [
    ("a" * 245 + ".example", 253),    # an FQDN as long as a User-Name holds
    ("a" * 246 + ".example", 254),
    ("a" * 247 + ".example", 255),    # the longest FQDN IDi (identity._MAX_ID_BYTES_OF)
    ("@#" + "61" * 400, 400),          # a KEY_ID may be longer (MAX_ID_BYTES)
], ids=["fqdn-253", "fqdn-254", "fqdn-255", "keyid-400"])
def test_an_idi_longer_than_a_radius_user_name_is_refused_before_the_backend_is_asked(ike_id: str,
                                                                                       length: int) -> None:
    events, backend = _login_as(ike_id)
    if length <= 253:   # the whole name goes to the backend, which checks it
        assert [e.identity for e in backend.asked][:1] == [ike_id.encode()]
        assert len(only(events, IkeSaUp)) == 1
        return
    # main: the backend was asked, with the first 253 bytes as User-Name (messages.access_request cuts it)
    assert not backend.asked and not only(events, IkeSaUp)
    (failed,) = only(events, AuthFailed)
    assert f"is {length} bytes" in failed.reason and "holds at most 253" in failed.reason, failed.reason
    assert not failed.by_peer
