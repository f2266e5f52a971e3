"""What the kernel says about a TUN device (/sys/class/net/NAME: its flags, owner and group) and why
opening one failed, in words that name the device, the user and the fix (tun.Tun.open, prepare)."""

from __future__ import annotations

import errno
import os
import pwd


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
    if uid < 0:
        return "none: anyone with CAP_NET_ADMIN"
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def tun_group(name: str) -> int:
    try:
        with open(f"/sys/class/net/{name}/group") as f:
            return int(f.read())
    except (OSError, ValueError):
        return -1
