"""Review revauth (of h/fixauthchild), finding R1: the responder's dataplane worker dies while the IKE_AUTH
Child SA's install is in flight.

Every Child SA the engine holds at a worker restart is rekeyed into the new worker
(services/ike/restart.py), but this one's install fails with the pipe first (WorkerClient._closed fails
every pending request with WorkerError EIO at once; the new worker is up only a process start later), so
installs._child_up hands it to install_failed.delete_in_engine, which since h/fixauthchild refuses it in
the IKE_AUTH answer (NO_PROPOSAL_CHOSEN; before, the answer carried it and a DELETE followed).  A client
given NO_PROPOSAL_CHOSEN in IKE_AUTH keeps a childless IKE SA and asks for nothing again (strongSwan and
tunsec clients alike): a worker crash during a connect burst leaves each client whose install was in
flight connected without a tunnel, while the clients up a moment earlier keep theirs.  Had the new worker
come up before the failure was read, the same Child SA would have been rekeyed and kept.

Two real IkeServices with in-process workers (test_ikeservice_restart_spis.RestartablePair); the old
worker's death is played as WorkerClient plays it (``gone``, pending requests failed with EIO)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from test_ikeservice_peers import run
from test_ikeservice_restart_spis import RestartablePair

from tunsec.dataplane import pipe
from tunsec.dataplane.client import WorkerError
from tunsec.dataplane.pipe import Errno
from tunsec.ike.events import NegotiationFailed
from tunsec.ike.sa import IkeSa

INSTALL = (pipe.Update, pipe.Add, pipe.SpdAdd)
Reply = asyncio.Future[list[pipe.Reply]]


async def _turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


@pytest.mark.parametrize("answer_first", [True, False], ids=["answer first", "rekey overtakes the answer"])
def test_an_ike_auth_child_sa_whose_install_the_worker_s_death_cut_is_rekeyed_not_refused(answer_first: bool) -> None:
    async def body() -> None:
        pair = RestartablePair()
        await pair.start()
        b = pair.workers["b"]
        never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        b.hold = lambda msg: never if isinstance(msg, INSTALL) else None   # the old worker never answers them
        cut: list[Reply] = []
        real_send = b.send

        def send(build: Callable[[int], pipe.Message],
                 then: Callable[[list[pipe.Reply]], None] | None = None) -> tuple[pipe.Message, Reply]:
            msg, fut = real_send(build, then)
            if isinstance(msg, INSTALL):
                cut.append(fut)
            return msg, fut
        b.send = send  # type: ignore[method-assign]
        pair.svc["a"].initiate("tun", "net")
        while not cut:   # up to B's IKE_AUTH: its answer parked by the barrier, its install in flight
            assert pair.wire
            pair.deliver(*pair.wire.pop(0))
            await _turns(5)
        assert [side for side, _data, _port in pair.wire if side == "b"] == []   # B's answer has not left
        # the worker dies: its pipe closes (WorkerClient.gone) and every pending request fails at once
        # (WorkerClient._closed); the daemon starts a new worker, which takes a process start
        b.gone = True  # type: ignore[attr-defined]
        for fut in cut:
            if not fut.done():
                fut.set_exception(WorkerError("worker", Errno.EIO))
        await _turns(20)   # meanwhile the control process reads the install's failure
        # B's answer left when that failure was read, before the new worker (and B's rekey into it) existed;
        # or it went by the dead worker (port 4500) and A's retransmission brings it after B's rekey
        in_flight = await pair.restart("b")
        pair.wire[:0] = in_flight if answer_first else []
        pair.wire.extend([] if answer_first else in_flight)
        a_events: list[object] = []
        b_events: list[object] = []
        for side, events in (("a", a_events), ("b", b_events)):
            def recorded(sa: IkeSa, ev: Any, handle: Any = pair.svc[side]._handle,
                         events: list[object] = events) -> None:
                events.append(ev)
                handle(sa, ev)
            pair.svc[side]._handle = recorded  # type: ignore[method-assign]
        await pair.settle()
        refused = [e.reason for e in a_events if isinstance(e, NegotiationFailed)]
        assert refused == [], f"A's Child SA refused in IKE_AUTH ({refused}): A keeps a childless IKE SA"
        assert [c.name for c in pair.ike("a").children] == ["net"]
        if not answer_first:
            # A, its IKE_AUTH still unanswered, asks B to try its rekey again (TEMPORARY_FAILURE), not to give
            # it up (INVALID_SYNTAX): B keeps the Child SA and its rekey is retried (recreate/backoff timers)
            failed = [e.reason for e in b_events if isinstance(e, NegotiationFailed)]
            assert failed == [], failed
            assert [c.name for c in pair.ike("b").children] == ["net"]
            return
        # as every Child SA the restart found: up at both ends, in B's new worker, traffic both ways
        assert pair.traffic("a", 3) == 3 and pair.traffic("b", 3) == 3
        pair.assert_installed("b")
    run(body())
