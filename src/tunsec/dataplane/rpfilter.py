"""Strict reverse-path filtering (``rp_filter = 1``) under tunsec's routes: a start WARNING (review revks4 F4).

Table 116 comes before the main table for the kernel's source check too: with a full tunnel its halves are the
reverse path of every IPv4 address on the uplink's link, so with ``rp_filter = 1`` (RHEL's setting, the CIS
benchmarks' advice) the packets of the hosts there (their ARP requests for this host included) fail the check
and are dropped.  tunsec keeps the peers (their exclude routes) outside, so their IKE and ESP come in; the router
and the rest of the link fail the check (the router's ARP requests for this host go unanswered once its
neighbour entry ages out), which the WARNING says, with the advice: loose mode (``rp_filter = 2``).  A throw
route for the router (h/fixks7) was taken out again: whoever sets the host's routes (a LAN's DHCP server) would
choose an address that leaves the tunnel in clear (review revlate14 F1).
A host-to-host tunnel (a TUN route that is a peer's own address) makes that
peer's reverse path the TUN too: its IKE and ESP would be dropped.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable, Sequence
from pathlib import Path as FsPath

from tunsec.dataplane.exclude import IPAddress, IPNetwork, Path
from tunsec.policy.full_tunnel import HALVES

log = logging.getLogger("tunsec.tun")

CONF = FsPath("/proc/sys/net/ipv4/conf")
STRICT = 1


def mode(device: str, conf: FsPath = CONF) -> int:
    """The kernel's rp_filter for device: the larger of ``all``'s and the device's (0 where unreadable)."""
    values = []
    for key in ("all", device):
        try:
            values.append(int((conf / key / "rp_filter").read_text().strip()))
        except (OSError, ValueError):
            values.append(0)
    return max(values)


def strict_devices(held: dict[IPAddress, Path | None], tun_nets: Sequence[IPNetwork],
                   conf: FsPath = CONF) -> list[str]:
    """The uplinks (the devices of the IPv4 peers' paths) with rp_filter = 1 where tunsec's routes take their
    link's reverse paths: a full tunnel, or a TUN route that is a peer's own address."""
    full = any(n in HALVES.get(h, ()) for h in HALVES for n in tun_nets if n.version == 4)
    devices: set[str] = set()
    for peer, path in held.items():
        if peer.version != 4 or path is None:
            continue
        own = any(n.prefixlen == 32 and peer in n for n in tun_nets if n.version == 4)
        if not (full or own):
            continue
        try:
            name = socket.if_indextoname(path.oif)
        except OSError:
            continue
        if mode(name, conf) == STRICT:
            devices.add(name)
    return sorted(devices)


def warn_strict(held: dict[IPAddress, Path | None], tun_nets: Iterable[IPNetwork]) -> list[str]:
    """A WARNING per uplink strict_devices finds; the devices."""
    devices = strict_devices(held, list(tun_nets))
    for name in devices:
        log.warning("rp_filter = 1 on %s (net.ipv4.conf.all / .%s.rp_filter): tunsec's routes (table 116) are the "
                    "reverse path of the addresses on its link but the peers', so the kernel drops their packets to "
                    "this host (its ARP answers to them, the router's too: the peers' ESP may stop coming in); sysctl "
                    "-w net.ipv4.conf.%s.rp_filter=2 net.ipv4.conf.all.rp_filter=2 (loose; operations.md)",
                    name, name, name)
    return devices
