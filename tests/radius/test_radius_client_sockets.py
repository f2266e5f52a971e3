"""A server's ``sockets`` (strongSwan's servers.NAME.sockets) and the queue for its identifiers,
against a RADIUS responder on loopback that answers only when told to (so that requests stay
outstanding as long as a test needs): more than 256 requests outstanding with two sockets, each
its own source port and identifiers, the second opened only when the first is full; with one
socket the 257th waits and takes the first identifier freed; the waiters' bound; a cancelled
waiter gives back nothing it did not hold, and one handed an identifier as it is cancelled
passes it on."""
from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable
from typing import Any

import pytest
from test_radius_messages import SECRET, STATION, reply

from tunsec.ike.secret import Secret
from tunsec.radius.client import IDS, MAX_WAITERS, Busy, RadiusStats, ServerLink
from tunsec.radius.messages import ACCESS_ACCEPT, Answer, access_request
from tunsec.radius.settings import RadiusServer, RadiusSettings

SO_RCVBUFFORCE = 33   # linux/socket.h (we are root: beyond rmem_max)


class Holder(asyncio.DatagramProtocol):
    """Keeps every request (and where it came from); answers one when told, or each as it
    comes with ``auto``."""

    def __init__(self) -> None:
        self.got: list[tuple[bytes, tuple[str, int]]] = []
        self.answered: set[int] = set()
        self.auto = False
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.got.append((data, addr))
        if self.auto:
            self.answer(len(self.got) - 1)

    def answer(self, n: int) -> None:
        data, addr = self.got[n]
        assert self.transport is not None and n not in self.answered
        self.answered.add(n)
        self.transport.sendto(reply(ACCESS_ACCEPT, data, []), addr)

    async def answer_all(self) -> None:
        """The requests held and not answered yet, those that come meanwhile, then every one to
        come: one per loop turn (asyncio reads a socket's datagrams one a turn: hundreds sent at
        once would overflow the client's socket buffer, and nothing is retransmitted here)."""
        n = 0
        while n < len(self.got):
            if n not in self.answered:
                self.answer(n)
                await asyncio.sleep(0)
            n += 1
        self.auto = True


async def holder() -> tuple[Holder, int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # the waiters handed identifiers at once send at once: a default buffer holds fewer
    # datagrams than that, and a request dropped here is never answered (none is retransmitted)
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
    sock.bind(("127.0.0.1", 0))
    proto = Holder()
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: proto, sock=sock)
    return proto, transport.get_extra_info("sockname")[1]


def link_to(port: int, sockets: int) -> ServerLink[Answer]:
    """Patient: no request is retransmitted or given up while a test runs."""
    server = RadiusServer("r1", ipaddress.ip_address("127.0.0.1"), Secret(SECRET), port, sockets=sockets)
    return ServerLink(server, RadiusSettings((server,), retransmit_timeout=60.0, retransmit_tries=0), RadiusStats())


def build(ident: int) -> Any:
    return access_request(Secret(SECRET), ident, b"alice", b"\x02\x01\x00\x0a\x01alice", None, STATION)


async def until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.005)


def start(link: ServerLink[Answer], n: int) -> list[asyncio.Task[Answer]]:
    return [asyncio.ensure_future(link.exchange(build)) for _ in range(n)]


def close(held: Holder, link: ServerLink[Answer]) -> None:
    link.close()
    assert held.transport is not None
    held.transport.close()


def test_with_two_sockets_more_than_256_requests_are_outstanding_at_once_and_all_answered() -> None:
    async def main() -> tuple[Holder, ServerLink[Answer], list[Answer]]:
        held, port = await holder()
        link = link_to(port, sockets=2)
        tasks = start(link, IDS)
        await until(lambda: len(held.got) == IDS)
        assert len(link.sockets) == 1   # the second only once the first is full
        tasks += start(link, 44)
        await until(lambda: len(held.got) == IDS + 44)
        assert (link.outstanding, link.waiting, len(link.sockets)) == (IDS + 44, 0, 2)
        await held.answer_all()
        answers = await asyncio.gather(*tasks)
        close(held, link)
        return held, link, answers

    held, link, answers = asyncio.run(main())
    assert all(a.code == ACCESS_ACCEPT for a in answers) and len(answers) == IDS + 44
    by_port: dict[int, set[int]] = {}
    for data, addr in held.got:
        by_port.setdefault(addr[1], set()).add(data[1])
    # two source ports, each with its own identifiers: the first all 256 of them
    assert sorted(len(idents) for idents in by_port.values()) == [44, IDS]
    assert (link.stats.requests, link.stats.waits, link.stats.busy) == (IDS + 44, 0, 0)
    assert link.outstanding == 0


def test_with_one_socket_the_257th_request_waits_and_takes_the_first_identifier_freed() -> None:
    async def main() -> tuple[Holder, ServerLink[Answer], list[Answer]]:
        held, port = await holder()
        link = link_to(port, sockets=1)
        tasks = start(link, IDS + 1)
        await until(lambda: len(held.got) == IDS and link.waiting == 1)
        assert link.outstanding == IDS and link.stats.waits == 1
        held.answer(0)
        await until(lambda: len(held.got) == IDS + 1)
        (first, first_from), (last, last_from) = held.got[0], held.got[-1]
        assert last[1] == first[1] and last_from == first_from   # that identifier, on that socket
        assert link.waiting == 0
        await held.answer_all()
        answers = await asyncio.gather(*tasks)
        close(held, link)
        return held, link, answers

    _, link, answers = asyncio.run(main())
    assert all(a.code == ACCESS_ACCEPT for a in answers) and len(answers) == IDS + 1
    assert (link.stats.requests, link.stats.waits, link.stats.busy) == (IDS + 1, 1, 0) and len(link.sockets) == 1


def test_beyond_the_waiters_bound_a_request_is_busy_at_once_and_the_waiters_still_get_their_turn() -> None:
    async def main() -> tuple[ServerLink[Answer], list[Answer]]:
        held, port = await holder()
        link = link_to(port, sockets=1)
        tasks = start(link, IDS + MAX_WAITERS)
        await until(lambda: len(held.got) == IDS and link.waiting == MAX_WAITERS)
        with pytest.raises(Busy, match=r"all 256 identifiers of RADIUS server r1 .* are in use and 1024 requests wait"):
            await link.exchange(build)
        assert link.waiting == MAX_WAITERS and link.outstanding == IDS   # the refused one left nothing
        await held.answer_all()
        answers = await asyncio.gather(*tasks)
        close(held, link)
        return link, answers

    link, answers = asyncio.run(main())
    assert len(answers) == IDS + MAX_WAITERS and all(a.code == ACCESS_ACCEPT for a in answers)
    assert (link.stats.waits, link.stats.busy, link.stats.requests) == (MAX_WAITERS, 1, IDS + MAX_WAITERS)


def test_a_cancelled_waiter_gives_back_nothing_it_did_not_hold_and_passes_on_one_handed_to_it() -> None:
    async def main() -> tuple[Holder, ServerLink[Answer], list[Any]]:
        held, port = await holder()
        link = link_to(port, sockets=1)
        holding = start(link, IDS)
        await until(lambda: len(held.got) == IDS)
        w1, w2, w3 = (start(link, 1)[0] for _ in range(3))
        await until(lambda: link.waiting == 3)
        w1.cancel()   # waiting, nothing handed to it: it frees nothing
        assert isinstance((await asyncio.gather(w1, return_exceptions=True))[0], asyncio.CancelledError)
        assert (link.waiting, link.outstanding, len(link.sockets[0].free)) == (2, IDS, 0)
        # an identifier freed: handed to w2, which is cancelled before it could use it
        held.answer(0)
        while link.waiting == 2:
            await asyncio.sleep(0)
        assert link.outstanding == IDS - 1   # w2 has not taken it up yet: the race this test is about
        w2.cancel()
        await asyncio.gather(w2, return_exceptions=True)
        await until(lambda: len(held.got) == IDS + 1)   # w3 got it
        assert held.got[-1][0][1] == held.got[0][0][1] and link.waiting == 0
        await held.answer_all()
        ends = await asyncio.gather(*holding, w3, return_exceptions=True)
        free = sorted(link.sockets[0].free)
        close(held, link)
        return held, link, [w2.cancelled(), free, *ends]

    held, link, (w2_cancelled, free, *ends) = asyncio.run(main())
    assert w2_cancelled and all(isinstance(e, Answer) for e in ends) and len(ends) == IDS + 1
    # every identifier free again, each once: none was lost or given back twice
    assert free == list(range(IDS)) and link.outstanding == 0 and len(held.got) == IDS + 1
    assert (link.stats.waits, link.stats.busy, link.stats.requests) == (3, 0, IDS + 1)
