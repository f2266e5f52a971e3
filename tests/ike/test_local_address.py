"""A responder without local_addrs (its sockets on the wildcard) that is asked at one of several
addresses: the socket tells it which (IP_PKTINFO), and the IKE SA keeps that address: every answer
names it as its source (Datagram.source) and its Child SAs are installed on it (ChildSaUp.local_ip).
An initiator without local_addrs learns its address from where the peer's first authenticated
answer arrived.  Two engines, datagrams passed by hand."""

from __future__ import annotations

from test_engine_more import NOW, A, B, cfg

from tunsec.ike.endpoint import Datagram, IkeEndpoint
from tunsec.ike.events import ChildSaUp

SECOND = "192.0.2.12"   # the responder's second address; its first would be B


def exchange(a: IkeEndpoint, b: IkeEndpoint, a_at: str, b_at: str) -> tuple[list[Datagram], list[Datagram]]:
    """Pass datagrams both ways until both are quiet: A's go to B's address ``b_at`` from ``a_at``
    (and B's wildcard socket says where they arrived), B's answers arrive at ``a_at`` (A's socket
    says so); what each sent."""
    sent_a: list[Datagram] = []
    sent_b: list[Datagram] = []
    for _ in range(20):
        out_a, out_b = a.datagrams_to_send(0.0), b.datagrams_to_send(0.0)
        if not out_a and not out_b:
            break
        for d in out_a:
            sent_a.append(d)
            b.receive(d.data, (a_at, d.local_port), 0.0, local_addr=(b_at, d.addr[1]))
        for d in out_b:
            sent_b.append(d)
            a.receive(d.data, (d.source or b_at, d.local_port), 0.0, local_addr=(a_at, d.addr[1]))
    return sent_a, sent_b


def child_local_ips(e: IkeEndpoint) -> list[str | None]:
    ups = []
    while (ev := e.next_event()) is not None:
        if isinstance(ev[1], ChildSaUp):
            ups.append(ev[1].local_ip)
    return ups


def test_the_responder_answers_from_and_installs_on_the_address_it_was_asked_at() -> None:
    a = IkeEndpoint([cfg(True, remote_addr=SECOND)], wall_clock=lambda: NOW)
    b = IkeEndpoint([cfg(False, local_addr=None)], wall_clock=lambda: NOW)
    a.initiate("conn", "net", 0.0)
    _, answers = exchange(a, b, A, SECOND)
    assert len(answers) >= 2   # IKE_SA_INIT and IKE_AUTH answered
    assert {d.source for d in answers} == {SECOND}
    (sa,) = b.sas
    assert sa.local_ip == SECOND
    assert child_local_ips(b) == [SECOND]


def test_an_initiator_on_the_wildcard_learns_its_address_from_the_authenticated_answer() -> None:
    a = IkeEndpoint([cfg(True, local_addr=None)], wall_clock=lambda: NOW)
    b = IkeEndpoint([cfg(False)], wall_clock=lambda: NOW)
    a.initiate("conn", "net", 0.0)
    (sa,) = a.sas
    assert sa.local_ip is None      # nothing said yet: the route picks the source
    requests, _ = exchange(a, b, A, B)
    assert sa.local_ip == A
    assert [d.source for d in requests[:2]] == [None, None]   # IKE_SA_INIT and IKE_AUTH: before it knew
    assert child_local_ips(a) == [A]


def test_a_learned_address_is_forgotten_when_ours_change_and_learned_again_from_the_update() -> None:
    """MOBIKE (the original initiator moved): the update leaves from the route's new choice, not
    from the learned address, which may be gone; its answer says where we are now."""
    a = IkeEndpoint([cfg(True, local_addr=None)], wall_clock=lambda: NOW)
    b = IkeEndpoint([cfg(False)], wall_clock=lambda: NOW)
    a.initiate("conn", "net", 0.0)
    (sa,) = a.sas
    exchange(a, b, A, B)
    assert sa.mobike and sa.local_ip == A
    assert sa.update_addresses()
    assert sa.local_ip is None
    requests, _ = exchange(a, b, SECOND, B)
    assert requests[:1] and requests[0].source is None   # UPDATE_SA_ADDRESSES: the route picks its source
    assert sa.local_ip == SECOND
