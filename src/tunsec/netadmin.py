"""CAP_NET_ADMIN kept at the privilege drop for the blocks alone (or a full tunnel's routes: its exclude
routes and standing prohibit routes, daemon._full_routing), given up for good once none is held.

The control process keeps CAP_NET_ADMIN after its drop (privilege.give_up_control) for the routes it put on
a TUN that outlives it (removed at exit), for the virtual IPs a gateway assigns at run time, or for the
blocks (prohibit routes, Tun.block) it holds then: blockwatch puts back one that someone else removed, the
exit removes them.  That last reason lasts only as long as a block does.  Once reloads have lifted every
block (and blockwatch has none left it would put back) and neither other reason has come up meanwhile (a
route added on a kept TUN while the capability was held, a connection with virtual IPs), the capability
goes from the effective and permitted sets, for good.  From then on the process is what a start without
blocks is: a reload's new route is a command for root, and a refused one gets no block (the kernel
refuses the prohibit route too; nothing asks for the capability back).

Capabilities are per thread.  The event loop's thread drops it first, so every thread started from then
on has none; the thread pools started before (the event loop's default executor, set by start() at the
drop, when the process had one thread, and the IKE resolver's) are replaced and their threads end once
idle.  The drop then waits (at most WAIT seconds) until no thread
holds it, and logs the threads still holding it if any remains.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from tunsec import privilege
from tunsec.dataplane.blockwatch import Keeper

log = logging.getLogger("tunsec.privilege")

NET_ADMIN = privilege.mask(privilege.CAP_NET_ADMIN)
WAIT = 10.0   # seconds for the old pools' threads to end (a running netlink request finishes first)


@dataclass
class BlocksHold:
    """CAP_NET_ADMIN held for keeper.tun's blocks alone; held False once given up."""

    keeper: Keeper
    others: Callable[[], bool]   # something else needs it now (a connection with virtual IPs)
    pools: list[Callable[[], None]] = field(default_factory=list)   # replace a thread pool started before
    held: bool = True
    executor: concurrent.futures.ThreadPoolExecutor | None = None   # the loop's default, ours to end

    @classmethod
    def start(cls, keeper: Keeper, others: Callable[[], bool], pools: list[Callable[[], None]]) -> BlocksHold:
        """In the running loop, right after the drop: the loop's default executor is one this object can end
        later (neither asyncio nor uvloop hands out the one they make)."""
        executor = _executor()
        asyncio.get_running_loop().set_default_executor(executor)
        return cls(keeper, others, pools, executor=executor)

    def unneeded(self) -> bool:
        """No block held nor lost, no route of ours on a TUN that outlives us, nothing else."""
        if self.others():
            return False
        tun = self.keeper.tun
        with tun._lock:   # a check's thread may be changing what is blocked
            return not (self.keeper.holding() or (tun.routes and not tun.created))

    async def release_if_unneeded(self) -> bool:
        """Give CAP_NET_ADMIN up if it is held for blocks and none is left; True if it went now.  Called at
        the end of each reload, which alone lifts blocks (virtual IPs rule the drop out), reloads kept out."""
        if not self.held or not self.unneeded():
            return False
        self.held = False
        privilege.release(NET_ADMIN)   # this thread's: every thread started from now on inherits it
        loop = asyncio.get_running_loop()
        old, new = self.executor, _executor()
        loop.set_default_executor(new)
        self.executor = new
        if old is not None:
            old.shutdown(wait=False)   # idle threads end now, a busy one after its call
        for renew in self.pools:
            renew()
        left = await _threads_ended(loop.time() + WAIT)
        if left:
            log.error("control process gave up CAP_NET_ADMIN but threads %s still hold it (they did not end)",
                      ", ".join(map(str, left)))
        else:
            log.info("control process gave up CAP_NET_ADMIN: it holds no prohibit route any more, nor an exclude "
                     "route or full tunnel (a reload's new route is now a command for root, as after a start "
                     "without blocks)")
        return True


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(thread_name_prefix="asyncio")


async def _threads_ended(deadline: float) -> list[int]:
    """The threads still holding CAP_NET_ADMIN at deadline (polled: a thread's end sends no event)."""
    loop = asyncio.get_running_loop()
    while (left := privilege.threads_holding(NET_ADMIN)) and loop.time() < deadline:
        await asyncio.sleep(0.02)
    return left
