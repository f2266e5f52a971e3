"""Review revipv6 F1: a link-local IPv6 peer (a %any connection) never gets through IKE_AUTH once it
floats to port 4500.

The control process reads port 500 itself: recvfrom names a link-local sender with its zone
("fe80::1%eth0", services/ike/sockets.py recv).  Port 4500 is the worker's: its pipe.Ike carries the
sender as 16 bytes (pipe Endpoint), so receive_natt hands the engine "fe80::1" without the zone.  The
responder then takes the IKE_AUTH for one from another address than its IKE_SA_INIT
(sa_responder: "first IKE_AUTH from another IP than its IKE_SA_INIT: not answered") and the peer
retransmits until it gives up.  (Were it answered, the worker's SEND_IKE to an unscoped fe80::
address is refused by the kernel, EINVAL, and so is ESP to it: sad.c sets no sin6_scope_id.)

The fix (the review's proposal (a), ike/link_local.py): an IKE_SA_INIT from a link-local source is
refused on either port, before anything is kept, counted (ike_drops.link_local) and logged at a
limited rate; the peer hears nothing and the operator reads why.  The review's proof asserted that the
IKE SA comes up (proposal (b), carrying the zone); it now asserts this refusal instead, with its
harness unchanged.

The datagrams go through the real conversions: the port-500 source as the socket gives it, the
port-4500 one through a pipe.Ike encoded and decoded and addr_text, as service.receive_natt does."""

from __future__ import annotations

import ipaddress
import logging

import pytest
from test_engine import initiator_cfg, only, responder_cfg

from tunsec.dataplane import pipe
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaUp
from tunsec.ike.link_local import is_link_local
from tunsec.ike.testing import Network, Sent
from tunsec.loglimit import LogLimiter
from tunsec.policy.selector import addr_text

A, B = "fe80::1", "fe80::2"
ZONE = "eth0"


def _via_worker(data: bytes, src: tuple[str, int]) -> tuple[str, int]:
    """The sender as receive_natt gives it to the engine: through the pipe's IKE event."""
    scoped = f"{src[0]}%{ZONE}" if src[0].startswith("fe80:") else src[0]   # as the kernel names it
    msg = pipe.Ike(data=data, remote=pipe.Endpoint(ipaddress.ip_address(scoped), src[1]))
    back = pipe.decode(pipe.encode(msg))
    assert isinstance(back, pipe.Ike)
    return addr_text(back.remote.addr), back.remote.port


class OneLink(Network):
    """Two hosts on one link, talking by link-local addresses: port 500 is read by the control
    process's own socket (the zone named), port 4500 by the worker (through the pipe)."""

    def deliver(self, sent: Sent) -> None:
        node = self.nodes.get(sent.dst[0].partition("%")[0])
        if node is None:
            return
        if sent.dst[1] == 500:
            src = (f"{sent.src[0]}%{ZONE}" if sent.src[0].startswith("fe80:") else sent.src[0], sent.src[1])
        else:
            src = _via_worker(sent.data, sent.src)
        node.receive(sent.data, src, self.now, local_addr=sent.dst)


def _run(a_ip: str, b_ip: str) -> OneLink:
    net = OneLink()
    a = net.add(a_ip, IkeEndpoint([initiator_cfg(local_addr=a_ip, remote_addr=b_ip)]))
    net.add(b_ip, IkeEndpoint([responder_cfg(local_addr=b_ip)]))   # remote_addrs = %any
    a.initiate("a-to-b", "net", net.now)
    net.run(until=10)
    return net


def test_global_ipv6_peer_through_the_same_conversions_comes_up() -> None:
    """The harness's own check: global addresses (no zone on either path) come up."""
    a_ip, b_ip = "2001:db8::1", "2001:db8::2"
    net = _run(a_ip, b_ip)
    assert only(net.take(b_ip), ChildSaUp) and only(net.take(a_ip), ChildSaUp)


def test_link_local_peer_is_refused_at_ike_sa_init_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Review revipv6 F1 (was ::test_link_local_peer_completes_ike_auth_over_port_4500): no IKE_AUTH
    left unanswered on port 4500 any more: the IKE_SA_INIT on port 500 is dropped, counted, logged."""
    with caplog.at_level(logging.WARNING, logger="tunsec.ike.link_local"):
        net = _run(A, B)
    gw = net.nodes[B]
    inits = [s for s in net.log if s.dst == (B, 500)]
    assert inits, "the harness sent no IKE_SA_INIT"
    # on main: answered, then every IKE_AUTH on port 4500 unanswered (retransmitted)
    assert not [s for s in net.log if s.src[0] == B], "the gateway answered a link-local peer"
    assert not [s for s in net.log if s.dst == (B, 4500)]
    assert gw.stats.link_local == len(inits) and gw.half_open == 0 and not gw.sas
    assert not only(net.take(A), ChildSaUp) and not only(net.take(B), ChildSaUp)
    lines = [r.getMessage() for r in caplog.records]
    assert lines and all(f"link-local {A}%{ZONE}[500]" in line for line in lines)
    assert len(lines) <= LogLimiter.burst   # one a retransmission at most, a burst a period


def test_link_local_ike_sa_init_on_port_4500_is_refused_too() -> None:
    """The worker's path (no zone: fe80::1) is refused as well: a peer with remote_port = 4500."""
    net = OneLink()
    gw = net.add(B, IkeEndpoint([responder_cfg(local_addr=B)]))
    init = IkeEndpoint([initiator_cfg(local_addr=A, remote_addr=B)])
    init.initiate("a-to-b", "net", 0.0)
    first = init.datagrams_to_send(0.0)[0]
    src = _via_worker(first.data, (A, 4500))
    assert src == (A, 4500)   # unscoped, as receive_natt names it
    gw.receive(first.data, src, 0.0, local_addr=(B, 4500))
    # on main: a half-open IKE SA and its answer (whose IKE_AUTH would then fail as above)
    assert gw.half_open == 0 and not gw.datagrams_to_send(0.0)
    assert gw.stats.link_local == 1


@pytest.mark.parametrize("ip", ["fe80::1", "fe80::1%eth0", "febf:ffff::1%2"])
def test_link_local_addresses_in_both_forms(ip: str) -> None:
    assert is_link_local(ip)


@pytest.mark.parametrize("ip", ["fec0::1", "fd00::1", "2001:db8::1", "192.0.2.1", "169.254.1.1", "junk"])
def test_other_addresses_are_not_link_local(ip: str) -> None:
    """IPv4 link-local (169.254/16) names no zone in Python's socket: it reaches the worker's path
    the same way on both ports, and stays served."""
    assert not is_link_local(ip)
