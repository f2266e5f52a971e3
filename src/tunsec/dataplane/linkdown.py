"""The kill switch's routes go through a device with no carrier (killswitch.py: a TUN nobody reads, once
tunsec is killed), so the kernel marks them ``linkdown``; where ``ignore_routes_with_linkdown`` is set (a
routing host's setting) its route lookups pass over them and the traffic takes the host's other routes,
in clear (review revks F2).

The kernel's rule (include/linux/inetdevice.h, net/ipv6/route.c): IPv4 asks ``all`` OR the device's own
(``default`` is only what a new device starts with, and what follows a later write of it unless the
device's own was written), IPv6 the device's own alone (a write of ``all`` is copied to every device).  So
the device's own is set to 0 where this process may (CAP_NET_ADMIN: at start, or as root), which also stops
a later ``default`` from reaching it; net.ipv4.conf.all at 1 no device can undo: it is said, with its fix,
never changed (it is the host's)."""

from __future__ import annotations

from collections.abc import Iterable

SETTING = "ignore_routes_with_linkdown"


def _path(version: int, scope: str) -> str:
    return f"/proc/sys/net/ipv{version}/conf/{scope}/{SETTING}"


def _read(path: str) -> str | None:
    """The setting's value; None where there is none (no IPv6 in this kernel, an older kernel)."""
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _set_zero(path: str) -> bool:
    """The device's own written 0 (explicitly, so that a later write of `default` leaves it); False if this
    process may not."""
    try:
        with open(path, "w") as f:
            f.write("0")
    except OSError:
        return False
    return True


def keep_used(device: str, versions: Iterable[int], clear: str) -> list[str]:
    """The device's routes of the IP versions given kept in the kernel's lookups although it has no carrier:
    its own setting set to 0 where this process may.  What still makes the kernel pass over them, one line
    each (the sysctl, what it does, root's fix); clear: what then happens to the traffic."""
    lines: list[str] = []
    for v in sorted(set(versions)):
        own = _path(v, device)
        if _read(own) is None:
            continue
        if v == 4 and _read(_path(4, "all")) not in (None, "0"):
            lines.append(f"net.ipv4.conf.all.{SETTING} = 1: the kernel passes over the routes of a device with no "
                         f"carrier, the kill switch {device}'s among them (whatever {device}'s own says); {clear} "
                         f"for its IPv4 networks. As root: sysctl -w net.ipv4.conf.all.{SETTING}=0 (and where "
                         f"/etc/sysctl.conf or /etc/sysctl.d sets it)")
        if not _set_zero(own) and _read(own) != "0":
            lines.append(f"net.ipv{v}.conf.{device}.{SETTING} = 1: the kernel passes over the kill switch's routes "
                         f"(its device has no carrier); {clear} for its IPv{v} networks, and tunsec may not change "
                         f"it (no CAP_NET_ADMIN). As root: sysctl -w "
                         f"net.ipv{v}.conf.{device}.{SETTING}=0")
    return lines
