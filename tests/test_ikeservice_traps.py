"""A trap policy's repeat ACQUIREs while its child is being created start nothing more.

The worker raises an ACQUIRE per trap policy and rate-limit period for as long as packets hit it; as
strongSwan's trap_manager (its pending acquires), one negotiation answers them all: while the
initiation waits for an inbound SPI, while its IKE_AUTH or CREATE_CHILD_SA is out, and in the
2-10 s before a Child SA the peer refused for now (TEMPORARY_FAILURE) is asked for again.  Once it
is up or gone, the next ACQUIRE initiates again; once it failed, the next ACQUIRE after its hold-down
(trap_hold.py, tests/test_ikeservice_trap_hold.py).

Two real IkeServices with the in-process worker and C fast path, wired in memory
(test_ikeservice_rekey.Pair); the refusing peer's engine is given an SPI allocator that refuses.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable

import pytest
from test_ikeservice_expiry import ExpiryPair, expire_unanswered
from test_ikeservice_peers import ipv4_udp
from test_ikeservice_rekey import Pair

from tunsec.conf.connections import Action, Child, Connection
from tunsec.dataplane import pipe
from tunsec.ike.config import child_config
from tunsec.ike.constants import ExchangeType
from tunsec.ike.events import DownReason
from tunsec.ike.exchanges.create_child_sa import MAX_RETRIES
from tunsec.ike.message import decode_header
from tunsec.ike.sa import IkeSa
from tunsec.ike.state import SpiUnavailable
from tunsec.services.ike import ikesas
from tunsec.services.ike.trap_hold import HOLD_FIRST


class TrapPair(ExpiryPair):
    """ExpiryPair's trap configuration and ACQUIRE hand-off, without IKE lifetimes (no rekey interferes)."""

    ike_config = Pair.ike_config


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


async def trapped() -> tuple[TrapPair, int]:
    """A's child "net" is start_action = trap: the pair and its trap policy's id."""
    pair = TrapPair()
    await pair.start()
    await pair.configure("a", "trap")
    (pid,) = pair.svc["a"].trap_policies
    return pair, pid


async def up_without_child(pair: TrapPair) -> IkeSa:
    """A's IKE SA established, its trap child deleted again (the IKE SA stays)."""
    pair.svc["a"].initiate("tun", "net")
    await pair.settle()
    assert pair.svc["a"].terminate_child("tun", "net").deleted == 1
    await pair.settle()
    assert not pair.svc["a"].children and not pair.svc["b"].children
    return pair.ike("a")


def nets(pair: TrapPair, side: str) -> list[int]:
    """The unique ids of ``side``'s "net" Child SAs."""
    return [c.unique_id for sa in pair.svc[side].endpoint.sas if not sa.is_closed for c in sa.children
            if c.name == "net"]


def ccsa_requests(pair: TrapPair) -> int:
    """A's CREATE_CHILD_SA requests in the timeline so far."""
    n = 0
    for kind, side, data in pair.timeline:
        if kind == "send" and side == "a" and isinstance(data, bytes):
            hdr = decode_header(data[4:] if data[:4] == bytes(4) else data)
            n += hdr.exchange == ExchangeType.CREATE_CHILD_SA and not hdr.is_response
    return n


def refuse_spis(sa: IkeSa, times: int) -> Callable[[], int]:
    """B's engine finds no inbound SPI for the next ``times`` Child SAs: it answers TEMPORARY_FAILURE."""
    take = sa._st.spi_allocator
    left = [times]

    def allocator() -> int:
        if left[0] > 0:
            left[0] -= 1
            raise SpiUnavailable("test: refused")
        return take()
    sa._st.spi_allocator = allocator
    return allocator


def test_acquires_while_the_initiation_waits_for_an_spi_start_one_ike_sa() -> None:
    async def body() -> None:
        pair, pid = await trapped()
        svc = pair.svc["a"]
        svc.spi_pool.spis.clear()          # the initiation waits for the refill...
        svc.acquire(pid)
        svc.acquire(pid)                   # ... and so does this packet's ACQUIRE
        await pair.settle()
        ours = [sa for sa in svc.endpoint.sas if sa.is_initiator]
        assert len(ours) == 1, ours
        assert len(nets(pair, "a")) == 1 and len(nets(pair, "b")) == 1
        assert svc.events.acquires_ignored[("tun", "net")] == 1
        assert not svc.acquiring

    run(body())


def test_acquires_while_ike_auth_is_out_start_nothing_more() -> None:
    async def body() -> None:
        pair, pid = await trapped()
        svc = pair.svc["a"]
        svc.acquire(pid)
        (sa,) = svc.endpoint.sas
        assert sa.state.value == "connecting"
        for _ in range(3):
            svc.acquire(pid)
        await pair.settle()
        assert [s for s in svc.endpoint.sas if not s.is_closed] == [sa]
        assert len(nets(pair, "a")) == 1 and len(nets(pair, "b")) == 1
        assert ccsa_requests(pair) == 0
        assert svc.events.acquires_ignored[("tun", "net")] == 3

    run(body())


def test_repeat_acquires_of_a_trap_policy_are_counted_in_tunsec_status() -> None:
    """A packet hits A's trap policy: its ACQUIRE starts the IKE SA.  While IKE_AUTH is out the worker
    raises the ACQUIRE again (packets still coming, a second later): ignored, and counted by child
    in ``tunsec status`` (the trap line; none before, and no Child SA ones)."""
    async def body() -> None:
        pair, pid = await trapped()
        worker = pair.workers["a"]
        worker.dp.outbound(ipv4_udp("10.1.0.5", "10.2.0.7"))
        worker.worker.drain_events()       # the ACQUIRE goes up, as through the daemon's event fd
        (acquire,) = [m for kind, side, m in pair.timeline if kind == "event" and isinstance(m, pipe.Acquire)]
        assert acquire.policy_id == pid
        assert [sa.state.value for sa in pair.svc["a"].endpoint.sas] == ["connecting"]   # IKE_AUTH is out
        assert "ACQUIREs ignored" not in await pair.status_text("a")
        for _ in range(2):
            pair.worker_event("a", pipe.encode(acquire))   # raised again: the worker's rate limit let it
        text = await pair.status_text("a")
        assert "ACQUIREs ignored: trap policy, child up or being created: tun/net 2" in text.splitlines()
        await pair.settle()
        assert len(nets(pair, "a")) == 1

    run(body())


def test_acquires_while_create_child_sa_is_out_start_no_second_child_sa() -> None:
    async def body() -> None:
        pair, pid = await trapped()
        await up_without_child(pair)
        svc = pair.svc["a"]
        before = ccsa_requests(pair)
        svc.acquire(pid)                   # CREATE_CHILD_SA on the IKE SA that is up, not answered yet
        svc.acquire(pid)
        await pair.settle()
        assert ccsa_requests(pair) == before + 1
        assert len(nets(pair, "a")) == 1 and len(nets(pair, "b")) == 1
        assert svc.events.acquires_ignored[("tun", "net")] == 1
        # up: further ACQUIREs (packets outside what the peer narrowed it to) are ignored too
        svc.acquire(pid)
        await pair.settle()
        assert ccsa_requests(pair) == before + 1
        # gone: the next packet initiates again
        svc.terminate_child("tun", "net")
        await pair.settle()
        svc.acquire(pid)
        await pair.settle()
        assert ccsa_requests(pair) == before + 2     # (the DELETE is an INFORMATIONAL)
        assert len(nets(pair, "a")) == 1

    run(body())


def test_acquires_in_the_retry_window_after_a_temporary_failure_start_no_second_child_sa() -> None:
    async def body() -> None:
        pair, pid = await trapped()
        sa = await up_without_child(pair)
        refuse_spis(pair.ike("b"), 1)
        svc = pair.svc["a"]
        before = ccsa_requests(pair)
        svc.acquire(pid)
        await pair.settle()                # refused for now: asked again 2-10 s later
        assert ccsa_requests(pair) == before + 1 and not nets(pair, "a")
        svc.acquire(pid)                   # a packet meanwhile
        await pair.settle()
        assert ccsa_requests(pair) == before + 1
        sa.handle_timer(time.monotonic() + 10.0)   # the retry is due
        svc._pump()
        await pair.settle()
        assert ccsa_requests(pair) == before + 2
        assert len(nets(pair, "a")) == 1 and len(nets(pair, "b")) == 1
        assert svc.events.acquires_ignored[("tun", "net")] == 1

    run(body())


async def refused_for_good(pair: TrapPair, sa: IkeSa, pid: int) -> None:
    """An ACQUIRE asks for A's trap child on ``sa`` (up), and B refuses each of its 1 + MAX_RETRIES
    tries for now (TEMPORARY_FAILURE): the child failed for good."""
    refuse_spis(pair.ike("b"), 1 + MAX_RETRIES)
    svc = pair.svc["a"]
    svc.acquire(pid)
    await pair.settle()
    for _ in range(MAX_RETRIES):
        sa.handle_timer(time.monotonic() + 10.0)
        svc._pump()
        await pair.settle()


def test_a_child_sa_refused_for_good_is_initiated_again_by_the_next_acquire() -> None:
    async def body() -> None:
        pair, pid = await trapped()
        sa = await up_without_child(pair)
        svc = pair.svc["a"]
        before = ccsa_requests(pair)
        await refused_for_good(pair, sa, pid)
        assert ccsa_requests(pair) == before + 1 + MAX_RETRIES
        assert sa.get_timer() is None or sa.get_timer() > time.monotonic() + 10.0   # no retry left
        # given up: a packet within the hold-down (trap_hold.py) starts nothing; after it, this packet
        # starts a new request, which B grants
        svc.trap_holds.clock = lambda: time.monotonic() + HOLD_FIRST
        svc.acquire(pid)
        await pair.settle()
        assert ccsa_requests(pair) == before + 2 + MAX_RETRIES
        assert len(nets(pair, "a")) == 1 and len(nets(pair, "b")) == 1
        assert not svc.events.acquires_ignored

    run(body())


def test_a_closed_ike_sa_leaves_no_pending_acquire() -> None:
    """The IKE SA carrying the initiation goes away: the next ACQUIRE starts a new one."""
    async def body() -> None:
        pair, pid = await trapped()
        svc = pair.svc["a"]
        svc.acquire(pid)
        (first,) = svc.endpoint.sas
        pair.wire.clear()                  # its IKE_SA_INIT is lost...
        first.delete(time.monotonic())     # ... and it is given up
        svc._pump()
        svc.trap_holds.clock = lambda: time.monotonic() + HOLD_FIRST   # past its hold-down (trap_hold.py)
        svc.acquire(pid)
        await pair.settle()
        live = [sa for sa in svc.endpoint.sas if not sa.is_closed]
        assert len(live) == 1 and live[0] is not first
        assert len(nets(pair, "a")) == 1
        assert not svc.events.acquires_ignored

    run(body())


class TwoChildPair(TrapPair):
    """Connection "tun" with two trap children on A: "net" and "web" (a part of B's network)."""

    def connection(self, side: str, close_action: Action) -> Connection:
        cfg = self.ike_config(side)
        web = ("10.1.0.0/16", "10.2.5.0/24") if side == "a" else ("10.2.5.0/24", "10.1.0.0/16")
        cfg = dataclasses.replace(cfg, children=(*cfg.children, child_config("web", *web, "aes128gcm16")))
        action = "trap" if side == "a" else "none"
        return Connection(cfg.name, cfg, tuple(Child(c.name, c, start_action=action, close_action=close_action)
                                               for c in cfg.children))


def test_acquires_of_two_children_while_the_ike_sa_is_set_up_share_it() -> None:
    """Traffic for a second trap child while the IKE SA for the first is being set up: the second
    is asked for on it after IKE_AUTH (as strongSwan's checkout_by_config), not by an IKE SA of its
    own, and is not dropped either."""
    async def body() -> None:
        pair = TwoChildPair()
        await pair.start()
        svc = pair.svc["a"]
        pids = {child: pid for pid, (_, child) in svc.trap_policies.items()}
        assert set(pids) == {"net", "web"}
        svc.acquire(pids["net"])
        svc.acquire(pids["web"])
        svc.acquire(pids["web"])
        await pair.settle()
        assert len(svc.endpoint.sas) == 1
        (sa,) = svc.endpoint.sas
        assert sorted(c.name for c in sa.children) == ["net", "web"]
        assert len(pair.svc["b"].children) == 2
        assert dict(svc.events.acquires_ignored) == {("tun", "web"): 1}

    run(body())


async def trap_ike_sa_unanswered(keyingtries: int) -> tuple[TrapPair, int, IkeSa]:
    """A's trap child raised an ACQUIRE and the IKE SA it started got no answer (its retransmissions
    lost, given up): the pair, the trap policy's id and that IKE SA; the keyingtries retry is scheduled."""
    pair = TrapPair()
    await pair.start()
    await pair.configure("a", "trap", keyingtries=keyingtries)
    svc = pair.svc["a"]
    (pid,) = svc.trap_policies
    svc.acquire(pid)
    (first,) = svc.endpoint.sas
    expire_unanswered(pair, "a", first, DownReason.PEER_UNREACHABLE)
    return pair, pid, first


def test_a_keying_retry_joins_the_ike_sa_an_acquire_started_meanwhile(monkeypatch: pytest.MonkeyPatch) -> None:
    """The trap's IKE SA got no answer (keyingtries = 0: try again); a packet's ACQUIRE before the
    retry is due starts a new IKE SA, and the retry finds it being set up: still one IKE SA."""
    monkeypatch.setattr(ikesas, "RETRY_DELAY", 0.0)

    async def body() -> None:
        pair, pid, _ = await trap_ike_sa_unanswered(keyingtries=0)   # the retry is scheduled...
        svc = pair.svc["a"]
        svc.acquire(pid)                                               # ... and a packet comes first
        await pair.settle()
        assert len([sa for sa in svc.endpoint.sas if not sa.is_closed]) == 1
        assert len(nets(pair, "a")) == 1 and len(nets(pair, "b")) == 1

    run(body())


def test_a_keying_retry_of_a_trap_child_brings_its_child_sa_back_without_another_packet(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The trap's IKE SA got no answer (keyingtries = 2): the retry's new IKE SA asks for the trap
    child in its IKE_AUTH, as the lost one did, rather than coming up bare until the next packet."""
    monkeypatch.setattr(ikesas, "RETRY_DELAY", 0.0)

    async def body() -> None:
        pair, _, first = await trap_ike_sa_unanswered(keyingtries=2)
        svc = pair.svc["a"]
        await pair.settle()
        (second,) = [sa for sa in svc.endpoint.sas if not sa.is_closed]
        assert second is not first
        assert len(nets(pair, "a")) == 1 and len(nets(pair, "b")) == 1
        assert ccsa_requests(pair) == 0          # in IKE_AUTH, not added afterwards
        assert not svc.events.acquires_ignored

    run(body())
