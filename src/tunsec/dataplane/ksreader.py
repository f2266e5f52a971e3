"""A kill switch device found that a process reads and root does not own (review revlate10 F1).

A TUN with no owner and no group (a `tunsec prepare` of before h/fixks2, `ip tuntap add` without ``user``)
is anyone's to attach to (the kernel's tun_not_capable), and one of another user's is that user's: a local
user may hold it open before tunsec starts.  The standing routes into it (prepare's, or a killed run's) then
hand the tunnels' networks to that process, in clear, before the TUN's routes are up and after a kill -9.
Refusing the device (as for a TUN root owns that a process holds: another tunsec's kill switch) would leave
those routes.  With CAP_NET_ADMIN the device is deleted, which detaches the reader and takes its routes with
it, and killswitch.py makes its own (root's, held); without, its standing routes go where the kernel lets
them, and the ERROR says where the traffic goes and root's fix."""

from __future__ import annotations

import errno
import logging
import socket
from typing import Any

from tunsec.dataplane.exclude import IPNetwork
from tunsec.dataplane.netlink import NetlinkError, reason
from tunsec.dataplane.routes import destination, in_main
from tunsec.dataplane.routetable import in_table
from tunsec.dataplane.tundev import me, owner_name, tun_owner_uid

log = logging.getLogger("tunsec.tun")

# below the TUN's routes (metric 0, IPv6's 1024) in tunsec's table (routetable.py: looked up before the main
# table, so no route of the host's of any metric wins over it, review revks3 F2): the route that holds a
# tunnel's network once the TUN is gone
STANDING_PRIORITY = 0xFFFFFFFE


def tun_owner_of(ipr: Any, idx: int, name: str) -> int | None:
    """The TUN idx's owner uid (-1: none) from netlink's IFLA_TUN_OWNER (the caller's network namespace,
    whatever /sys shows), else /sys's; None if neither says (not a TUN, or an old kernel without /sys)."""
    data = ipr.link("get", index=idx)[0].get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA")
    if data is not None and data.get_attr("IFLA_TUN_TYPE") is not None:
        owner = data.get_attr("IFLA_TUN_OWNER")
        return -1 if owner is None else int(owner)
    return tun_owner_uid(name)


def cut_off(ipr: Any, idx: int, name: str, owner: int) -> None:
    """Device idx (name, owner uid), read by a process, deleted: the reader detached, its routes gone (the
    caller makes the device again).  Without CAP_NET_ADMIN NetlinkError EEXIST saying what stays, after its
    standing routes were removed where the kernel lets this process."""
    try:
        ipr.link("del", index=idx)
    except NetlinkError as exc:
        if exc.code != errno.EPERM:
            raise
        raise NetlinkError(errno.EEXIST, _unrouted(ipr, idx, name, owner)) from exc
    log.warning("kill switch %s was a TUN a process had open and root does not own (owner %s): that process would "
                "read the tunnels' traffic its standing routes carry; deleted (its reader cut off) and made again, "
                "root's", name, owner_name(owner))


def _unrouted(ipr: Any, idx: int, name: str, owner: int) -> str:
    """The standing routes into device idx removed where this process may; what stays, said."""
    stay: list[str] = []
    gone: list[str] = []
    for net, table in _into(ipr, idx):
        try:
            ipr.route("del", dst=str(net), oif=idx, priority=STANDING_PRIORITY, table=table)
            gone.append(str(net))
        except NetlinkError as exc:
            stay.append(str(net) if exc.code == errno.EPERM else f"{net} ({reason(exc)})")
    what = f"{name} is a TUN a process has open and root does not own (owner {owner_name(owner)}), and {me()} " \
           f"may not delete it (no CAP_NET_ADMIN)"
    if gone:
        log.warning("standing routes %s into %s removed: they sent the tunnels' traffic to whoever reads it",
                    ", ".join(gone), name)
    if stay:
        return f"{what}: its standing routes {', '.join(stay)} send the tunnels' traffic, in clear, to whoever " \
               f"reads it (before the TUN's routes are up, and if tunsec is killed). As root: ip link del {name}"
    return f"{what}: not ours, left as it is (as root: ip link del {name})"


def _into(ipr: Any, idx: int) -> list[tuple[IPNetwork, int]]:
    """tunsec's table's routes through device idx with STANDING_PRIORITY, and the main table's (a tunsec's of
    before h/fixks5), of any proto (a prepare's of before h/fixks2 or one added by hand: each hands its network
    to the reader): network and table of each."""
    out: list[tuple[IPNetwork, int]] = []
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            routes = list(ipr.route("dump", family=family, oif=idx))
        except NetlinkError:   # a kernel without IPv6
            continue
        out += [(destination(r), int(r.get_attr("RTA_TABLE") or r["table"])) for r in routes
                if r.get_attr("RTA_OIF") == idx and r.get_attr("RTA_PRIORITY") == STANDING_PRIORITY
                and (in_table(r) or in_main(r))]
    return out
