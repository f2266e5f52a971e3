"""tunsec's own routing table, and the rule that looks it up before the main table (review revks3 F1, F2, F5).

Every route tunsec makes for a tunnel's network goes into table TABLE, not into the main table: the TUN's
routes (a full tunnel's as the halves of a default route), the kill switch's standing routes under them
(killswitch.py), the blocks' prohibit routes (tun.py), and, for each IKE peer a TUN route would capture, an
exclude route that is a ``throw`` route (exclude.py): there the lookup leaves the table and goes on to the
main table, the host's own path to the peer, whatever it is by then.  A rule of priority RULE_PRIORITY,
before the main table's (32766), sends every lookup there first (strongSwan's kernel-libipsec does the same
with table 220; wg-quick's main-table rule with suppress_prefixlength comes before its own table instead).

So no route of the main table, of any length or metric, takes a tunnel's network: not an IPv6 router
advertisement's on-link prefix (2000::/3 under a full tunnel's ::/1 halves, a /64 inside a split tunnel's
/48: TunnelVision's class, CVE-2024-3661), not a DHCP client's or an updown script's route of the network
under the standing route's metric after a kill -9, and the host's own route of the network stays its own
(the TUN's route never replaces it, nor does the clean stop remove it).  What the main table holds still
serves everything no tunnel routes, and the peers' IKE and ESP (the throw routes).  Rules of a priority
before RULE_PRIORITY (another VPN's, an operator's policy routing) still come first: tunsec does not look.

One rule per family for every tunsec in the network namespace: two instances share it (their routes in the
table are told apart as in the main table before: by device, and by their TUN's mark).  A start adds it where
it is missing; the clean stop leaves it (an empty table sends every lookup on to the main table: harmless,
and another instance may use it); `tunsec prepare --undo` removes it once the table holds no route.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Iterable
from typing import Any

from tunsec.dataplane.netlink import NetlinkError

log = logging.getLogger("tunsec.tun")

# tunsec's routing table (`ip route show table 116`, `ip -6 route show table 116`): the number of its routes'
# proto (prohibitroute.RTPROT_TUNSEC), not strongSwan's 220 nor wg-quick's 51820
TABLE = 116
# the priority of the rules that look it up (`ip rule`, `ip -6 rule`): before the main table's 32766
RULE_PRIORITY = 116
FR_ACT_TO_TBL = 1   # linux/fib_rules.h


def in_table(r: Any) -> bool:
    """A dumped route (or rule) is in tunsec's table (RTA_TABLE / FRA_TABLE, or the header's)."""
    table = r.get_attr("RTA_TABLE") if r.get_attr("RTA_TABLE") is not None else r.get_attr("FRA_TABLE")
    return bool((table if table is not None else r["table"]) == TABLE)


def _family(version: int) -> int:
    return socket.AF_INET if version == 4 else socket.AF_INET6


def rule_command(version: int) -> str:
    """Root's command that adds the rule of that IP version."""
    return f"ip{' -6' if version == 6 else ''} rule add priority {RULE_PRIORITY} lookup {TABLE}"


def _ours(rule: Any) -> bool:
    """The rule is tunsec's: every packet (no selector) to tunsec's table at RULE_PRIORITY."""
    return bool(in_table(rule) and rule["action"] == FR_ACT_TO_TBL and rule.get_attr("FRA_PRIORITY") == RULE_PRIORITY
                and not rule["dst_len"] and not rule["src_len"] and rule.get_attr("FRA_FWMARK") is None
                and rule.get_attr("FRA_IIFNAME") is None and rule.get_attr("FRA_OIFNAME") is None)


def has_rule(ipr: Any, version: int) -> bool:
    """The rule of that IP version is in (a kernel without IPv6 refuses the dump: NetlinkError)."""
    return any(_ours(r) for r in ipr.get_rules(family=_family(version)))


def ensure_rules(ipr: Any, versions: Iterable[int]) -> list[str]:
    """The rule of each IP version in versions, added where it is missing; root's commands for those this
    process may not add (EPERM: no CAP_NET_ADMIN, tunsec prepare adds them).  Other refusals: NetlinkError."""
    missing: list[str] = []
    for version in sorted(set(versions)):
        if has_rule(ipr, version):
            continue
        try:
            ipr.rule("add", family=_family(version), table=TABLE, priority=RULE_PRIORITY, action=FR_ACT_TO_TBL)
        except NetlinkError as exc:
            if exc.code == errno.EPERM:
                missing.append(rule_command(version))
                continue
            if exc.code != errno.EEXIST:   # another tunsec added it meanwhile
                raise
        log.info("rule priority %d lookup table %d (IPv%d): the tunnels' routes come before the main table's",
                 RULE_PRIORITY, TABLE, version)
    return missing


def remove_unused_rules(ipr: Any) -> list[str]:
    """The rules go where tunsec's table holds no route of their family any more (`tunsec prepare --undo`);
    what was removed, said as the commands that would have done it."""
    gone: list[str] = []
    for version in (4, 6):
        family = _family(version)
        try:
            rules = [r for r in ipr.get_rules(family=family) if _ours(r)]
            if not rules or any(in_table(r) for r in ipr.route("dump", family=family, table=TABLE)):
                continue
            for _r in rules:
                ipr.rule("del", family=family, table=TABLE, priority=RULE_PRIORITY, action=FR_ACT_TO_TBL)
        except NetlinkError as exc:   # a kernel without IPv6; a rule removed meanwhile
            log.debug("rule of table %d (IPv%d) left as it is: %s", TABLE, version, exc)
            continue
        gone.append(f"ip{' -6' if version == 6 else ''} rule del priority {RULE_PRIORITY} lookup {TABLE}")
    return gone
