"""A peer moves (NAT rebinding) while a Child SA's install is under way: the MIGRATE must not
reach the worker before the install (it would get ENOENT and the SA be installed at the old
endpoint afterwards, its ESP going to the peer's old mapping until the next rekey).

The gateway is a real IkeService with the worker's request handling and C fast path in process
(test_ikeservice_peers.Gateway); the worker's answers to the new Child SA's install are held back
while the site's NAT mapping changes and the gateway follows it.  What keeps the order:
_move_children takes ``_changes`` (queued behind a Child SA's install not yet sent) and then
waits for ``state.install`` (its answers); without either, one case here fails."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest
from test_ikeservice_peers import InProcessWorker, connected, run

from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Direction, Endpoint


def hold_installs(worker: InProcessWorker, gate: asyncio.Event) -> None:
    """From now on the worker's answers to UPDATEs and ADDs (a Child SA's install) are read once
    ``gate`` opens (it applied them when they came)."""
    worker.hold = lambda msg: gate.wait() if isinstance(msg, (pipe.Update, pipe.Add)) else None


@pytest.mark.parametrize("held", ["answers", "sending"])
def test_a_child_sa_whose_install_is_under_way_follows_its_moved_peer(held: str) -> None:
    """``answers``: the install's requests are sent, the worker's answers not in yet when the peer
    moves; ``sending``: not even sent (another change holds the worker's changes: ``_changes``)."""
    async def body() -> None:
        gw = await connected(1, mobike=False)
        [first] = gw.service.children.values()
        gate = asyncio.Event()
        worker = gw.worker
        if held == "answers":
            hold_installs(worker, gate)
        else:
            await gw.service._changes.acquire()
        # the gateway adds a Child SA (a duplicate of the first: it takes its traffic over); its install waits
        gw.service.initiate("gw", "net")
        await gw.settle(wait_tasks=False)
        new = next(c for c in gw.service.children.values() if c is not first)

        def install_under_way() -> bool:
            """``answers``: the worker has the SAs (it applies requests as they come) but the
            service has not read its answers; ``sending``: not sent at all."""
            in_worker = any(s.spi == new.spi_out for s in worker.dp.sas())
            return new.install is not None and in_worker if held == "answers" else not in_worker
        assert install_under_way()
        # meanwhile the site's NAT mapping changes: its next request comes from elsewhere
        gw.nat[0] = ("198.51.100.201", 40000)
        gw.site_sa(0).send_liveness()
        await gw.settle(wait_tasks=False)
        assert gw.service._ike_peers[first.ike][0] == ("198.51.100.201", 40000)   # the IKE SA followed
        assert install_under_way()   # its child's install not done yet
        if held == "answers":
            gate.set()
        else:
            gw.service._changes.release()
        await gw.settle()
        moved = Endpoint(ipaddress.ip_address("198.51.100.201"), 40000)
        for child in (first, new):
            assert gw.service.children[child.handle].remote == moved
            assert [s.remote for s in worker.dp.sas() if s.spi == child.spi_out and s.direction is Direction.OUT] \
                == [moved], child
        migrates = [m for m in worker.log if isinstance(m, pipe.Migrate)]
        assert {(m.spi, m.direction) for m in migrates} >= {(new.spi_out, Direction.OUT),
                                                             (new.spi_in, Direction.IN)}

    run(body())
