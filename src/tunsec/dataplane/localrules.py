"""The configured local networks a TUN route covers stay on the host's own routes (review revks4 F2), but only
where the main table has a route for them other than its default route (review revlate14 F2).

A hub and spoke's spoke: local_ts 10.1.0.0/16 (its site), remote_ts 10.0.0.0/8 (the rest, by the hub).  The
site's LAN 10.1.0.0/24 is connected, the rest of 10.1.0.0/16 is behind internal routers or unused.  A throw
route of 10.1.0.0/16 in tunsec's table (h/fixks7) sent all of it to the main table, whose only route for
10.1.77.5 is the default one: out by the uplink, in clear.  Instead, one rule per such network, at
LOCAL_PRIORITY (114: before the mark's rule, 115, and tunsec's table's, 116), as wg-quick's:
``ip rule add priority 114 to 10.1.0.0/16 lookup main suppress_prefixlength 15``.  The main table serves
what it has a route at least as specific as the network for (the LAN, an internal router's route); a lookup that
finds only a wider one (its default route, or a DHCP server's 0.0.0.0/1 and 128.0.0.0/1, an RA's ::/1: review
revlate16 F1) goes on to the next rules: tunsec's table, the TUN.  So the LAN stays local, and the rest of
the site goes into the tunnel, as before h/fixks7, also when an internal router's route goes.

The rules are tunsec's (FRA_PROTOCOL RTPROT_TUNSEC) and shared by every instance in the network namespace, as
the rules of 115 and 116 are: a rule carries no mark to tell whose it is.  So one is removed (a reload that
no longer wants it, the clean stop, a start's look for a killed run's leftovers, `tunsec prepare --undo`)
only where no route of tunsec's table covers its network any more (another instance's TUN route: it may
have the same local_ts).  Such a rule left behind without a TUN route is harmless: it only lets the main
table's own routes of that network be used, as they would be without it.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Iterable
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any

from tunsec.dataplane.markrule import MAIN, MARK_PRIORITY
from tunsec.dataplane.netlink import NetlinkError
from tunsec.dataplane.prohibitroute import RTPROT_TUNSEC
from tunsec.dataplane.routetable import FR_ACT_TO_TBL, TABLE, in_table

log = logging.getLogger("tunsec.tun")

IPNetwork = IPv4Network | IPv6Network

LOCAL_PRIORITY = MARK_PRIORITY - 1   # 114: before the mark's rule and tunsec's table's
RTN_THROW = 9


def _family(net: IPNetwork) -> int:
    return socket.AF_INET if net.version == 4 else socket.AF_INET6


def local_rule_command(net: IPNetwork, verb: str = "add") -> str:
    """Root's command that adds (or deletes) net's rule."""
    ip = "ip -6" if net.version == 6 else "ip"
    return (f"{ip} rule {verb} priority {LOCAL_PRIORITY} to {net} lookup main suppress_prefixlength "
            f"{suppressed(net)} protocol {RTPROT_TUNSEC}")


def suppressed(net: IPNetwork) -> int:
    """The main table's routes of this length or shorter are passed over for net: only those at least as specific
    as net serve (its LAN's), not a wider one (a default route, a DHCP server's 0.0.0.0/1 and 128.0.0.0/1, an
    RA's ::/1: review revlate16 F1, TunnelVision's routes)."""
    return max(net.prefixlen - 1, 0)


def _rule_net(rule: Any) -> IPNetwork | None:
    """The network of a dumped rule that is one of ours (to NET at LOCAL_PRIORITY, lookup main without its
    default route, tunsec's proto); None for any other rule."""
    table = rule.get_attr("FRA_TABLE") if rule.get_attr("FRA_TABLE") is not None else rule["table"]
    if not (table == MAIN and rule["action"] == FR_ACT_TO_TBL and rule.get_attr("FRA_PRIORITY") == LOCAL_PRIORITY
            and rule.get_attr("FRA_SUPPRESS_PREFIXLEN") == rule["dst_len"] - 1
            and rule.get_attr("FRA_PROTOCOL") == RTPROT_TUNSEC
            and rule["dst_len"] and not rule["src_len"] and rule.get_attr("FRA_FWMARK") is None):
        return None
    return ip_network(f"{rule.get_attr('FRA_DST')}/{rule['dst_len']}")


def present(ipr: Any, families: Iterable[int] = (socket.AF_INET, socket.AF_INET6)) -> set[IPNetwork]:
    """The networks of our rules in the kernel now (a kernel without IPv6: that family has none)."""
    out: set[IPNetwork] = set()
    for family in families:
        try:
            rules = ipr.get_rules(family=family)
        except NetlinkError as exc:
            log.debug("rules of family %d not listed: %s", family, exc)
            continue
        out |= {n for r in rules if (n := _rule_net(r)) is not None}
    return out


def _args(net: IPNetwork) -> dict[str, object]:
    return {"family": _family(net), "table": MAIN, "priority": LOCAL_PRIORITY, "action": FR_ACT_TO_TBL,
            "dst": str(net.network_address), "dst_len": net.prefixlen, "suppress_prefixlen": suppressed(net),
            "protocol": RTPROT_TUNSEC}


def add(ipr: Any, net: IPNetwork) -> None:
    """net's rule added (one already there is the shared one: taken); NetlinkError if refused."""
    try:
        ipr.rule("add", **_args(net))
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise


def delete(ipr: Any, net: IPNetwork, own: Iterable[str] = ()) -> bool:
    """net's rule removed, unless a route of tunsec's table by a device not in own (this instance's TUN and
    standing routes' device) still covers net (another instance's: it may hold the same local_ts).  True if it
    went (or was gone already)."""
    if covered(ipr, net, own):
        log.info("rule %s stays: a route of table %d (another tunsec's) still covers it", local_rule_command(net),
                 TABLE)
        return False
    try:
        ipr.rule("del", **_args(net))
    except NetlinkError as exc:
        if exc.code not in (errno.ENOENT, errno.ESRCH):   # gone already: removed by someone else
            log.warning("rule to %s stays: %s (as root: %s)", net, exc, local_rule_command(net, "del"))
            return False
    log.info("rule to %s lookup main removed", net)
    return True


def covered(ipr: Any, net: IPNetwork, own: Iterable[str] = ()) -> bool:
    """A route of tunsec's table (not a throw route) by a device not in own covers net strictly: another
    tunsec's TUN route (or standing route) of it."""
    skip = {i for name in own for i in ipr.link_lookup(ifname=name)}
    for r in ipr.route("dump", family=_family(net), table=TABLE):
        if not in_table(r) or r["type"] == RTN_THROW or r.get_attr("RTA_OIF") in skip:
            continue
        dst = ip_network(f"{r.get_attr('RTA_DST') or ('::' if net.version == 6 else '0.0.0.0')}/{r['dst_len']}")
        if r["dst_len"] < net.prefixlen and net.subnet_of(dst):   # type: ignore[arg-type]
            return True
    return False


def drop_unwanted(ipr: Any, want: set[IPNetwork], own: Iterable[str] = ()) -> list[str]:
    """Our rules of networks not in want go where no other tunsec's route covers them (a killed run's leftovers
    at start, `tunsec prepare --undo`); those removed, said as the commands."""
    own = list(own)
    return [local_rule_command(net, "del") for net in sorted(present(ipr) - want, key=str)
            if delete(ipr, net, own)]
