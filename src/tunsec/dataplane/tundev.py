"""What the kernel says about a TUN device (/sys/class/net/NAME: its flags, owner and group; netlink: its
kind and carrier) and why opening one failed, in words that name the device, the user and the fix
(tun.Tun.open, prepare)."""

from __future__ import annotations

import errno
import fcntl
import os
import pwd
import struct
from dataclasses import dataclass
from typing import Any

from tunsec.dataplane.netlink import IPRoute, as_oserror

TUNSETIFF, TUNSETPERSIST, TUNSETOWNER = 0x400454CA, 0x400454CB, 0x400454CC   # linux/if_tun.h
TUNGETIFF = 0x800454D2
IFF_TUN_EXCL = 0x8000   # TUNSETIFF: EBUSY if the device exists (only ever a new one)


@dataclass(frozen=True)
class LinkState:
    """What a link is and whether a process reads it."""

    kind: str | None   # IFLA_INFO_KIND: "tun" for a TUN (or TAP) device; None for a link of no kind (eth0)
    # a TUN has its carrier exactly while a process has a queue of it open (an attach turns it on, the last
    # detach off), whether the link is up or down: IFLA_CARRIER says so in both (/sys's carrier file only
    # while up).  An attach that succeeds says nothing: a multi-queue TUN takes another queue
    carrier: bool

    def unread_tun(self) -> bool:
        """A TUN no process has open: nobody reads what is routed into it (the kernel drops it)."""
        return self.kind == "tun" and not self.carrier


def link_state(ipr: Any, idx: int) -> LinkState:
    """The link of index idx (NetlinkError if the kernel refuses: gone)."""
    link = ipr.link("get", index=idx)[0]
    kind = link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
    return LinkState(str(kind) if kind is not None else None, bool(link.get_attr("IFLA_CARRIER")))


def tun_in_use(name: str) -> bool:
    """A process (a tunsec running on it) has a queue of TUN name open; False if there is no such link.
    OSError if netlink cannot say."""
    with IPRoute() as ipr, as_oserror(f"asking whether TUN {name} is in use"):
        found = ipr.link_lookup(ifname=name)
        return bool(found) and link_state(ipr, found[0]).carrier


def tun_flags(name: str) -> int:
    """An existing TUN's flags as it was made (IFF_MULTI_QUEUE, IFF_VNET_HDR...); 0 if unknown."""
    try:
        with open(f"/sys/class/net/{name}/tun_flags") as f:
            return int(f.read(), 16)
    except (OSError, ValueError):
        return 0


def me() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def open_error(name: str, existed: bool, err: OSError) -> str:
    """Why opening the TUN failed, and what to do about it."""
    if err.errno in (errno.EPERM, errno.EACCES) and existed:
        owner = tun_owner(name)
        return (f"attaching to TUN {name} (owner {owner}) as {me()}: needs CAP_NET_ADMIN or to be its owner; "
                f"as root: ip tuntap del dev {name} mode tun, then tunsec prepare -c FILE --user {me()} "
                f"(or ip tuntap add dev {name} mode tun user {me()} vnet_hdr)")
    if err.errno in (errno.EPERM, errno.EACCES):
        return (f"creating TUN {name} as {me()}: needs CAP_NET_ADMIN; as root, once: tunsec prepare -c FILE "
                f"--user {me()} (or ip tuntap add dev {name} mode tun user {me()} vnet_hdr)")
    if err.errno == errno.EBUSY:   # a single-queue TUN takes one queue
        return f"attaching to TUN {name}: a process has it open (a tunsec running on it?): stop it first"
    if err.errno == errno.ENOENT:
        return (f"opening /dev/net/tun for TUN {name}: it does not exist "
                "(modprobe tun; in a container --device /dev/net/tun)")
    return f"{name}: {err.strerror or err}"


def tun_owner(name: str) -> str:
    try:
        with open(f"/sys/class/net/{name}/owner") as f:
            uid = int(f.read())
    except (OSError, ValueError):
        return "unknown"
    return owner_name(uid)


def owner_name(uid: int) -> str:
    """A TUN owner's name (uid -1: none; with no group either the kernel lets any process attach)."""
    if uid < 0:
        return "none: anyone may attach to it"
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def tun_owner_uid(name: str) -> int | None:
    """The TUN's owner's uid (-1: none); None if /sys does not say."""
    try:
        with open(f"/sys/class/net/{name}/owner") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def tun_group(name: str) -> int:
    try:
        with open(f"/sys/class/net/{name}/group") as f:
            return int(f.read())
    except (OSError, ValueError):
        return -1


def unpersist(name: str, flags: int) -> None:
    """The persistent TUN name (made with flags) goes, its routes with it; OSError if it cannot (EBUSY: a
    process has it open; EPERM: neither its owner nor CAP_NET_ADMIN)."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), flags))
        fcntl.ioctl(fd, TUNSETPERSIST, 0)
    finally:
        os.close(fd)   # the last descriptor of a TUN no longer persistent: the kernel removes it


def hold(name: str, flags: int, create: bool) -> int:
    """A descriptor attached to the TUN name (made with flags; created, persistent, if create), which is made
    root's (TUNSETOWNER 0: a TUN with no owner is anyone's to attach to).  Its holder may later remove it with
    no capability (let_go); while it is held no other process attaches (a single-queue TUN takes one).
    OSError if it cannot be (EPERM: no CAP_NET_ADMIN; EBUSY: it exists, create, or a process has it open)."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)   # never a worker's or a script's
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), flags | (IFF_TUN_EXCL if create else 0)))
        fcntl.ioctl(fd, TUNSETOWNER, 0)
        if create:
            fcntl.ioctl(fd, TUNSETPERSIST, 1)
    except OSError:
        os.close(fd)
        raise
    return fd


def holds(fd: int, name: str) -> bool:
    """fd (hold's) is still attached to the TUN name (root may have deleted it since: the descriptor is
    then detached, and a device of that name is someone else's)."""
    try:
        ifr = fcntl.ioctl(fd, TUNGETIFF, bytes(18))
    except OSError:
        return False
    return ifr[:16].rstrip(b"\0") == name.encode()


def let_go(fd: int, remove: bool) -> None:
    """hold's descriptor closed; the TUN goes with it if remove (TUNSETPERSIST 0 through the descriptor: no
    capability needed), else it stays, persistent, nobody's to read.  OSError if remove cannot be done."""
    try:
        if remove:
            fcntl.ioctl(fd, TUNSETPERSIST, 0)
    finally:
        os.close(fd)
