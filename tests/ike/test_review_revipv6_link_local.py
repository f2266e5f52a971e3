"""Review revipv6 F1: a link-local IPv6 peer (a %any connection) never gets through IKE_AUTH once it
floats to port 4500.

The control process reads port 500 itself: recvfrom names a link-local sender with its zone
("fe80::1%eth0", services/ike/sockets.py recv).  Port 4500 is the worker's: its pipe.Ike carries the
sender as 16 bytes (pipe Endpoint), so receive_natt hands the engine "fe80::1" without the zone.  The
responder then takes the IKE_AUTH for one from another address than its IKE_SA_INIT
(sa_responder: "first IKE_AUTH from another IP than its IKE_SA_INIT: not answered") and the peer
retransmits until it gives up.  (Were it answered, the worker's SEND_IKE to an unscoped fe80::
address is refused by the kernel, EINVAL, and so is ESP to it: sad.c sets no sin6_scope_id.)

The datagrams go through the real conversions: the port-500 source as the socket gives it, the
port-4500 one through a pipe.Ike encoded and decoded and addr_text, as service.receive_natt does."""

from __future__ import annotations

import ipaddress

from test_engine import initiator_cfg, only, responder_cfg

from tunsec.dataplane import pipe
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaUp
from tunsec.ike.testing import Network, Sent
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


def test_link_local_peer_completes_ike_auth_over_port_4500() -> None:
    net = _run(A, B)
    auths = [s for s in net.log if s.dst == (B, 4500)]
    answers = [s for s in net.log if s.src == (B, 4500)]
    assert len(auths) >= 1
    # on main: every IKE_AUTH goes unanswered (retransmitted), no Child SA at either end
    assert answers, "the responder never answered the link-local peer's IKE_AUTH on port 4500"
    assert only(net.take(B), ChildSaUp) and only(net.take(A), ChildSaUp)
