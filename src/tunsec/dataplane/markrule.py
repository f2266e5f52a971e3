"""tunsec's own IKE and ESP past tunsec's table (review revks4 F5), as wg-quick does with its fwmark.

Every UDP socket tunsec sends IKE or ESP-in-UDP by (the control process's IKE sockets, services/ike/sockets.py;
the ESP-in-UDP sockets it opens for the worker, espsockets.py; all bound in prepare(), as root, before the drop)
carries the mark MARK (SO_MARK needs CAP_NET_ADMIN: an unprivileged start's sockets carry none), and a rule at
MARK_PRIORITY, before tunsec's table's (routetable.RULE_PRIORITY), has the kernel look their packets up in the
main table: the host's path to the peer, whatever tunsec's table says.  So a TUN route that is a peer's own
address (a host-to-host tunnel: remote_ts the peer's /32, strongSwan's ``remote_ts = dynamic``), which wins
over the peer's throw route in the same table, no longer takes tunsec's IKE and ESP into the TUN; the rest of
the host's traffic to the peer goes into the tunnel, as that remote_ts says.

The exclude routes (throw routes, exclude.py) stay for now: an unprivileged start's unmarked sockets need them,
as does a main-table lookup that finds nothing (the kernel then goes on to the next rule, tunsec's table).  The
rule is added with tunsec's table's (tun.py ``_rule``, tunsec prepare), shared by every instance, and removed by
`tunsec prepare --undo` with it.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Iterable
from typing import Any

from tunsec.dataplane.netlink import NetlinkError
from tunsec.dataplane.routetable import FR_ACT_TO_TBL, RULE_PRIORITY, TABLE, in_table

log = logging.getLogger("tunsec.tun")

MARK = 0x74730116          # "ts" and 116: SO_MARK of tunsec's IKE and ESP sockets (`ip rule`: fwmark 0x74730116)
MARK_PRIORITY = RULE_PRIORITY - 1   # 115: just before tunsec's table
MAIN = 254                 # RT_TABLE_MAIN
SO_MARK = getattr(socket, "SO_MARK", 36)


def mark_socket(s: socket.socket, purpose: str) -> bool:
    """s carries MARK (its packets take the main table's path, not tunsec's table); False without
    CAP_NET_ADMIN (an unprivileged start: the exclude routes carry IKE and ESP as before)."""
    try:
        s.setsockopt(socket.SOL_SOCKET, SO_MARK, MARK)
    except OSError as err:
        log.debug("UDP socket for %s carries no mark (%s): its packets follow tunsec's table's throw routes",
                  purpose, err.strerror or err)
        return False
    return True


def _family(version: int) -> int:
    return socket.AF_INET if version == 4 else socket.AF_INET6


def _ours(rule: Any) -> bool:
    """The rule is the mark's: fwmark MARK (every mask bit) to the main table at MARK_PRIORITY."""
    table = rule.get_attr("FRA_TABLE") if rule.get_attr("FRA_TABLE") is not None else rule["table"]
    return bool(table == MAIN and rule["action"] == FR_ACT_TO_TBL and rule.get_attr("FRA_PRIORITY") == MARK_PRIORITY
                and rule.get_attr("FRA_FWMARK") == MARK and not rule["dst_len"] and not rule["src_len"])


def mark_rule_command(version: int, verb: str = "add") -> str:
    """Root's command that adds (or deletes) the mark's rule of that IP version."""
    return f"ip{' -6' if version == 6 else ''} rule {verb} priority {MARK_PRIORITY} fwmark {MARK:#x} lookup main"


def has_mark_rule(ipr: Any, version: int) -> bool:
    """Whether the mark's rule of that IP version is in place."""
    return any(_ours(r) for r in ipr.get_rules(family=_family(version)))


def ensure_mark_rules(ipr: Any, versions: Iterable[int]) -> list[str]:
    """The mark's rule of each IP version, added where missing; root's commands for those this process may not
    add (EPERM: its sockets carry no mark either then).  A kernel without IPv6: NetlinkError, as for the table's."""
    missing: list[str] = []
    for version in sorted(set(versions)):
        if has_mark_rule(ipr, version):
            continue
        try:
            ipr.rule("add", family=_family(version), table=MAIN, priority=MARK_PRIORITY, action=FR_ACT_TO_TBL,
                     fwmark=MARK, fwmask=0xFFFFFFFF)
        except NetlinkError as exc:
            if exc.code == errno.EPERM:
                missing.append(mark_rule_command(version))
                continue
            if exc.code != errno.EEXIST:
                raise
        log.info("rule priority %d fwmark %#x lookup main (IPv%d): tunsec's IKE and ESP take the host's paths",
                 MARK_PRIORITY, MARK, version)
    return missing


def remove_mark_rules(ipr: Any, versions: Iterable[int]) -> list[str]:
    """The mark's rules of versions go where tunsec's table holds no route of their family (`tunsec prepare
    --undo`, as routetable.remove_unused_rules); what was removed, said as the commands."""
    gone: list[str] = []
    for version in versions:
        family = _family(version)
        try:
            if not any(_ours(r) for r in ipr.get_rules(family=family)) or any(
                    in_table(r) for r in ipr.route("dump", family=family, table=TABLE)):
                continue
            ipr.rule("del", family=family, table=MAIN, priority=MARK_PRIORITY, action=FR_ACT_TO_TBL,
                     fwmark=MARK, fwmask=0xFFFFFFFF)
        except NetlinkError as exc:   # a kernel without IPv6; removed meanwhile
            log.debug("mark rule (IPv%d) left as it is: %s", version, exc)
            continue
        gone.append(mark_rule_command(version, "del"))
    return gone
