"""A Child SA's policies after the worker removed its outbound SA at a hard limit: their ACQUIREs
belong to the IKE service, not to "no IKE configured".

The worker removes an SA itself at its hard EXPIRE; until the IKE service's DELETE exchange (or a
rekey) is through, the Child SA's policies find no SA and raise an ACQUIRE per policy a second for
as long as packets come, longer with a peer that does not answer the DELETE.  As strongSwan ignores
an ACQUIRE for a CHILD_SA being deleted or rekeyed, the service claims them quietly: counted
(tunsec_child_sa_acquires_ignored), logged once per Child SA, no negotiation started.

Two real IkeServices with the in-process worker and C fast path, wired in memory
(test_ikeservice_rekey.Pair); the workers' events go through the daemon's own dispatch
(Daemon._on_event) to the service, as in the daemon.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from types import SimpleNamespace

import pytest
from test_ikeservice_rekey import Pair

from tunsec.daemon import Daemon
from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Direction
from tunsec.metrics import event_families
from tunsec.worker_distrust import UnownedEvents

LIFE_BYTES = 4000   # a few 228-byte packets


@dataclasses.dataclass
class LimitPair(Pair):
    """Pair whose child "net" has a hard byte lifetime; each side's worker events go through the
    daemon's dispatch (the ACQUIREs kept, to be raised again as the worker would a second later)."""

    acquires: list[pipe.Acquire] = dataclasses.field(default_factory=list)
    life_bytes: int = LIFE_BYTES

    def worker_event(self, side: str, data: bytes) -> None:
        super().worker_event(side, data)
        msg = pipe.decode(data)
        if isinstance(msg, pipe.Acquire):
            self.acquires.append(msg)
        if isinstance(msg, pipe.Expire | pipe.Acquire):
            dispatch(self, side, msg)


def dispatch(pair: Pair, side: str, msg: pipe.Message) -> None:
    """The daemon's handling of a worker event, its services being ``side``'s IKE service."""
    Daemon._on_event(SimpleNamespace(services=[pair.svc[side]], unowned=UnownedEvents()), msg)  # type: ignore[arg-type]


def send(pair: Pair, n: int) -> int:
    """n packets from A's inner network to B's; how many arrived (A's ACQUIREs go up)."""
    return pair.traffic("a", n, drain_events=True)


def test_acquires_after_a_hard_byte_limit_are_claimed_counted_and_logged_once(
        caplog: pytest.LogCaptureFixture) -> None:
    """A's outbound SA reaches its hard byte limit; the worker removes it and the service starts
    the DELETE, held on the wire meanwhile.  A's packets now raise ACQUIREs of the Child SA's
    policy: the service claims each (counted), logs one line, starts no negotiation.  Once the
    DELETE is through the policy is gone and nobody owns it; a new Child SA carries traffic."""
    caplog.set_level(logging.DEBUG)

    async def body() -> None:
        pair = LimitPair()
        await pair.start()
        svc = pair.svc["a"]
        svc.initiate("tun", "net")
        await pair.settle()
        state = pair.child("a")
        (pid,) = state.lineage.policy_ids
        out_key = (state.spi_out, Direction.OUT, state.remote)
        assert 0 < send(pair, 40) < 40     # the limit stops them; the EXPIRE went up, the SA removed
        assert out_key not in {(sa.spi, sa.direction, sa.remote) for sa in pair.workers["a"].dp.sas()}
        assert [c.deleting for c in pair.ike("a").children] == [True], "the hard limit started no DELETE"
        assert [a.policy_id for a in pair.acquires] == [pid]   # the first packet after the limit
        assert send(pair, 5) == 0
        for _ in range(4):   # the worker raises it again each second while packets come
            dispatch(pair, "a", pair.acquires[0])
        sas = list(svc.endpoint.sas)

        assert "no IKE configured" not in caplog.text
        assert svc.events.child_acquires_ignored[("tun", "net")] == 5
        assert not svc.events.acquires_ignored
        shown = "ACQUIREs ignored: Child SA past its hard limit, DELETE or rekey under way: tun/net 5"
        assert shown in (await pair.status_text("a")).splitlines()   # `tunsec status`, by child
        noted = [r for r in caplog.records if "waiting for the DELETE/rekey" in r.getMessage()]
        assert len(noted) == 1 and noted[0].levelno == logging.INFO, noted
        assert list(svc.endpoint.sas) == sas and not svc.acquiring   # nothing negotiated for them

        await pair.settle()   # the DELETE exchange: the Child SA and its policy go
        assert not svc.children and not svc.child_policies and not svc.owns_policy(pid)
        dispatch(pair, "a", pair.acquires[0])   # one raised as the DELETE went out: truly nobody's now
        assert f"traffic for policy {pid} has no SA (no IKE configured for it)" in caplog.text
        svc.initiate("tun", "net")
        await pair.settle()
        assert send(pair, 3) == 3   # the new Child SA's policy carries the traffic
        assert svc.events.child_acquires_ignored[("tun", "net")] == 5
        (gone,) = [f for f in event_families(svc.events, 0) if f.name == "tunsec_child_sa_acquires_ignored"]
        assert [(s.labels, s.value) for s in gone.samples if s.name.endswith("_total")] == [
            ({"connection": "tun", "child": "net"}, 5)]

    asyncio.run(body())

