"""Identifiers of given-up requests are parked before reuse (tunsec.radius.client), against the
responder on loopback of test_radius_client_sockets that answers only when told to: a waiter
takes an identifier an answer freed, not the given-up one, and a late answer to the given-up
request still counts as late; a parked identifier comes back when its rest is over (a short
rest given to the link); with another socket allowed, it is opened rather than a parked
identifier taken; at most PARK_MAX of a socket's identifiers are parked, the oldest freed early."""
from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

from test_radius_client_sockets import Holder, close, holder, start, until
from test_radius_messages import SECRET

from tunsec.ike.secret import Secret
from tunsec.radius.client import IDS, PARK_MAX, RadiusStats, ServerLink
from tunsec.radius.messages import ACCESS_ACCEPT, Answer
from tunsec.radius.settings import RadiusServer, RadiusSettings


def link_to(port: int, sockets: int = 1, park: float | None = None) -> ServerLink[Answer]:
    """Patient: no request is retransmitted or given up unless a test cancels it; a given-up
    identifier rests 60 s (the longest wait) unless ``park`` says otherwise."""
    server = RadiusServer("r1", ipaddress.ip_address("127.0.0.1"), Secret(SECRET), port, sockets=sockets)
    settings = RadiusSettings((server,), retransmit_timeout=60.0, retransmit_tries=0)
    return ServerLink(server, settings, RadiusStats(), park=park)


def ident(held: Holder, n: int) -> int:
    return held.got[n][0][1]


async def answer(held: Holder, ns: range) -> None:
    """Those requests answered, one per loop turn (as Holder.answer_all)."""
    for n in ns:
        held.answer(n)
        await asyncio.sleep(0)


async def give_up(task: asyncio.Task[Answer]) -> None:
    """As the service does when the IKE SA goes away."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def test_a_waiter_takes_an_identifier_an_answer_frees_not_a_given_up_one_whose_late_answer_counts_late() -> None:
    async def main() -> tuple[ServerLink[Answer], list[Any]]:
        held, port = await holder()
        link = link_to(port)
        tasks = start(link, IDS)
        await until(lambda: len(held.got) == IDS)
        (waiter,) = start(link, 1)
        await until(lambda: link.waiting == 1)
        await give_up(tasks[0])
        assert (link.waiting, link.parked, link.outstanding) == (1, 1, IDS - 1)
        held.answer(5)   # an identifier freed by its answer: that one goes to the waiter
        await until(lambda: len(held.got) == IDS + 1)
        assert ident(held, IDS) == ident(held, 5) != ident(held, 0)
        held.answer(0)   # the server answers the given-up request after all, while it is parked
        await until(lambda: link.stats.late + link.stats.bad == 1)
        await held.answer_all()
        ends = await asyncio.gather(*tasks[1:], waiter)
        parked = (link.parked, ident(held, 0) in link.sockets[0].free)
        close(held, link)
        return link, [parked, *ends]

    link, ((parked, free), *ends) = asyncio.run(main())
    assert all(isinstance(e, Answer) and e.code == ACCESS_ACCEPT for e in ends) and len(ends) == IDS
    assert (link.stats.late, link.stats.bad, link.stats.unmatched) == (1, 0, 0)
    assert (parked, free) == (1, False)   # still resting when the test ended (60 s)


def test_a_parked_identifier_is_free_again_after_its_rest_and_goes_to_the_first_waiter() -> None:
    async def main() -> tuple[Holder, ServerLink[Answer], list[Answer]]:
        held, port = await holder()
        link = link_to(port, park=0.05)   # no answer comes: only the rest's end frees an identifier
        tasks = start(link, IDS)
        await until(lambda: len(held.got) == IDS)
        waiters = start(link, 2)
        await until(lambda: link.waiting == 2)
        await give_up(tasks[0])
        await until(lambda: len(held.got) == IDS + 1)
        assert (link.waiting, link.parked) == (1, 0)
        await answer(held, range(1, IDS + 1))   # not the given-up one: its identifier is the waiter's now
        await until(lambda: len(held.got) == IDS + 2)
        held.answer(IDS + 1)
        ends = await asyncio.gather(*tasks[1:], *waiters)
        close(held, link)
        return held, link, ends

    held, link, ends = asyncio.run(main())
    assert len(ends) == IDS + 1 and all(e.code == ACCESS_ACCEPT for e in ends)
    assert ident(held, IDS) == ident(held, 0)   # the given-up identifier, once rested
    assert (link.stats.waits, link.stats.busy, link.stats.requests) == (2, 0, IDS + 2)


def test_with_another_socket_allowed_it_is_opened_rather_than_a_parked_identifier_taken() -> None:
    async def main() -> tuple[Holder, ServerLink[Answer]]:
        held, port = await holder()
        link = link_to(port, sockets=2)
        tasks = start(link, IDS)
        await until(lambda: len(held.got) == IDS)
        await give_up(tasks[0])
        tasks += start(link, 1)
        await until(lambda: len(held.got) == IDS + 1)
        await held.answer_all()
        await asyncio.gather(*tasks[1:])
        close(held, link)
        return held, link

    held, link = asyncio.run(main())
    assert len(link.sockets) == 2 and held.got[IDS][1] != held.got[0][1]   # another source port
    assert (link.stats.waits, link.parked) == (0, 0)   # closed: the rest ends with the link


def test_at_most_half_of_a_sockets_identifiers_are_parked_the_oldest_freed_early() -> None:
    """Every request of a socket given up at once (an attacker dropping the IKE SAs of its EAP
    conversations): half of the identifiers rest, the other half serve new requests at once; an
    identifier freed early still tells a late answer to its old request until it is reused."""
    async def main() -> tuple[Holder, ServerLink[Answer], list[int], list[Answer]]:
        held, port = await holder()
        link = link_to(port)
        tasks = start(link, IDS)
        await until(lambda: len(held.got) == IDS)
        for task in tasks:
            await give_up(task)
        free = list(link.sockets[0].free)
        held.answer(0)   # given up first, freed early, not reused yet: late
        await until(lambda: link.stats.late == 1)
        fresh = start(link, PARK_MAX)
        await until(lambda: len(held.got) == IDS + PARK_MAX)
        await answer(held, range(IDS, IDS + PARK_MAX))
        ends = await asyncio.gather(*fresh)
        close(held, link)
        return held, link, free, ends

    held, link, free, ends = asyncio.run(main())
    given_up = [ident(held, n) for n in range(IDS)]
    assert free == given_up[:IDS - PARK_MAX]   # the oldest, in the order they were given up
    assert sorted(ident(held, IDS + n) for n in range(PARK_MAX)) == sorted(given_up[:PARK_MAX])
    assert len(ends) == PARK_MAX and all(e.code == ACCESS_ACCEPT for e in ends)
    assert (link.stats.waits, link.stats.busy, link.stats.late, link.stats.bad) == (0, 0, 1, 0)
