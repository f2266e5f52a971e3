"""MOBIKE's return routability check (RFC 4555 §3.5) at the gateway (IkeService, in-process worker
and C fast path): an authenticated site never gets its Child SAs MIGRATEd to an address that did not
answer, and an update injected from a made-up source does not end its IKE SA.

The gateway's retransmissions are driven by calling its endpoint's timer with a later clock (the
service's timer would take seconds of real time)."""

from __future__ import annotations

import asyncio
import ipaddress
import time

from test_ikeservice_peers import Gateway, connected, run, site_ip

from tunsec.dataplane import pipe
from tunsec.dataplane.fastpath import Drop
from tunsec.dataplane.pipe import Endpoint

Wire = list[tuple[tuple[str, int], tuple[str, int], bytes]]
X = ("203.0.113.77", 4500)   # a third party, or a made-up source


async def _drain(gw: Gateway) -> None:
    for _ in range(5):
        for _ in range(10):
            await asyncio.sleep(0)
        if gw.service._tasks:
            await asyncio.wait(gw.service._tasks)


def _site_out(gw: Gateway) -> list[bytes]:
    """What site 0 sends now (its events are not looked at)."""
    out = [d.data for d in gw.sites[0].datagrams_to_send(time.monotonic())]
    while gw.sites[0].next_event() is not None:
        pass
    return out


async def _to_gateway(gw: Gateway, src: tuple[str, int], datagrams: list[bytes]) -> Wire:
    """Deliver datagrams from ``src``; what the gateway sent in return."""
    for data in datagrams:
        gw.service.receive_natt(pipe.Ike(data=data, remote=Endpoint(ipaddress.ip_address(src[0]), src[1])))
    await _drain(gw)
    out, gw.wire[:] = list(gw.wire), []
    return out


def _to_site(gw: Gateway, wire: Wire) -> None:
    for src, dst, data in wire:
        if dst[0] == site_ip(0):
            gw.sites[0].receive(data, src, time.monotonic(), dst)


async def _later(gw: Gateway, seconds: float) -> Wire:
    """The gateway's timers as if ``seconds`` had passed (since the start, not the last call: the
    engine's deadlines count from the clock it was last given); what it sent."""
    gw.service.endpoint.handle_timer(time.monotonic() + seconds)
    gw.service._pump()
    await _drain(gw)
    out, gw.wire[:] = list(gw.wire), []
    return out


def _migrates(gw: Gateway) -> list[str]:
    return [str(m.new_remote.addr) for m in gw.worker.log if isinstance(m, pipe.Migrate)]


def _status_count(gw: Gateway) -> int:
    doc = gw.service.status(pipe.Reply(1, pipe.MsgType.DUMP, pipe.Errno.OK))
    return int(doc["ike_refused"]["mobike_checks_failed"])


def test_a_site_cannot_pass_the_check_for_a_third_party() -> None:
    """The site at A: an update from a spoofed X, one from A, the check's retransmission read at A
    with its answer held back, an update from X again, the answer. No Child SA moves to X."""
    async def body() -> None:
        gw = await connected(1)
        a = (site_ip(0), 4500)
        site = gw.site_sa(0)
        site.update_addresses(a)
        first = _site_out(gw)
        lost = await _to_gateway(gw, X, first)
        assert {dst for _, dst, _ in lost} == {X}
        _to_site(gw, await _to_gateway(gw, a, first))   # the copy from A fetches the answer
        site.update_addresses(a)
        _to_site(gw, await _to_gateway(gw, a, _site_out(gw)))
        _to_site(gw, await _later(gw, 10))   # the check goes on to where the site is now
        held = _site_out(gw)
        assert held
        site.update_addresses(a)
        await _to_gateway(gw, X, _site_out(gw))
        fresh = await _to_gateway(gw, a, held)
        _, dst, drop = gw.send_to_site(0)
        assert drop is Drop.NONE and dst == Endpoint(ipaddress.ip_address(site_ip(0)), 4500)
        assert X[0] not in _migrates(gw)
        assert [dst for _, dst, _ in fresh if dst[0] != site_ip(0)] == [X]   # a fresh check, to X

    run(body())


def test_an_injected_copy_of_an_update_leaves_the_site_up() -> None:
    """A copy of the site's update from X arrives ahead of the genuine one: the check to X is never
    answered, the IKE SA goes back to A (counted in status), nothing is MIGRATEd, nothing goes down."""
    async def body() -> None:
        gw = await connected(1)
        a = (site_ip(0), 4500)
        gw.site_sa(0).update_addresses(a)
        update = _site_out(gw)
        await _to_gateway(gw, X, update)
        _to_site(gw, await _to_gateway(gw, a, update))
        sa = gw.service.endpoint.sas[0]
        assert (sa.remote_addr, sa.esp_remote) == (X, a)
        tries = sa.config.retransmit.tries
        for n in range(1, tries + 2):   # each retransmission to X, then the give-up: the request to A
            _to_site(gw, await _later(gw, 100.0 * n))   # (the longest backoff is 4 s x 1.8^4)
            _to_site(gw, await _to_gateway(gw, a, _site_out(gw)))
        assert (sa.remote_addr, sa.esp_remote, sa.state.value) == (a, a, "established")
        assert _status_count(gw) == 1
        assert not _migrates(gw) and len(gw.children_of(0)) == 1
        _, dst, drop = gw.send_to_site(0)
        assert drop is Drop.NONE and dst == Endpoint(ipaddress.ip_address(site_ip(0)), 4500)

    run(body())
