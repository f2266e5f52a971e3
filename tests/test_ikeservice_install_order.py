"""A new Child SA's install (installs' fast path: sent in the turn that negotiated it, without
``_changes``) must not reach the worker ahead of an earlier change still queued for ``_changes``.

The interleaving: site 0 has a Child SA whose outbound SA is (SPI X, the site).  The gateway deletes
it; the site answers the DELETE and, in the same flight, creates a new Child SA with the inbound SPI
it just freed (RFC 7296 lets it reuse a deleted SPI), so the gateway's new outbound SA is (X, the
site) again.  Both datagrams are read in one turn: the ChildSaDown queues the old SA's DELETE (a
task for ``_changes``, not started yet, or waiting for a holder that has just released it: then
``locked()`` is False too), then the ChildSaUp's install goes the fast path.  Before the fix its ADD
(X, site) reached the worker ahead of the DELETE (X, site): EEXIST, the new Child SA was removed
again, and then the DELETE removed the old one: the site had no Child SA at the gateway at all.

The gateway is a real IkeService with the worker's request handling and C fast path in process
(test_ikeservice_peers.Gateway); the site is an IKE engine whose inbound SPIs are all X."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable

import pytest
import test_ikeservice_peers
from test_ikeservice_peers import GW, SHARED_SPI, Gateway, InProcessWorker, _now, esp_open, run, site_ip

from tunsec.dataplane import pipe
from tunsec.dataplane.client import WorkerError
from tunsec.dataplane.fastpath import Drop
from tunsec.dataplane.pipe import Direction, Endpoint, Errno
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaUp


async def turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


class PipeOrderWorker(InProcessWorker):
    """InProcessWorker applying each request when it is sent, as the worker reads the pipe: in the
    order of the sends (WorkerClient.request_soon sends at once; InProcessWorker.request_soon builds
    the message only when its task runs, which hides this ordering).  Answers come a turn later, or,
    for request_soon, when ``hold`` (a test's) gives an awaitable for the request, once that is done."""

    async def request(self, build: Callable[[int], pipe.Message]) -> list[pipe.Reply]:
        replies = self._apply(build)
        await asyncio.sleep(0)     # a round trip: other tasks run meanwhile
        bad = [r for r in replies if r.errno is not Errno.OK]
        if bad:
            raise WorkerError(type(self.log[-1]).__name__, bad[0].errno)
        return replies

    def request_soon(self, build: Callable[[int], pipe.Message],
                     then: Callable[[list[pipe.Reply]], None] | None = None,
                     failed: object = None, late: object = None) -> asyncio.Future[list[pipe.Reply]]:
        replies = self._apply(build)   # (answered, never failed: no ``failed``)
        fut: asyncio.Future[list[pipe.Reply]] = asyncio.get_running_loop().create_future()

        def answer() -> None:
            if not fut.done():   # (not cancelled for want of an answer meanwhile)
                fut.set_result(replies)
                if then is not None:
                    then(replies)

        held = self.hold(self.log[-1]) if self.hold is not None else None
        if held is None:
            asyncio.get_running_loop().call_soon(answer)
        else:
            asyncio.ensure_future(held).add_done_callback(lambda _: answer())
        return fut

    def _apply(self, build: Callable[[int], pipe.Message]) -> list[pipe.Reply]:
        built = build(next(self.ids))
        # a Child SA's install comes encoded (pipe.direct): as the worker, read it
        msg = pipe.decode(built) if isinstance(built, bytes) else built
        self.log.append(msg)
        if isinstance(msg, pipe.SendIke):
            self.send_ike(msg)
            return [pipe.Reply(msg.req_id, msg.TYPE, Errno.OK)]
        replies = [pipe.decode(b) for b in self.worker.handle_datagram(pipe.encode(msg))]
        return [r for r in replies if isinstance(r, pipe.Reply)]


def deliver(gw: Gateway, data: bytes) -> None:
    """One datagram from the site to the gateway's port 4500, as the worker passes it up."""
    gw.service.receive_natt(pipe.Ike(data=data, remote=Endpoint(ipaddress.ip_address(site_ip(0)), 4500)))


@pytest.mark.parametrize("queued", ["spawned", "woken"])
def test_a_new_child_sa_install_waits_for_the_earlier_delete_of_the_same_sa(
        queued: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``spawned``: the DELETE's task has not started yet; ``woken``: it waited for ``_changes``,
    whose holder has just released it (the waiter is woken, has not run: ``locked()`` is False)."""
    monkeypatch.setattr(test_ikeservice_peers, "InProcessWorker", PipeOrderWorker)   # Gateway.start's

    async def body() -> None:
        gw = Gateway(1, mobike=False)
        await gw.start()
        # every inbound SPI of the site is X
        gw.sites[0] = IkeEndpoint(list(gw.sites[0]._configs.values()), spi_allocator=lambda: SHARED_SPI)
        gw.connect(0)
        await gw.settle()
        (old,) = gw.service.children.values()
        site = Endpoint(ipaddress.ip_address(site_ip(0)), 4500)
        assert (old.spi_out, old.remote) == (SHARED_SPI, site)
        # the gateway deletes the Child SA: its DELETE request reaches the site, which answers it
        # and at once creates a new Child SA with the SPI it just freed
        assert gw.service.terminate_child("gw", "net").deleted == 1
        await turns()
        [(_, dst, request)] = gw.wire
        gw.wire.clear()
        gw.sites[0].receive(request, (GW, 4500), _now(), (site_ip(0), 4500))
        gw.site_sa(0).initiate("net")
        answer, create = [d.data for d in gw.sites[0].datagrams_to_send(_now())]
        if queued == "spawned":
            # both in one turn, as WorkerClient._readable hands a batch read from the pipe to the service
            deliver(gw, answer)
            deliver(gw, create)
        else:
            await gw.service._changes.acquire()   # a change in progress holds _changes
            deliver(gw, answer)
            await turns()   # the DELETE's task waits for _changes now
            assert old.handle not in gw.service.children
            gw.service._changes.release()   # its holder is done: the waiter is woken, has not run yet
            deliver(gw, create)
        await gw.settle()
        (new,) = gw.service.children.values()
        assert new.handle != old.handle and (new.spi_out, new.remote) == (SHARED_SPI, site)
        # the worker got the old outbound SA's DELETE before the new one's ADD
        order = [type(m).__name__ for m in gw.worker.log
                 if isinstance(m, (pipe.Add, pipe.Delete))
                 and (m.sa.spi if isinstance(m, pipe.Add) else m.spi) == SHARED_SPI
                 and (m.sa.direction if isinstance(m, pipe.Add) else m.direction) is Direction.OUT]
        assert order == ["Add", "Delete", "Add"], order
        assert [(s.spi, s.remote) for s in gw.worker.dp.sas() if s.direction is Direction.OUT] == [(SHARED_SPI, site)]
        esp, dst, drop = gw.send_to_site(0)
        assert drop is Drop.NONE and dst == site
        ups = [e for e in gw.site_events[0] if isinstance(e, ChildSaUp)]
        spi, _ = esp_open(ups[-1].key_in.reveal(), esp)   # sealed with the new Child SA's key
        assert spi == SHARED_SPI

    run(body())
