"""A client that cannot use the virtual IP its gateway assigned ends the connection (review T2's leftover;
services/ike/vip_refused.py).

Two real IkeServices wired in memory (test_ikeservice_rekey.Pair: the worker logic and C fast path in
process): A a road-warrior client with ``vips = 0.0.0.0``, B a gateway leasing from a one-address pool.
A's TUN is test_vips.RecordingTun, where another interface has the pool's address (as the host's
router or a LAN neighbour would: Tun.address_conflict refuses it).  Before, A kept the IKE SA and its
Child SA up (its updown script heard up-client) with selectors matching nothing of the LAN, and said
so only in a log line.  Now the IKE SA is deleted at once (the gateway's too: the DELETE reaches it),
one line says the address, the gateway and why, an updown script that heard up-client hears
down-client, and the connection is tried again keyingtries times in all, the waits doubling (the
service's waits are shortened here, the ones it asked for recorded; no timing is asserted).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import ipaddress
import logging
import time
import types
from pathlib import Path

import pytest
from test_ikeservice_rekey import B_NET, Pair, RecordingWorker, Wire
from test_metrics_events import scrape
from test_vips import RecordingTun

from tunsec.conf.connections import Action, Child, Connection
from tunsec.dataplane import pipe
from tunsec.eventcounts import EventCounts
from tunsec.ike.config import child_config
from tunsec.ike.constants import ExchangeType
from tunsec.ike.events import IkeSaUp
from tunsec.ike.identity import Identity
from tunsec.ike.message import decode_header
from tunsec.ike.sa import State
from tunsec.policy.ids import IdSpace
from tunsec.policy.pools import PoolConfig
from tunsec.services.ike import IkeService, traps, tries, vip_refused
from tunsec.services.ike.vips import VirtualIps

LEASE = "10.3.0.1"
POOL = PoolConfig.parse_addrs("rw", f"{LEASE}-{LEASE}")


@dataclasses.dataclass
class VipPair(Pair):
    """A (client, vips = 0.0.0.0, keyingtries) and B (gateway, pool rw); A's child runs ``updown``."""

    keyingtries: int = 3
    updown: tuple[str, ...] = ()
    pool: PoolConfig = POOL

    async def start(self, close_action: Action = "none") -> None:
        for side in ("a", "b"):
            worker = self.workers[side] = RecordingWorker(side, self)
            svc = self.svc[side] = IkeService([self.connection(side, close_action)],
                                              lambda w=worker: w,  # type: ignore[misc]
                                              {4: self.ip(side)}, IdSpace(), pools=[self.pool] if side == "b" else ())
            await svc.start()
            svc.sockets.by_key = {(4, self.ip(side), 500): Wire(side, self)}  # type: ignore[dict-item]

    def connection(self, side: str, close_action: Action) -> Connection:
        base = self.ike_config(side)
        if side == "a":
            cfg = dataclasses.replace(base, vips=(ipaddress.ip_address("0.0.0.0"),),
                                      children=(child_config("net", "dynamic", B_NET, "aes128gcm16"),))
            return Connection(cfg.name, cfg, (Child("net", cfg.children[0], updown=self.updown),),
                              keyingtries=self.keyingtries)
        cfg = dataclasses.replace(base, pools=(POOL.name,),
                                  children=(child_config("net", B_NET, "dynamic", "aes128gcm16"),))
        return Connection(cfg.name, cfg)

    def ike_sa_inits(self) -> int:
        """IKE_SA_INIT requests A sent: its tries."""
        heads = [decode_header(data) for kind, side, data in self.timeline if kind == "send" and side == "a"]
        return sum(1 for h in heads if h.exchange == ExchangeType.IKE_SA_INIT and not h.is_response)

    def up(self, side: str) -> int:
        return sum(1 for sa in self.svc[side].endpoint.sas if sa.state is State.ESTABLISHED)


def script(tmp_path: Path) -> tuple[tuple[str, ...], Path]:
    """An updown script appending its verb (PLUTO_VERB) to a file, one line each."""
    out = tmp_path / "verbs"
    path = tmp_path / "updown.sh"
    path.write_text(f'#!/bin/sh\necho "$PLUTO_VERB" >> {out}\n')
    path.chmod(0o755)
    return (str(path),), out


def verbs(out: Path) -> list[str]:
    return out.read_text().split() if out.exists() else []


async def run(pair: VipPair, elsewhere: dict[str, str], rounds: int = 40) -> list[float]:
    """A initiates with RecordingTun(elsewhere) as its TUN; every try it schedules runs (waits of 10 ms):
    the waits the service asked for."""
    asked: list[float] = []
    real = vip_refused.delay

    def short(failed: int) -> float:
        asked.append(real(failed))
        return 0.01

    await pair.start()
    pair.svc["a"].tun = RecordingTun(elsewhere=elsewhere)
    pair.svc["a"].initiate("tun", "net")
    old, vip_refused.delay = vip_refused.delay, short   # type: ignore[assignment]
    try:
        for _ in range(rounds):   # each round: what is on the wire and every task, then 20 ms
            await pair.settle()
            await asyncio.sleep(0.02)
    finally:
        vip_refused.delay = old   # type: ignore[assignment]
    return asked


def test_a_virtual_ip_the_host_reaches_outside_the_tun_ends_the_connection_and_is_retried_keyingtries_times(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    argv, out = script(tmp_path)
    pair = VipPair(keyingtries=3, updown=argv)
    with caplog.at_level(logging.INFO, logger="tunsec"):
        asked = asyncio.run(run(pair, {LEASE: "eth0"}))
    assert pair.ike_sa_inits() == 3           # keyingtries = 3: three IKE SAs, then no more
    assert asked == [2.0, 4.0, 8.0]           # waits doubling (the last holds traps back: no try follows)
    assert pair.up("a") == 0 and pair.up("b") == 0   # none left up, at the gateway neither
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and "virtual IP" in r.getMessage()]
    assert len(lines) == 3, lines             # once per IKE SA: the address, the gateway, why, what next
    assert all(f"virtual IP {LEASE} from gateway {pair.ip('b')}: interface eth0 of this host has it" in line
               for line in lines), lines
    assert "initiating it again in" in lines[0] and "(try 2 of 3)" in lines[0] and "(try 3 of 3)" in lines[1]
    assert "not initiating it again (keyingtries = 3)" in lines[2]
    assert ("add", LEASE) not in pair.svc["a"].tun.calls
    said = verbs(out)   # up-client only with its down-client (the install may finish before the refusal)
    assert said.count("up-client") == said.count("down-client"), said
    # the last wait holds the connection back (its trap's traffic starts nothing meanwhile)
    refusals = pair.svc["a"].vip_refusals
    assert refusals.failed == {"tun": 3} and "tun" in refusals.held
    assert pair.svc["a"].events.vip_refused == {"tun": 3}   # tunsec status's vip_refused, the metric's count
    refusals.held["tun"] = time.monotonic() + 60
    assert traps._under_way(pair.svc["a"], "tun", "net")
    refusals.held["tun"] = time.monotonic() - 1
    assert not traps._under_way(pair.svc["a"], "tun", "net")


def test_a_usable_virtual_ip_keeps_the_connection_up(tmp_path: Path) -> None:
    """The same pair with nothing else holding the address: one IKE SA, up, the address on the TUN."""
    argv, out = script(tmp_path)
    pair = VipPair(keyingtries=3, updown=argv)
    asked = asyncio.run(run(pair, {}, rounds=5))
    assert pair.ike_sa_inits() == 1 and asked == []
    assert pair.up("a") == 1 and pair.up("b") == 1
    assert ("add", LEASE) in pair.svc["a"].tun.calls
    assert verbs(out) == ["up-client"]
    assert not vip_refused.holding(pair.svc["a"], "tun")


def test_no_usable_virtual_ip_at_all_ends_the_connection_too(caplog: pytest.LogCaptureFixture) -> None:
    """The gateway assigns an address the engine refuses (reserved: 240.0.0.1): no virtual IP at all.
    Before, the IKE SA stayed up without a Child SA (refused FAILED_CP_REQUIRED)."""
    pair = VipPair(keyingtries=1)
    with caplog.at_level(logging.INFO, logger="tunsec"):
        pair.pool = PoolConfig.parse_addrs("rw", "240.0.0.1-240.0.0.1")
        asked = asyncio.run(run(pair, {}, rounds=5))
    assert pair.ike_sa_inits() == 1 and asked == [2.0]   # keyingtries = 1: not tried again
    assert pair.up("a") == 0 and pair.up("b") == 0
    assert any("no usable virtual IP from gateway" in r.getMessage() and "not initiating it again" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]


class _GoneQuiet:
    """An IKE SA whose gateway never answers its DELETE: DELETING, with no IkeSaDown, for minutes."""

    def __init__(self) -> None:
        self.state = State.ESTABLISHED
        self.remote_addr = ("203.0.113.9", 500)
        self.children: list[object] = []

    def delete(self, now: float, reason: object) -> None:
        self.state = State.DELETING


def test_a_fresh_address_of_the_other_family_does_not_reset_the_count() -> None:
    """Review W F1: a dual-stack client whose gateway assigns a refused IPv4 address (the earlier refused
    IKE SA still holds it, DELETING: its DELETE is never answered) and a fresh IPv6 one each try.  Adding
    the IPv6 address cleared the count right after the refusal set it: keyingtries never ran out, the
    wait never doubled, traps initiated at once, and DELETING IKE SAs piled up with IPv6 addresses on the
    TUN.  Real VirtualIps and vip_refused; the service is a stand-in (its retries are scheduled, not run)."""
    router = ipaddress.ip_address("192.168.1.1")
    tun = RecordingTun(elsewhere={str(router): "eth0"})
    conn = types.SimpleNamespace(keyingtries=3, children=[types.SimpleNamespace(name="net", start_action="start")],
                                 ike=types.SimpleNamespace(children=()))
    sas: dict[int, _GoneQuiet] = {}
    svc = types.SimpleNamespace(closing=False, vip_refusals=vip_refused.Refusals(), connections={"vpn": conn},
                                events=EventCounts(),
                                _pump=lambda: None, _ike_sa=sas.get, tries=tries.Tries())

    async def main() -> tuple[list[tuple[int | None, bool]], int]:
        tasks: list[asyncio.Future[None]] = []
        vips = VirtualIps(lambda: tun, lambda name: conn, lambda co: tasks.append(asyncio.ensure_future(co)),
                          functools.partial(vip_refused.refused, svc),   # type: ignore[arg-type]
                          functools.partial(vip_refused.applied, svc))   # type: ignore[arg-type]
        seen = []
        for handle in range(1, 5):
            sas[handle] = _GoneQuiet()
            vips.up(handle, IkeSaUp("vpn", b"i" * 8, b"r" * 8, Identity.parse("c1.example"),
                                    Identity.parse("gw.example"), ("203.0.113.9", 500), 500, "aes128gcm16",
                                    own_vips=(router, ipaddress.ip_address(f"2001:db8::{handle}"))))
            await asyncio.gather(*tasks)
            tasks.clear()
            seen.append((svc.vip_refusals.failed.get("vpn"), vip_refused.holding(svc, "vpn")))
        scheduled = len(asyncio.get_running_loop()._scheduled)   # type: ignore[attr-defined]
        for timer in list(asyncio.get_running_loop()._scheduled):   # type: ignore[attr-defined]
            timer.cancel()
        return seen, scheduled

    seen, scheduled = asyncio.run(main())
    assert seen[:3] == [(1, True), (2, True), (3, True)], seen   # counted on, held (traps start nothing)
    assert seen[3] == (4, True), seen
    assert scheduled == 2, scheduled     # keyingtries = 3: two more tries, then none
    added = [c for c in tun.calls if c[0] == "add"]
    assert added == [], added   # a refused IKE SA's other address stays off the TUN (it piled up there)


def test_terminate_cancels_a_refusals_scheduled_try_and_hold() -> None:
    """With keyingtries = 0 a refused virtual IP's connection came back every wait (at most 5 min) after
    `tunsec terminate` until a reload: terminate now cancels the scheduled tries and the hold, as it
    ends the IKE SAs."""
    pair = VipPair(keyingtries=0)

    async def main() -> tuple[int, int, bool, dict[str, int]]:
        await pair.start()
        pair.svc["a"].tun = RecordingTun(elsewhere={LEASE: "eth0"})
        # the second refusal's try waits 0.5 s: terminate comes while it is scheduled (on a slow machine
        # it may come after: then the test proves less, it does not fail)
        old, vip_refused.delay = vip_refused.delay, lambda failed: 0.01 if failed < 2 else 0.5  # type: ignore[assignment]
        try:
            pair.svc["a"].initiate("tun", "net")
            while pair.svc["a"].vip_refusals.failed.get("tun", 0) < 2:   # refused, tried again, refused
                await pair.settle()
                await asyncio.sleep(0.01)
            pair.svc["a"].terminate("tun")
            await pair.settle()
            before = pair.ike_sa_inits()
            for _ in range(40):   # past the wait: a try still scheduled would have run
                await pair.settle()
                await asyncio.sleep(0.02)
        finally:
            vip_refused.delay = old   # type: ignore[assignment]
        return before, pair.ike_sa_inits(), vip_refused.holding(pair.svc["a"], "tun"), \
            pair.svc["a"].vip_refusals.failed

    before, after, holding, failed = asyncio.run(main())
    assert before == 2 and after == before, (before, after)
    assert not holding and failed == {}
    assert pair.up("a") == 0


def test_refusals_are_counted_in_status_and_the_scrape() -> None:
    """Each IKE SA deleted for its virtual IP counts: ``vip_refused`` in ``tunsec status`` (JSON and
    text) and tunsec_ike_sa_vip_refused_total, by connection (a real scrape over loopback)."""
    pair = VipPair(keyingtries=2)

    async def body() -> tuple[dict[str, int], str, dict[str, float]]:
        await run(pair, {LEASE: "eth0"}, rounds=8)
        a = pair.svc["a"]
        return a.status(pipe.Reply(1, pipe.MsgType.DUMP, pipe.Errno.OK))["vip_refused"], \
            await pair.status_text("a"), await scrape(a)

    doc, text, scraped = asyncio.run(body())
    assert pair.ike_sa_inits() == 2 and doc == {"tun": 2}
    assert "IKE SAs deleted, their virtual IP refused: tun 2" in text.splitlines()
    assert scraped['tunsec_ike_sa_vip_refused_total{connection="tun"}'] == 2


@pytest.mark.parametrize("change", ["removed", "changed"])
def test_a_reload_removing_or_changing_the_connection_drops_its_refusals(change: str) -> None:
    """A reload that removed or replaced a refused connection kept its count, its hold and its scheduled
    try: the replaced connection began with the old one's count (fewer keyingtries, longer waits), its
    trap children's traffic initiated nothing for up to 5 min, and the try initiated it (a replaced
    connection whose start child was up again got a second Child SA).  They go with the connection."""
    pair = VipPair(keyingtries=0)

    async def main() -> tuple[bool, dict[str, int], bool, bool]:
        await pair.start()
        a = pair.svc["a"]
        a.tun = RecordingTun(elsewhere={LEASE: "eth0"})
        old, vip_refused.delay = vip_refused.delay, lambda failed: 600.0  # type: ignore[assignment]
        try:
            a.initiate("tun", "net")
            for _ in range(200):   # until refused (its try scheduled 600 s later: not run here)
                if a.vip_refusals.failed.get("tun"):
                    break
                await pair.settle()
                await asyncio.sleep(0.01)
        finally:
            vip_refused.delay = old   # type: ignore[assignment]
        scheduled = list(a.tries._of.get("tun", {}))   # the refusal's next try (tries.py)
        timers = [t.timer for t in scheduled if t.timer is not None]
        before = vip_refused.holding(a, "tun") and bool(timers) and a.vip_refusals.failed == {"tun": 1}
        kept = [] if change == "removed" else [dataclasses.replace(pair.connection("a", "none"), keyingtries=5)]
        await a.reload(types.SimpleNamespace(connections=kept, radius=None))  # type: ignore[arg-type]
        return (before, a.vip_refusals.failed, vip_refused.holding(a, "tun"),
                all(t.cancelled() for t in timers) and all(t.stopped for t in scheduled) and not a.tries)

    before, failed, holding, cancelled = asyncio.run(main())
    assert before
    assert failed == {} and not holding and cancelled
