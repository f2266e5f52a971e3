"""Where IKE and ESP in UDP go after IKE_SA_INIT, for each pair of ports the initiator starts on:
strongSwan's float_ports (ike_sa.c) moves the peer to 4500 if either end used 500 and leaves a
peer on a custom port where it is; our end moves to 4500 (the worker's ESP socket), and the
responder follows the initiator to wherever its IKE_AUTH comes from."""

from __future__ import annotations

import dataclasses

import pytest
from test_engine import A, B, initiator_cfg, make_net, only

from tunsec.ike.events import ChildSaUp


@pytest.mark.parametrize(("local", "remote", "peer_after"), [
    (500, 500, 4500),       # the usual case
    (500, 5000, 4500),      # strongSwan floats the peer too when our end was on 500
    (1500, 500, 4500),      # a custom port of ours (unprivileged IKE) to a peer on 500
    (1500, 5000, 5000),     # custom ports at both ends: the peer stays on its port
    (1500, 4500, 4500),     # ... on its NAT-T port from the start (how a tunsec peer takes that)
])
def test_initiator_floats_as_strongswan(local: int, remote: int, peer_after: int) -> None:
    net, a, _ = make_net(initiator_cfg(local_port=local, remote_port=remote))
    a.initiate("a-to-b", "net", net.now)
    net.run()
    init_sa_init = net.log[0]
    assert (init_sa_init.src, init_sa_init.dst) == ((A, local), (B, remote))
    auth = net.log[2]   # the IKE_AUTH request, after IKE_SA_INIT's request and answer
    assert (auth.src, auth.dst) == ((A, 4500), (B, peer_after))
    (ca,), (cb,) = only(net.take(A), ChildSaUp), only(net.take(B), ChildSaUp)
    # ESP in UDP between the ports IKE ended up on, on both sides
    assert (ca.local_port, ca.remote_addr) == (4500, (B, peer_after))
    assert (cb.local_port, cb.remote_addr) == (peer_after, (A, 4500))


def test_a_responder_answers_from_the_port_it_was_asked_on() -> None:
    """Custom ports at both ends: the responder keeps answering on its custom port."""
    net, a, _ = make_net(dataclasses.replace(initiator_cfg(), local_port=1500, remote_port=5000))
    a.initiate("a-to-b", "net", net.now)
    net.run()
    answers = [s for s in net.log if s.src[0] == B]
    assert answers and all(s.src == (B, 5000) for s in answers)
    assert [s.dst for s in answers] == [(A, 1500)] + [(A, 4500)] * (len(answers) - 1)
