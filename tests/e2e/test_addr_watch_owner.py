"""Who watches the host's addresses (h/fixwatch, review revlate4 F1): the control process, once, also
for a daemon with manual tunnels only; the dataplane worker holds no netlink socket at all (it hears
of each address added from the control process, the pipe's ADDR_ADDED).  Before, the worker held a
route netlink socket (csrc/addrwatch.c) that a worker taken over could send route changes, forged
notices and dumps through, and a manual-only daemon had no watch in the control process.

Read from /proc for a running daemon pair (manual keys, TunsecPair): each process's sockets by inode,
and its namespace's /proc/net/netlink (protocol 0 is NETLINK_ROUTE, the groups its subscription)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from conftest import TunnelOptions, TunsecPair

from tunsec.bench.netns import TwoHosts

RTMGRP_IFADDR = 0x10 | 0x100   # RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR


def netlink_sockets(pid: int) -> list[tuple[int, int]]:
    """(protocol, groups) of each netlink socket pid holds."""
    table = {}
    for line in Path(f"/proc/{pid}/net/netlink").read_text().splitlines()[1:]:
        cols = line.split()
        table[cols[-1]] = (int(cols[1]), int(cols[3], 16))   # inode -> (Eth, Groups)
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", link)
        if m and m[1] in table:
            out.append(table[m[1]])
    return out


def test_the_control_process_watches_the_addresses_and_the_worker_holds_no_netlink(topo: TwoHosts) -> None:
    pair = TunsecPair(topo, TunnelOptions(inner6=False))   # manual tunnels only, no IKE service
    pair.start_both()
    assert topo.wait_ping(topo.a, topo.b.inner4, src=topo.a.inner4)
    st = pair.a.status_json(topo)
    worker = int(st["worker"]["pid"])
    control = int(Path(f"/proc/{worker}/status").read_text().split("PPid:")[1].split()[0])
    if "tunsec.dataplane.spawner" in Path(f"/proc/{control}/cmdline").read_text():
        control = int(Path(f"/proc/{control}/status").read_text().split("PPid:")[1].split()[0])
    assert netlink_sockets(worker) == []
    watches = [s for s in netlink_sockets(control) if s[0] == 0 and s[1] & RTMGRP_IFADDR == RTMGRP_IFADDR]
    assert len(watches) == 1, netlink_sockets(control)
