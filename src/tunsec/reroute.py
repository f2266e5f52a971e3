"""The TUN's routes after a reload: those no tunnel needs any more go, the new tunnels' remote
networks get one.  A route the kernel refuses fails closed: the tunnel's SAs and policies are in
the worker, so without its route its traffic would take the host's other routes (a default route)
in clear; a prohibit route holds it instead until a later reload adds the TUN route (Tun.block).
Its line starts with "failed: ", which makes the reload's answer an error (`tunsec reload` exits 1).

Without CAP_NET_ADMIN (given up at start when tunsec made the TUN, see privilege.py) tunsec can
change neither: it says what to run.  pyroute2's synchronous API runs an event loop of its own,
so every netlink request here is made in a thread (asyncio.to_thread).
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Callable

from tunsec import privilege
from tunsec.dataplane.killswitch import KillSwitch
from tunsec.dataplane.tun import TUN_ROUTE_ARGS, IPNetwork, Tun, local_address_in

log = logging.getLogger("tunsec")

Route = tuple[IPNetwork, tuple[IPNetwork, ...]]   # a remote network, the tunnel's local networks
FAILED = "failed: "


async def reload_routes(tun: Tun, wanted: list[Route], add: Callable[[IPNetwork, tuple[IPNetwork, ...]], None]
                        ) -> list[str]:
    """wanted (every tunnel's route of the new configuration) on the TUN, add(net, local_nets) adding
    one; what changed and what failed, one line each."""
    lines = await _unroute(tun, wanted)
    missing = [r for r in wanted if not any(x[0] == r[0] for x in tun.routes)]
    if not missing:
        return lines
    before = len(tun.unapplied)
    added: list[str] = []
    failed: list[str] = []
    first: dict[IPNetwork, tuple[IPNetwork, ...]] = {}
    for net, local_nets in missing:   # a network two tunnels route: tried once, as the first names it
        first.setdefault(net, local_nets)
    for net, local_nets in first.items():
        noted = len(tun.unapplied)
        try:
            await asyncio.to_thread(add, net, local_nets)
        except OSError as err:   # this route only: the other tunnels' routes and the answer still come
            failed.append(await _fail_closed(tun, net, err.strerror or str(err)))
            continue
        if len(tun.unapplied) == noted:   # and its block is off (Tun.add_route, in the same change)
            added.append(str(net))
            failed += _still_unrouted(tun, net)
    if added:
        lines.append(f"routes added: {', '.join(added)}")
    return [*lines, *_unapplied(tun, before, "added"), *failed]


async def _fail_closed(tun: Tun, net: IPNetwork, why: str) -> str:
    """The failed line of a refused route, net's traffic blocked meanwhile (or why it could not be)."""
    try:
        await asyncio.to_thread(tun.block, net, why)
        line = f"{FAILED}{why}; its traffic is refused (prohibit route) until a reload adds the route"
    except OSError as err:
        line = f"{FAILED}{why}; blocking its traffic failed too: {err.strerror or err}"
    log.error("reload: %s", line)
    return line


def _still_unrouted(tun: Tun, net: IPNetwork) -> list[str]:
    """The failed line of a network just routed that is unrouted all the same: its prohibit route would
    not go (Tun.add_route), or a virtual IP's block came right after the add and holds (the next
    reload adds the route again).  Logged where it happened."""
    u = tun.unrouted.get(net)
    if u is None:
        return []
    return [f"{FAILED}{u.why}" if str(net) in u.why else f"{FAILED}{net}: {u.why}"]


async def _unblock(tun: Tun, net: IPNetwork) -> list[str]:
    """net's prohibit route off (its TUN route is in, or no tunnel needs it); a failed line if it stays."""
    if net not in tun.unrouted:
        return []
    try:
        await asyncio.to_thread(tun.unblock, net)
    except OSError as err:
        log.error("reload: %s", err.strerror or err)
        return [f"{FAILED}{err.strerror or err}"]
    return []


async def _unroute(tun: Tun, wanted: list[Route]) -> list[str]:
    """Our routes no tunnel of the new configuration needs off the TUN, as strongSwan unroutes a
    connection (that traffic takes the host's other routes again); a network two tunnels route stays
    while one of them is left.  One with another source address now is changed in place (_resource).
    The prohibit routes of networks no tunnel needs go too."""
    want: dict[IPNetwork, tuple[IPNetwork, ...]] = {}
    for net, local_nets in wanted:
        want.setdefault(net, local_nets)

    def stale() -> tuple[list[IPNetwork], dict[IPNetwork, str]]:   # netlink: the sources are looked up
        out, moved = [], {}
        for net, src in tun.routes:
            if net not in want:
                out.append(net)
                continue
            same = tuple(n for n in want[net] if n.version == net.version)
            now = local_address_in(same) if same else None
            if now is not None and now != src:   # None: no source of ours (or a virtual IP's, set at run time)
                moved[net] = now
        return out, moved

    try:
        gone, moved = await asyncio.to_thread(stale)
    except OSError as err:   # they stay; the new tunnels' routes are still added
        log.error("reload: routes not checked: %s", err.strerror or err)
        return [f"routes not checked: {err.strerror or err}", *await _unblock_unwanted(tun, want)]
    lines = await _resource(tun, moved)
    if not gone:
        return [*lines, *await _unblock_unwanted(tun, want)]
    failed: list[str] = []
    before = len(tun.unapplied)
    for net in gone:
        try:
            await asyncio.to_thread(tun.remove_route, net)
        except OSError as err:   # it stays ours (removed at exit); the other routes still go
            failed.append(f"{FAILED}{err.strerror or err}")
            log.error("reload: %s", failed[-1])
    removed = [str(n) for n in gone if not any(r[0] == n for r in tun.routes)]
    lines += [f"routes removed: {', '.join(removed)}"] if removed else []
    return [*lines, *_unapplied(tun, before, "removed"), *failed, *await _unblock_unwanted(tun, want)]


async def _unblock_unwanted(tun: Tun, want: dict[IPNetwork, tuple[IPNetwork, ...]]) -> list[str]:
    """The prohibit routes of networks no tunnel wants, lifted once their routes are off the TUN: a
    virtual IP's block of one (its route could not be re-pointed) made while the reload ran would
    otherwise outlive the tunnel.  Unlisted, a route gets no new block."""
    failed: list[str] = []
    for net in [n for n in tun.unrouted if n not in want]:
        failed += await _unblock(tun, net)
    return failed


async def _resource(tun: Tun, moved: dict[IPNetwork, str]) -> list[str]:
    """Routes given their new source address by one replace each.  One the kernel will not change so
    (an IPv6 source still tentative, an address gone since it was looked up; without CAP_NET_ADMIN:
    EPERM) is left as it is: it still routes into the TUN with its old source, and the next reload
    tries again (Tun.routes keeps the old source); one the kernel deleted with its old source address
    is blocked (_kept_or_blocked).  Removed and added again, the network would follow
    the host's other routes (a default route, in clear) in between, or for good where root ran the
    ``ip route del`` we would have asked for."""
    done: list[str] = []
    failed: list[str] = []
    before = len(tun.unapplied)
    for net, src in moved.items():
        try:
            await asyncio.to_thread(tun.set_route_source, net, src)
        except OSError as err:
            if err.errno == errno.EPERM:   # root can: the route stays, only its source is wrong
                tun.unapplied.append((f"route {net} keeps its source",
                                      f"ip route replace {net} dev {tun.name} src {src}{TUN_ROUTE_ARGS}"))
                continue
            failed.append(await _kept_or_blocked(tun, net, err.strerror or str(err)))
            continue
        if (net, src) in tun.routes:   # not if a virtual IP's block took it off meanwhile
            done.append(f"{net} (src {src})")
    lines = [f"routes given another source address: {', '.join(done)}"] if done else []
    return [*lines, *_unapplied(tun, before, "given their new source"), *failed]


async def _kept_or_blocked(tun: Tun, net: IPNetwork, why: str) -> str:
    """The failed line of a refused in-place source change.  The route normally keeps its old source;
    but the kernel deletes an IPv4 route whose source address was deleted, and then nothing routes net
    into the TUN (before, the route was added again or blocked): a prohibit route holds it until a
    later reload adds the route."""
    try:
        gone = await asyncio.to_thread(tun.block_if_gone, net, why)
    except OSError as err:
        line = f"{FAILED}{why}; the route is gone and blocking its traffic failed too: {err.strerror or err}"
    else:
        line = (f"{FAILED}{why}; the route was gone: its traffic is refused (prohibit route) until a reload "
                "adds the route" if gone else
                f"{FAILED}{why}; the route keeps its old source, into the TUN (the next reload tries again)")
    log.error("reload: %s", line)
    return line


def _unapplied(tun: Tun, before: int, done: str) -> list[str]:
    """The line for the route changes this user may not make (the commands for root), taken off
    tun.unapplied from before on; none if there are none."""
    unapplied = [fix for _, fix in tun.unapplied[before:]]
    del tun.unapplied[before:]
    if not unapplied:
        return []
    line = (f"routes not {done} ({privilege._me()} may not change routes, no CAP_NET_ADMIN): as root run "
            f"{'; '.join(unapplied)} (or restart tunsec)")
    log.warning("reload: %s", line)
    return [line]


async def standing(ks: KillSwitch, step: Callable[[list[IPNetwork]], list[str]], nets: list[IPNetwork],
                   done: str) -> list[str]:
    """The kill switch's standing routes following nets (step: ks.ensure before the TUN's routes change,
    ks.keep_only after): its failed lines, and the line of those this user may not change (the commands
    for root; without them a kill -9 sends those networks' traffic in clear, or drops a dropped one's)."""
    lines = [f"{FAILED}{line}" for line in await asyncio.to_thread(step, nets)]
    if cmds := ks.take_unapplied():
        line = (f"standing routes not {done} ({privilege._me()} may not change routes, no CAP_NET_ADMIN): as root "
                f"run {cmds} (or restart tunsec)")
        log.warning("reload: %s", line)
        lines.append(line)
    return lines
