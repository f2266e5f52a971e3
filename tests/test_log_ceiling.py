"""Review revpool2's remark (total volume): the per-peer limits of the refusal lines (refusal_log.py)
and the churn lines (churn_log.py) pass up to 1024 peers' bursts each: 25,600 refusal lines a
minute over the five kinds and 10,240 churn lines, where one limiter for the service passed 25.  A
ceiling for all peers together (loglimit.PeerLogLimiter ``ceiling``), checked after each peer's own
limit, bounds that; the lines it holds are counted in the next line it admits."""

from __future__ import annotations

import dataclasses
import logging
from types import SimpleNamespace
from typing import Any

import pytest

from tunsec.ike.events import IkeSaUp, NegotiationFailed
from tunsec.ike.identity import Identity
from tunsec.loglimit import PeerLogLimiter
from tunsec.services.ike import churn_log, refusal_log

PEERS = 50   # authenticated peers, each within its own share


def test_a_ceiling_holds_what_the_peers_limits_pass_together_and_counts_it_once() -> None:
    """The ceiling sees only what a peer's limit passed: a peer's held lines and the ceiling's are
    each reported once, with the next line both pass."""
    now = [0.0]
    lim = PeerLogLimiter(burst=2, period=60.0, clock=lambda: now[0], ceiling=3)
    assert [lim.admit("a") for _ in range(3)] == [0, 0, None]   # a's third: its own limit
    assert lim.admit("b") == 0                                  # the ceiling's third
    assert lim.admit("c") is None                               # within c's share, over the ceiling
    now[0] = 60.0
    assert lim.admit("a") == 2   # a's one held by its limit, c's one by the ceiling
    assert lim.admit("c") == 0   # (c's limit passed its line: it was counted by the ceiling)


def test_each_kind_of_refusal_and_the_churn_have_a_ceiling() -> None:
    logs = refusal_log.RefusalLogs()
    for f in dataclasses.fields(logs):
        assert getattr(logs, f.name).ceiling == refusal_log.CEILING, f.name
    assert churn_log.limiter().ceiling == churn_log.CEILING
    assert refusal_log.BURST < refusal_log.CEILING and churn_log.BURST < churn_log.CEILING


def _service(peers: int, now: list[float]) -> Any:
    """What refusal_log reads of an IkeService: its established IKE SAs (certificates of distinct
    identities, from distinct addresses), the DoS limits' IPv6 prefix, its limiters on the clock ``now``."""
    ups = {b"p%07d" % i: SimpleNamespace(ev=IkeSaUp(
        "rw", b"p%07d" % i, b"r" * 8, Identity.parse("gw.example"), Identity.parse(f"peer{i}.example"),
        (f"198.51.{i // 250}.{i % 250 + 1}", 4500), 4500, "x", proof="pubkey")) for i in range(peers)}
    service = SimpleNamespace(ike_up=ups, endpoint=SimpleNamespace(limits=SimpleNamespace(ipv6_source_prefix=64)),
                              refusals=refusal_log.RefusalLogs(), _admit_log=lambda sa: 0)
    for f in dataclasses.fields(service.refusals):
        getattr(service.refusals, f.name).clock = lambda: now[0]   # periods as the test says, however slow the machine
    return service


def _sa(service: Any, spi: bytes) -> Any:
    ev = service.ike_up[spi].ev
    config = SimpleNamespace(remote=SimpleNamespace(method="pubkey"), lease_proof="pubkey")
    return SimpleNamespace(local_spi=spi, peer_id=ev.remote_id, config=config, name="rw", remote_addr=ev.remote_addr)


def test_many_authenticated_peers_within_their_shares_pass_no_more_than_the_ceiling() -> None:
    """PEERS peers (each its own certificate, from its own address) are each refused BURST times,
    within their own shares: CEILING lines pass, and once a period has gone the next line says how
    many the ceiling held.  Before the ceiling, PEERS x BURST passed (250)."""
    now = [0.0]
    service = _service(PEERS, now)

    def refused(spi: bytes) -> int | None:
        ev = NegotiationFailed("rw", "TS_UNACCEPTABLE", "refused", peer_request=True)
        return refusal_log.failure(service, _sa(service, spi), ev)

    passed = [held for spi in service.ike_up for _ in range(refusal_log.BURST) if (held := refused(spi)) is not None]
    assert len(passed) == refusal_log.CEILING, f"{len(passed)} refusal lines of {PEERS} peers in one period"
    now[0] = refusal_log.PERIOD
    assert refused(b"p%07d" % 0) == PEERS * refusal_log.BURST - refusal_log.CEILING


def test_the_ceiling_holds_the_churn_lines_at_debug_and_the_next_says_how_many(
        caplog: pytest.LogCaptureFixture) -> None:
    """churn_log.line for many peers, each within its BURST: CEILING at INFO, the rest at DEBUG, and
    after the period the next INFO line counts them."""
    now = [0.0]
    service: Any = SimpleNamespace(churn_log=churn_log.limiter())
    service.churn_log.clock = lambda: now[0]
    log = logging.getLogger("tunsec.ike")
    peers = churn_log.CEILING // churn_log.BURST + 10
    with caplog.at_level(logging.DEBUG, logger="tunsec"):
        for p in range(peers):
            for _ in range(churn_log.BURST):
                churn_log.line(service, ("peer", p), log, "rw: CHILD_SA net up (%d)", p)
        now[0] = churn_log.PERIOD
        churn_log.line(service, ("peer", 0), log, "rw: CHILD_SA net up (%d)", 0)
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG and "CHILD_SA" in r.getMessage()]
    held = peers * churn_log.BURST - churn_log.CEILING
    assert len(info) == churn_log.CEILING + 1 and len(debug) == held
    assert info[-1].endswith(f"({held} more like it suppressed)")
