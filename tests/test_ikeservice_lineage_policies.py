"""A lineage's policies are what the worker answered (services/ike/installs.py ``_protect``).

A Child SA lineage (a Child SA, its rekeys and duplicates, and the Child SA of a road warrior back
in a new IKE SA under the same identity: installs._sibling) has one set of PROTECT policies in the
worker, asked for by the install of its first member; a member that joins later adds none, it
finds them in place.  Here the worker refuses the first member's SPDADD (its SPD full, a conflict,
the worker gone) while its answer is on the way, and in that time the client comes back and its
new Child SA joins the lineage.  The first member's install fails and it is removed; the lineage
goes on in the new Child SA, which must not run without a policy in the worker: the traffic to
the client would be dropped (no policy) while everything looks up.  So a set of the lineage's
policy ids of which the worker refused one leaves the lineage's record, and a member joining while
the lineage's SPDADDs are unanswered waits for them and adds them again if so.  When the first
member's UPDATE is refused but its SPDADD went in, the policies are in place and stay for the new
Child SA.  When everything ends, nothing is left in the worker or in the service's books.

The gateway is a real IkeService with the worker's request handling and the C fast path in
process (test_ikeservice_lease_fence.PoolGateway, a pool of ONE address, so the client is leased the
same address again); the clients are IKE engines wired to it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from test_ikeservice_lease_fence import IDS, PoolGateway, assert_sealed_for, child_of
from test_ikeservice_peers import _now, run
from test_ikeservice_reconnect import A, assert_opens_from, back_cfg, established, pool_gateway, vip_policies

from tunsec.dataplane import pipe
from tunsec.dataplane.fastpath import DataplaneError, lib
from tunsec.services.ike.state import ChildState

BACK = 1   # the site the client comes back from (a new address: its first IKE SA stays up)
NO_ANSWER = "no answer"   # (as ``refused``) the worker never answers the first SPDADD


def refuse_first(dp: Any, method: str, calls: int = 1) -> None:
    """The worker's data plane refuses its first ``calls`` calls of ``method`` (``spd_add``: its SPD is full),
    counting those of its twin ``method``_fields too (the worker's raw way for a request laid out as encode
    lays it out)."""
    seen: list[object] = []

    def refusing_as(name: str) -> Callable[[object], None]:
        real = getattr(dp, name)

        def refusing(arg: object) -> None:
            seen.append(arg)
            if len(seen) <= calls:
                raise DataplaneError(method, lib.TS_ENOSPC)
            real(arg)
        return refusing
    for name in (method, f"{method}_fields"):
        setattr(dp, name, refusing_as(name))


def hold_first_spdadd(gate: Awaitable[object]) -> Callable[[pipe.Message], Awaitable[object] | None]:
    """The worker's answer to the first SPDADD (applied, or refused) is read only once ``gate`` is done."""
    held: list[pipe.Message] = []

    def hold(msg: pipe.Message) -> Awaitable[object] | None:
        if isinstance(msg, pipe.SpdAdd) and not held:
            held.append(msg)
            return gate
        return None
    return hold


def spdadd_requests(gw: PoolGateway) -> list[asyncio.Future[list[pipe.Reply]]]:
    """The futures of the SPDADDs the service sends from now on, as it waits for their answers."""
    futures: list[asyncio.Future[list[pipe.Reply]]] = []
    worker = gw.worker
    soon = worker.request_soon

    def request_soon(build: Callable[[int], pipe.Message], then: Callable[[list[pipe.Reply]], None] | None = None,
                     failed: object = None,
                     late: Callable[[list[pipe.Reply]], None] | None = None) -> asyncio.Future[list[pipe.Reply]]:
        fut = soon(build, then, failed, late)
        if isinstance(worker.log[-1], pipe.SpdAdd):
            futures.append(fut)
        return fut
    worker.request_soon = request_soon   # type: ignore[method-assign]
    return futures


async def joined_while_unanswered(refused: str, calls: int, path: str) -> tuple[PoolGateway, ChildState, ChildState]:
    """The client's first Child SA is installed (the worker refuses the first ``calls`` calls of
    ``refused``), the answer to its SPDADD is held; meanwhile the client comes back from another
    address and its new Child SA joins the lineage; then the answer is read (``no answer``: the
    worker applied the SPDADD, its answer never comes and the request is given up, as after
    REQUEST_TIMEOUT: cancelled).  ``path``: the first install's requests are sent at once (``fast``: nothing
    else changes the worker) or from the changes queue (``queued``: another change held it; so is
    the second's)."""
    gw = await pool_gateway(2)
    svc = gw.service
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    if refused != NO_ANSWER:
        refuse_first(gw.worker.dp, refused, calls)
    gw.worker.hold = hold_first_spdadd(gate)
    spdadds = spdadd_requests(gw)
    if path == "queued":
        await svc._changes.acquire()
    gw.connect(A)
    await gw.settle(wait_tasks=False)
    first = child_of(gw, IDS[A])
    assert first is not None
    gw.sites[BACK] = back_cfg(BACK)
    gw.site_events[BACK] = []
    gw.connect(BACK)
    await gw.settle(wait_tasks=False)
    if path == "queued":
        svc._changes.release()
        await gw.settle(wait_tasks=False)
    # the first Child SA's install is not answered (its SPDADD's answer is held), the second joined its lineage
    assert first.install is not None and not gate.done()
    back = child_of(gw, IDS[A])
    assert back is not None and back.ike != first.ike and back.lineage is first.lineage
    if refused == NO_ANSWER:
        spdadds[0].cancel()   # what the give-up does (GiveUp, or client.answered on the queued path)
    else:
        gate.set_result(None)
    await gw.settle()
    return gw, first, back


async def everything_ends(gw: PoolGateway) -> None:
    """Both IKE SAs of the client end: nothing is left in the worker, nor booked."""
    svc = gw.service
    for site in (BACK, A):
        established(gw.sites[site]).delete(_now())
        await gw.settle()
    assert svc.children == {} and svc.child_policies == {}
    assert gw.worker.dp.policies() == []
    assert {s.spi for s in gw.worker.dp.sas()} <= set(svc.spi_pool.spis)
    assert svc.ids.policy_ids.used == set() and svc.ids.reqids.used == set()


def failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "installing CHILD_SA" in r.getMessage()]


@pytest.mark.parametrize("path", ["fast", "queued"])
@pytest.mark.parametrize(("refused", "error"), [("spd_add", "SpdAdd: ENOSPC"), ("update", "Update: ENOSPC"),
                                               (NO_ANSWER, "SpdAdd (no answer within")])
def test_a_member_that_joins_while_the_lineages_spdadd_is_unanswered_is_protected(
        refused: str, error: str, path: str, caplog: pytest.LogCaptureFixture) -> None:
    """``spd_add``: the new Child SA adds the policy the worker refused; ``update``: the first
    Child SA's SPDADD went in, its policy stays for the new one; ``no answer``: the policy the
    worker may have applied is deleted (it went in: in no lineage's record, it would be left
    behind) and the new Child SA adds its own."""
    async def body() -> None:
        with caplog.at_level(logging.ERROR, logger="tunsec.ike"):
            gw, first, back = await joined_while_unanswered(refused, 1, path)
        svc = gw.service
        (failed,) = failures(caplog)
        assert f"{first.spi_in:08x}_i" in failed and error in failed
        # the first Child SA's install failed: it is gone, the lineage goes on in the one that came back
        assert list(svc.children) == [back.handle]
        # the lineage's record is what the worker holds, and the traffic is protected, for the client where it is now
        assert sorted(back.lineage.policy_ids) == sorted(p.id for p in gw.worker.dp.policies())
        assert sorted(svc.child_policies) == sorted(back.lineage.policy_ids)
        assert vip_policies(gw) == [(back.reqid, back.spi_out)]
        assert_sealed_for(gw, BACK, back)
        assert_opens_from(gw, BACK, back, 1)
        await everything_ends(gw)

    run(body())


def test_a_member_whose_own_spdadd_is_refused_again_is_removed_too(caplog: pytest.LogCaptureFixture) -> None:
    """The worker refuses the new Child SA's SPDADD too (its SPD still full): its install fails
    as well, the lineage ends, and nothing of it is left in the worker or booked."""
    async def body() -> None:
        with caplog.at_level(logging.ERROR, logger="tunsec.ike"):
            gw, first, back = await joined_while_unanswered("spd_add", 2, "fast")
        svc = gw.service
        assert [f"{c.spi_in:08x}_i" in m and "SpdAdd: ENOSPC" in m
                for c, m in zip((first, back), failures(caplog), strict=True)] == [True, True]
        assert svc.children == {} and svc.child_policies == {} and gw.worker.dp.policies() == []
        assert svc.ids.policy_ids.used == set() and svc.ids.reqids.used == set()
        await everything_ends(gw)

    run(body())
