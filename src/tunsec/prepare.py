"""`tunsec prepare -c FILE --user U`: what root does once so that `tunsec up` can run as U with no
capability at all (or systemd's ExecStartPre=+tunsec prepare ...).

It creates the TUN persistent and owned by U, with the flags `tunsec up` will open it with
(multi_queue when the configuration has more than one worker, vnet_hdr for the offloads), sets its
MTU, quiets IPv6 on it and brings it up, installs the configuration's routes through it (in tunsec's table,
with the rule that looks it up before the main table: dataplane/routetable.py), and makes the
control socket's directory and the state directory U's.  It may run again: what is right stays.  A
refusal leaves no TUN it made behind (the directories are checked first, the TUN removed after).

The routes get what the privileged start adds before any IKE (the daemon's own _setup_tun): the kill
switch, a device with a standing route under each of the TUN's routes (dataplane/killswitch.py), and a
full tunnel the configured peers' exclude routes (dataplane/exclude.py).  `tunsec up` without
CAP_NET_ADMIN finds and uses them, and leaves them at its stop, so that it fails closed after a kill -9
and reaches its peers.
Peers met at run time (road warriors' addresses) still need CAP_NET_ADMIN for theirs.
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat
import struct
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pytun_pmd3.linux import IFF_MULTI_QUEUE, IFF_NO_PI, IFF_TUN, IFF_VNET_HDR

from tunsec.conf.config import Config
from tunsec.dataplane.exclude import ExcludeRoutes
from tunsec.dataplane.exclude import Path as HostPath
from tunsec.dataplane.killswitch import KillSwitch
from tunsec.dataplane.localrules import LOCAL_PRIORITY
from tunsec.dataplane.routetable import RULE_PRIORITY, TABLE
from tunsec.dataplane.tun import Tun, interface_exists
from tunsec.dataplane.tundev import TUNSETIFF, TUNSETOWNER, TUNSETPERSIST, tun_flags, tun_in_use, tun_owner, unpersist
from tunsec.privilege import PrivilegeError, Target, check_config_files, read_grant, target_for
from tunsec.safefs import give_dir, nearest_existing, root_only
from tunsec.statedir import MARKER, refusal, tunsecs

if TYPE_CHECKING:
    from tunsec.daemon import Daemon

log = logging.getLogger("tunsec.prepare")


class PrepareError(Exception):
    """prepare cannot do its work; the message says why and what to do."""


def refuse_in_use(name: str, then: str) -> None:
    """PrepareError when a process has TUN name open: a tunsec running on it holds its routes, exclude
    routes and kill switch (the TUN's carrier says so: tundev.tun_in_use); then: what to do."""
    try:
        busy = tun_in_use(name)
    except OSError as err:
        raise PrepareError(str(err.strerror or err)) from err
    if busy:
        raise PrepareError(f"TUN {name} is in use: a process has it open (a tunsec running on it, whatever its "
                           f"control socket's path): {then}")


def _create_persistent(name: str, flags: int, owner: Target) -> None:
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    except OSError as err:
        raise PrepareError(f"opening /dev/net/tun: {err.strerror} (modprobe tun)") from err
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), flags))
        fcntl.ioctl(fd, TUNSETOWNER, owner.uid)
        fcntl.ioctl(fd, TUNSETPERSIST, 1)
    except OSError as err:
        raise PrepareError(f"creating TUN {name}: {err.strerror}; tunsec prepare needs root "
                           "(CAP_NET_ADMIN)") from err
    finally:
        os.close(fd)


def _remove_persistent(name: str, flags: int) -> None:
    """The persistent TUN name this run made goes (its routes with it); logged if it cannot."""
    try:
        unpersist(name, flags)
    except OSError as err:
        log.error("removing TUN %s made by this run failed: %s; remove it: ip tuntap del dev %s mode tun%s", name,
                  err.strerror, name, " multi_queue" if flags & IFF_MULTI_QUEUE else "")


def _set_up(d: Daemon, name: str) -> list[str]:
    """The daemon's MTU, link and routes on the TUN name, with their kill switch and a full tunnel's
    exclude routes; the routes it added (they stay).  A refused exclude or standing route is an error: without it
    the unprivileged start fails open, or sends IKE into the TUN."""
    from tunsec.daemon import StartupError

    try:
        tun = Tun.open(name, queues=d.nqueues)
    except OSError as err:   # its strerror names the device and the fix (tundev.open_error)
        raise PrepareError(str(err.strerror or err)) from err
    try:
        d.tun = tun
        try:
            d._setup_tun()
        except StartupError as err:   # a route or link change the kernel refused, saying which and why
            raise PrepareError(str(err)) from err
        nets = {n for n, _ in d._tun_routes()}
        if d.excludes is not None and d.excludes.refused:
            raise PrepareError("an exclude route was refused (the error above says which and why)")
        if nets - d.killswitch.held:
            raise PrepareError(f"the tunnels' standing routes on {d.killswitch.name} were refused (the error "
                               "above says why): tunsec up would fail open after a kill -9")
        if d.killswitch.skipped:   # the kernel would pass over them once tunsec is killed (linkdown.py)
            raise PrepareError("; ".join(d.killswitch.skipped))
        routes = [str(r[0]) for r in tun.routes]
        tun.routes.clear()   # they stay when tunsec up starts (and after it stops)
        return routes
    finally:
        tun.close()
        d.tun = None


def _full_routing(d: Daemon) -> str:
    """What the summary says of the exclude routes and the kill switch in place; "" without either."""
    parts = []
    if d.excludes is not None and d.excludes.held:
        parts.append("exclude routes " + ", ".join(f"{p}" + _via(path) for p, path in d.excludes.held.items()))
    if d.excludes is not None and d.excludes.lans:
        parts.append(f"rules priority {LOCAL_PRIORITY} to " + ", ".join(map(str, sorted(d.excludes.lans, key=str)))
                     + " lookup main suppress_prefixlength (each its length less one: local networks)")
    if d.killswitch.held:
        parts.append(f"standing routes {', '.join(sorted(map(str, d.killswitch.held)))} dev {d.killswitch.name} "
                     "(kill switch)")
    return "; " + "; ".join(parts) if parts else ""


def _via(path: HostPath | None) -> str:
    """How the summary names an exclude route's path."""
    if path is None:
        return " (no path yet)"
    return f" via {path.gateway}" if path.gateway else " on the link"


def _ensure_tun(name: str, flags: int, owner: Target) -> str:
    """The TUN as `tunsec up` will open it; an existing one of the other kind is an error."""
    if not interface_exists(name):
        _create_persistent(name, flags, owner)
        return "created"
    have = tun_flags(name)
    if not have:
        raise PrepareError(f"{name} exists and is not a TUN device: choose another tunsec {{ tun = }}")
    if bool(have & IFF_MULTI_QUEUE) != bool(flags & IFF_MULTI_QUEUE) or tun_owner(name) != owner.name:
        raise PrepareError(
            f"TUN {name} exists with owner {tun_owner(name)}, {'' if have & IFF_MULTI_QUEUE else 'not '}multi_queue; "
            f"this configuration needs owner {owner.name}, {'' if flags & IFF_MULTI_QUEUE else 'not '}multi_queue: "
            f"delete it first (ip tuntap del dev {name} mode tun{' multi_queue' if have & IFF_MULTI_QUEUE else ''})")
    return "kept"


def _owners_dir(path: Path, owner: Target) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and (st.st_uid, st.st_gid) == (owner.uid, owner.gid)


def _own_dir(path: Path, owner: Target, mode: int = 0o750, socket: str = "") -> bool:
    """Make path (created if needed) owner's, mode mode, through a descriptor.  Only under a parent nobody but
    root may change (else a parent swapped for a symlink moves the chown anywhere); there a directory that is
    owner's already only gets its mode: False (not given).  An existing directory is given only when
    statedir.refusal lets it (socket, the control socket's name)."""
    for parent in (nearest_existing(path.parent), path.parent):   # before creating what is missing, then after
        if not root_only(parent):
            if _owners_dir(path, owner):
                _with_dir(path, owner, lambda fd, st: _set_mode(fd, st, owner, mode))
                return False
            raise PrepareError(
                f"cannot give {path} to {owner.name}: users other than root may change {parent}, so root "
                f"changes no ownership there. Choose a path in a directory only root may change, or create "
                f"{path} as {owner.name} (then prepare leaves it as it is)")
        path.parent.mkdir(parents=True, exist_ok=True)
    created = True
    try:
        path.mkdir(mode=mode)
    except FileExistsError:
        created = False

    def give(fd: int, st: os.stat_result) -> None:
        # the user's already: it may rename or remove any entry in it (lost+found, an admin's README) as
        # it is; nothing is given at this level, and give_dir gives only tunsec's names (review revroot F2)
        why = None if created or st.st_uid == owner.uid else refusal(fd, owner.uid, socket)
        if why:
            raise PrepareError(f"cannot give {path} to {owner.name}: {why}")
        os.fchown(fd, owner.uid, owner.gid)
        os.fchmod(fd, mode)

    _with_dir(path, owner, give)
    return True


def _with_dir(path: Path, owner: Target, work: Callable[[int, os.stat_result], None]) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        raise PrepareError(f"cannot give {path} to {owner.name}: {err.strerror} (it must be a directory, "
                           "not a symbolic link)") from err
    try:
        work(fd, os.fstat(fd))
    finally:
        os.close(fd)


def _set_mode(fd: int, st: os.stat_result, owner: Target, mode: int) -> None:
    if st.st_uid == owner.uid and stat.S_IMODE(st.st_mode) != mode:   # looked at through fd: still owner's
        os.fchmod(fd, mode)


def _own_state_dir(path: Path, owner: Target) -> str:
    """The state directory and the regular files in it owner's; a note on what was left as it was."""
    if not _own_dir(path, owner, 0o700):   # sequence number reservations: the user's alone
        return ""
    try:
        skipped = give_dir(path, owner.uid, owner.gid, tunsecs)
    except OSError as err:
        raise PrepareError(f"cannot give the files in {path} to {owner.name}: {err.strerror or err}") from err
    if not skipped:
        return ""
    note = (f" In {path}, left as they were (only regular files with one link are handed over, so that no "
            f"file of someone else's is given away): {', '.join(skipped)}.")
    log.warning("%s", note.strip())
    return note


def prepare(cfg: Config, user: str) -> str:
    """Set up the host for cfg run as user; a summary of what is in place."""
    from tunsec.daemon import Daemon  # the daemon's own MTU and route choices, not a second copy

    if os.geteuid() != 0:
        raise PrepareError("tunsec prepare runs as root (it creates the TUN and routes for the user tunsec up "
                           "runs as)")
    try:
        owner = target_for(user)
    except PrivilegeError as err:
        raise PrepareError(str(err)) from err
    assert owner is not None
    try:   # the file says which directories root gives away, and to whom
        check_config_files(cfg)
    except PrivilegeError as err:
        raise PrepareError(str(err)) from err
    d = Daemon(cfg)
    name = cfg.tunsec.tun
    flags = IFF_TUN | IFF_NO_PI | IFF_VNET_HDR | (IFF_MULTI_QUEUE if d.nqueues > 1 else 0)
    if tun_flags(name):   # before anything is touched: a multi-queue TUN would take our queues (review revprep F2)
        refuse_in_use(name, "stop it, run tunsec prepare, then start it")
    # the directories first: a refusal there (a parent another user may change) leaves no TUN behind
    sock = Path(cfg.tunsec.control_socket)
    _own_dir(sock.parent, owner, socket=sock.name)
    skipped = _own_state_dir(Path(cfg.tunsec.state_dir), owner) if d.manual.plans else ""
    how = _ensure_tun(name, flags, owner)
    # found in place: kept at a refusal below (close() removes only what this run added: a device it never
    # looked at may be a running instance's, review revprep F2)
    d.excludes, d.killswitch = ExcludeRoutes(name, keep_found=True), KillSwitch(name, keep_found=True)
    try:
        routes = _set_up(d, name)
        d.killswitch.release()   # the device stays, a TUN nobody reads, for tunsec up
    except BaseException:
        d.excludes.close()
        d.killswitch.close()
        if how == "created":   # a refusal leaves the host as it found it (a TUN it had stays)
            _remove_persistent(name, flags)
        raise
    mq = " multi_queue" if flags & IFF_MULTI_QUEUE else ""
    st = os.stat(cfg.path)
    unreadable = not st.st_mode & 0o004 and not (st.st_gid == owner.gid and st.st_mode & 0o040)
    return (f"TUN {name} {how} (owner {owner.name}{mq} vnet_hdr), MTU {d.mtu}, up; routes added: "
            f"{', '.join(routes) or 'none (already there)'} (table {TABLE}, rule priority {RULE_PRIORITY})"
            f"{_full_routing(d)}; "
            f"{Path(cfg.tunsec.control_socket).parent} "
            f"{'and ' + cfg.tunsec.state_dir + ' ' if d.manual.plans else ''}owned by {owner.name}. "
            f"Now, as {owner.name}: tunsec up -c {cfg.path}"
            + skipped
            + (f" ({cfg.path} is not readable by {owner.name}: {read_grant(cfg.path, owner.name, owner.gid)}; it stays "
               "root's: it says what root does here)" if unreadable else "")
            + (f" ({cfg.tunsec.state_dir} is not initialised: for keys never used before, once: tunsec init-state "
               f"-c {cfg.path})" if d.manual.plans and not (Path(cfg.tunsec.state_dir) / MARKER).exists() else ""))
