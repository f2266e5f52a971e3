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


def test_the_responder_answers_from_and_installs_on_the_address_it_was_asked_at() -> None:
    a = IkeEndpoint([cfg(True, remote_addr=SECOND)], wall_clock=lambda: NOW)
    b = IkeEndpoint([cfg(False, local_addr=None)], wall_clock=lambda: NOW)
    a.initiate("conn", "net", 0.0)
    answers: list[Datagram] = []
    for _ in range(20):
        out_a, out_b = a.datagrams_to_send(0.0), b.datagrams_to_send(0.0)
        if not out_a and not out_b:
            break
        for d in out_a:    # a sends to SECOND: b's socket says so
            b.receive(d.data, (A, d.local_port), 0.0, local_addr=d.addr)
        for d in out_b:
            answers.append(d)
            a.receive(d.data, (d.source or "unknown", d.local_port), 0.0, local_addr=d.addr)
    assert len(answers) >= 2   # IKE_SA_INIT and IKE_AUTH answered
    assert {d.source for d in answers} == {SECOND}
    (sa,) = b.sas
    assert sa.local_ip == SECOND
    ups = []
    while (ev := b.next_event()) is not None:
        if isinstance(ev[1], ChildSaUp):
            ups.append(ev[1])
    assert [up.local_ip for up in ups] == [SECOND]


def test_an_initiator_on_the_wildcard_learns_its_address_from_the_authenticated_answer() -> None:
    a = IkeEndpoint([cfg(True, local_addr=None)], wall_clock=lambda: NOW)
    b = IkeEndpoint([cfg(False)], wall_clock=lambda: NOW)
    a.initiate("conn", "net", 0.0)
    (sa,) = a.sas
    assert sa.local_ip is None      # nothing said yet: the route picks the source
    sources: list[str | None] = []
    for _ in range(20):
        out_a, out_b = a.datagrams_to_send(0.0), b.datagrams_to_send(0.0)
        if not out_a and not out_b:
            break
        for d in out_a:
            sources.append(d.source)
            b.receive(d.data, (A, d.local_port), 0.0, local_addr=d.addr)
        for d in out_b:   # answers reach A's wildcard socket, which says at which address (A)
            a.receive(d.data, (d.source or B, d.local_port), 0.0, local_addr=d.addr)
    assert sa.local_ip == A
    assert sources[:2] == [None, None]      # IKE_SA_INIT and IKE_AUTH went out before it knew
    ups = []
    while (ev := a.next_event()) is not None:
        if isinstance(ev[1], ChildSaUp):
            ups.append(ev[1])
    assert [up.local_ip for up in ups] == [A]


def test_a_learned_address_is_forgotten_when_ours_change_and_learned_again_from_the_update() -> None:
    """MOBIKE (the original initiator moved): the update leaves from the route's new choice, not
    from the learned address, which may be gone; its answer says where we are now."""
    a = IkeEndpoint([cfg(True, local_addr=None)], wall_clock=lambda: NOW)
    b = IkeEndpoint([cfg(False)], wall_clock=lambda: NOW)
    a.initiate("conn", "net", 0.0)
    (sa,) = a.sas
    here = A

    def exchange() -> list[str | None]:
        sources = []
        for _ in range(20):
            out_a, out_b = a.datagrams_to_send(0.0), b.datagrams_to_send(0.0)
            if not out_a and not out_b:
                break
            for d in out_a:
                sources.append(d.source)
                b.receive(d.data, (here, d.local_port), 0.0, local_addr=d.addr)
            for d in out_b:
                a.receive(d.data, (d.source or B, d.local_port), 0.0, local_addr=(here, d.addr[1]))
        return sources

    exchange()
    assert sa.mobike and sa.local_ip == A
    here = SECOND
    assert sa.update_addresses()
    assert sa.local_ip is None
    assert exchange()[:1] == [None]          # UPDATE_SA_ADDRESSES: the route picks its source
    assert sa.local_ip == SECOND
