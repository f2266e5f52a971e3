"""Giving up privilege, for the control process and the worker alike.

Both processes parse data from the network, so once the TUN is open and the
sockets are bound each one becomes the configured user (its primary group, no
supplementary groups), keeps only the capabilities it still uses (the worker
none), clears the ambient and, where it may (CAP_SETPCAP), the bounding set,
and sets no-new-privs so nothing it executes can gain any.

Both also make themselves non-dumpable (PR_SET_DUMPABLE 0) with a core limit
of 0 first thing, and again after each change of credentials (setuid and exec
reset the flag): a process of the same uid (an updown script, `tunsec status`
run as that user, the worker) could otherwise read /proc/<pid>/mem, and a crash
would write the PSKs, private keys and IKE keys into a core file.  Key bytes
held by Python cannot be wiped or locked out of swap; this keeps them from
other processes and from core files, not from swap.

Capabilities are per thread in Linux: drop() runs while the calling process has
one thread (checked), and verifies every thread afterwards.  A tiny ctypes
binding to capget/capset/prctl is all this needs (no library adds anything).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import grp
import logging
import os
import pwd
import resource
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tunsec.safefs import give_dir, root_only

if TYPE_CHECKING:
    from tunsec.conf.config import Config
    from tunsec.conf.tunsec_section import TunsecSettings

log = logging.getLogger("tunsec.privilege")

# linux/capability.h
CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_SETGID, CAP_SETUID, CAP_SETPCAP = 0, 1, 6, 7, 8
CAP_NET_BIND_SERVICE, CAP_NET_ADMIN = 10, 12
CAP_NAMES = {CAP_CHOWN: "CAP_CHOWN", CAP_DAC_OVERRIDE: "CAP_DAC_OVERRIDE", CAP_SETGID: "CAP_SETGID",
             CAP_SETUID: "CAP_SETUID", CAP_SETPCAP: "CAP_SETPCAP", CAP_NET_BIND_SERVICE: "CAP_NET_BIND_SERVICE",
             CAP_NET_ADMIN: "CAP_NET_ADMIN"}
_CAP_V3 = 0x20080522

# linux/prctl.h
PR_GET_DUMPABLE, PR_SET_DUMPABLE = 3, 4
PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

_STATUS_CAPS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")


class PrivilegeError(Exception):
    """Privilege cannot be given up as configured; the message says what and how to fix it."""


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, arg2: int = 0, arg3: int = 0) -> int:
    got = int(_libc().prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), ctypes.c_ulong(0), ctypes.c_ulong(0)))
    if got < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")
    return got


def harden() -> None:
    """No core file, no /proc/<pid>/mem or ptrace for processes of our uid (see the module's text).
    Called before any secret is read, and again after every change of credentials."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _prctl(PR_SET_DUMPABLE, 0)


def hardening_problem() -> str | None:
    """What of harden() does not hold now, or None."""
    if _prctl(PR_GET_DUMPABLE) != 0:
        return "the process is still dumpable (PR_SET_DUMPABLE 0 did not stick)"
    core = resource.getrlimit(resource.RLIMIT_CORE)
    if core != (0, 0):
        return f"the core file size limit is {core}, not (0, 0)"
    return None


@dataclass(frozen=True)
class CapSets:
    effective: int
    permitted: int
    inheritable: int


def get_caps() -> CapSets:
    """The calling thread's capability sets (capget)."""
    hdr = _CapHeader(_CAP_V3, 0)
    data = (_CapData * 2)()
    if _libc().capget(ctypes.byref(hdr), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capget: {os.strerror(err)}")

    def join(name: str) -> int:
        return int(getattr(data[0], name)) | int(getattr(data[1], name)) << 32
    return CapSets(join("effective"), join("permitted"), join("inheritable"))


def set_caps(effective: int, permitted: int, inheritable: int = 0) -> None:
    hdr = _CapHeader(_CAP_V3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        data[i].effective = (effective >> (32 * i)) & 0xFFFFFFFF
        data[i].permitted = (permitted >> (32 * i)) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> (32 * i)) & 0xFFFFFFFF
    if _libc().capset(ctypes.byref(hdr), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")


def shed_for_answer() -> None:
    """Hold no capability (root: CAP_DAC_OVERRIDE only, which the service user's 0660 socket needs) while
    the CLI reads the server's answer: podman exec and a HEALTHCHECK start it with the container's
    capabilities as ambient ones, and the server at the other end parses IKE from the network (review
    revcontainer F3).  Best effort: where the kernel refuses, the CLI goes on as it was."""
    with contextlib.suppress(OSError):
        shed(mask(CAP_DAC_OVERRIDE) if os.geteuid() == 0 else 0)


def shed(keep: int, no_new_privs: bool = False) -> None:
    """Of this thread's capabilities keep only those of ``keep`` it has, none ambient or inheritable
    (and no-new-privs if asked); OSError: the kernel refused."""
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    caps = get_caps()
    set_caps(caps.effective & keep, caps.permitted & keep, 0)
    if no_new_privs:
        _prctl(PR_SET_NO_NEW_PRIVS, 1)


def has_cap(cap: int) -> bool:
    return bool(get_caps().effective & (1 << cap))


def mask(*caps: int) -> int:
    out = 0
    for c in caps:
        out |= 1 << c
    return out


def cap_names(bits: int) -> str:
    names = [CAP_NAMES.get(c, f"cap{c}") for c in range(64) if bits & (1 << c)]
    return ",".join(names) or "none"


def _last_cap() -> int:
    try:
        return int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        return 63   # past the kernel's last capability PR_CAPBSET_DROP says EINVAL: the loop stops there


def _status(task: str = "self") -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{task}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def _threads() -> list[str]:
    return sorted(os.listdir("/proc/self/task"))


@dataclass(frozen=True)
class Target:
    """Whom to become: None for uid/gid means stay who we are (only capabilities go)."""

    name: str
    uid: int
    gid: int


def target_for(user: str | None) -> Target | None:
    """The configured user (resolved now, before the process may no longer read /etc/passwd)."""
    if not user:
        return None
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeError(f"user {user!r} (tunsec {{ user = ... }}) does not exist on this host: create it "
                             f"(useradd --system --no-create-home --shell /usr/sbin/nologin {user}) or name "
                             "another") from None
    return Target(user, pw.pw_uid, pw.pw_gid)


def target_of(uid: int) -> Target:
    """The user uid as drop() would make it: its primary group, no supplementary ones."""
    try:
        pw = pwd.getpwuid(uid)
    except KeyError:
        raise PrivilegeError(f"uid {uid} has no entry in the user database") from None
    return Target(pw.pw_name, pw.pw_uid, pw.pw_gid)


@contextlib.contextmanager
def acting_as(t: Target | None) -> Iterator[None]:
    """Effective uid and gid of t, no supplementary groups (as drop() leaves them); real and saved stay:
    root can come back, t's processes cannot signal or trace us meanwhile.  A no-op for None.  Needs one
    thread (the drop checks it later).  OSError (EPERM) when this process may not switch."""
    if t is None:
        yield
        return
    uid, gid, groups = os.geteuid(), os.getegid(), os.getgroups()
    try:
        os.setgroups([])
        os.setegid(t.gid)
        os.seteuid(t.uid)
        now = get_caps()
        set_caps(0, now.permitted, now.inheritable)
    except OSError:
        _back(uid, gid, groups)
        raise
    try:
        yield
    finally:
        _back(uid, gid, groups)


def _back(uid: int, gid: int, groups: list[int]) -> None:
    os.seteuid(uid)
    if uid == 0:
        now = get_caps()
        set_caps(now.permitted, now.permitted, now.inheritable)
    os.setegid(gid)
    os.setgroups(groups)
    harden()   # a change of the effective uid resets the dumpable flag


def needs_switch(t: Target | None) -> bool:
    if t is None:
        return False
    # supplementary groups alone are no reason: without CAP_SETGID they cannot be cleared anyway
    return os.getresuid() != (t.uid,) * 3 or os.getresgid() != (t.gid,) * 3


def check_can_switch(t: Target | None) -> None:
    """Fail early, before anything is set up, when user = asks for a change this process may not make."""
    if not needs_switch(t):
        return
    assert t is not None
    eff = get_caps().effective
    missing = [CAP_NAMES[c] for c in (CAP_SETUID, CAP_SETGID) if not eff & (1 << c)]
    if missing:
        me = pwd.getpwuid(os.geteuid()).pw_name if _known_uid(os.geteuid()) else str(os.geteuid())
        raise PrivilegeError(
            f"changing user from {me} (uid {os.geteuid()}) to {t.name} (uid {t.uid}, tunsec {{ user = {t.name} }}) "
            f"needs {' and '.join(missing)}: start tunsec as root or with those capabilities "
            f"(AmbientCapabilities=, --cap-add SETUID --cap-add SETGID), or start it as {t.name} itself"
            + (", or keep root with tunsec { user = root }" if os.geteuid() == 0 else ""))


def _known_uid(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def _drop_bounding_set() -> bool:
    """Empty the bounding set; False when the process may not (no CAP_SETPCAP): no-new-privs and
    empty permitted sets then keep what is left of it from ever being used."""
    if not has_cap(CAP_SETPCAP):
        return False
    for cap in range(_last_cap() + 1):
        try:
            _prctl(PR_CAPBSET_DROP, cap)
        except OSError as err:
            if err.errno != errno.EINVAL:
                raise
            break
    return True


def drop(t: Target | None, keep: int = 0) -> str:
    """Become t (if given) keeping only the capabilities in keep; returns a line for the log.

    Order matters: the bounding set goes while CAP_SETPCAP is still held; the
    change of uid happens with PR_SET_KEEPCAPS so the kept capabilities survive
    it, then capset trims every set to keep."""
    threads = _threads()
    if len(threads) != 1:
        raise PrivilegeError(f"dropping privileges with {len(threads)} threads running (capabilities are "
                             "per thread); this is a bug in tunsec")
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    bounded = _drop_bounding_set()
    if needs_switch(t):
        assert t is not None
        check_can_switch(t)
        _prctl(PR_SET_KEEPCAPS, 1 if keep else 0)
        os.setgroups([])
        os.setresgid(t.gid, t.gid, t.gid)
        os.setresuid(t.uid, t.uid, t.uid)
        _prctl(PR_SET_KEEPCAPS, 0)
    elif os.getgroups() and has_cap(CAP_SETGID):
        os.setgroups([])
    have = get_caps().permitted
    if keep & ~have:
        raise PrivilegeError(f"cannot keep {cap_names(keep & ~have)}: this process does not have it")
    set_caps(keep, keep, 0)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    harden()   # the change of uid made the process dumpable again
    _verify(keep)
    who = pwd.getpwuid(os.getuid()).pw_name if _known_uid(os.getuid()) else "?"
    return (f"running as {who} (uid {os.getuid()}, gid {os.getgid()}), capabilities: {cap_names(keep)}"
            + ("" if bounded else f"; bounding set left as inherited ({_status()['CapBnd']}): no CAP_SETPCAP to "
               "empty it, no-new-privs keeps it unused"))


def release(caps: int) -> None:
    """caps out of the calling thread's effective, permitted and inheritable sets, for good: nothing raises
    a permitted set again (no-new-privs; the uid is not 0).  Other threads keep theirs (see netadmin.py)."""
    now = get_caps()
    set_caps(now.effective & ~caps, now.permitted & ~caps, now.inheritable & ~caps)


def threads_holding(caps: int) -> list[int]:
    """This process's threads with any of caps in their effective or permitted sets."""
    out = []
    for task in _threads():
        try:
            st = _status(f"self/task/{task}")
        except OSError:   # ended meanwhile
            continue
        if (int(st["CapEff"], 16) | int(st["CapPrm"], 16)) & caps:
            out.append(int(task))
    return out


def _verify(keep: int) -> None:
    """Refuse to go on if the kernel left more than asked (a drop that silently failed)."""
    for task in os.listdir("/proc/self/task"):
        st = _status(f"self/task/{task}")
        for key, want in (("CapInh", 0), ("CapAmb", 0), ("CapPrm", keep), ("CapEff", keep)):
            if int(st[key], 16) != want:
                raise PrivilegeError(f"dropping privileges left {key} = {st[key]} (wanted {want:016x})")
        if st.get("NoNewPrivs") != "1":
            raise PrivilegeError("no-new-privs did not stick")
    problem = hardening_problem()   # per process (the mm's flag, the process's limit), not per thread
    if problem:
        raise PrivilegeError(problem)


def bind_error(proto: str, addr: str, port: int, err: OSError) -> str:
    """What a failed bind needs, for a startup error."""
    what = f"cannot bind {proto} {addr} port {port}: {err.strerror or err}"
    if err.errno == errno.EACCES and port < 1024:
        return (f"{what}: ports below 1024 need CAP_NET_BIND_SERVICE (run as root, add the capability: "
                "AmbientCapabilities=CAP_NET_BIND_SERVICE or --cap-add NET_BIND_SERVICE), or use a port >= 1024 "
                "(local_port)")
    if err.errno == errno.EADDRNOTAVAIL:
        return f"{what}: no interface on this host has that address"
    if err.errno == errno.EADDRINUSE:
        return f"{what}: another program (or another tunsec) uses it"
    return what


def hand_over(directory: Path, t: Target | None) -> None:
    """Give a directory written while privileged, and the regular files in it, to the user the process
    becomes; each through a descriptor (tunsec.safefs), what is left as it was is logged."""
    from tunsec.seqstate import StateError
    from tunsec.statedir import check_private, tunsecs

    try:   # one who may change it could delete a key's sequence state: refused, whoever would own it
        check_private(directory, t.uid if t else os.geteuid())
    except StateError as err:
        raise PrivilegeError(str(err)) from None
    if t is None or not has_cap(CAP_CHOWN):   # e.g. a container without CAP_CHOWN: the writable check says
        return
    if not root_only(directory.parent):
        with contextlib.suppress(OSError):
            st = os.lstat(directory)
            if stat.S_ISDIR(st.st_mode) and (st.st_uid, st.st_gid) == (t.uid, t.gid):
                return   # the user's already (prepared by hand): nothing to change
        # a parent swapped for a symlink would make root give away another directory's files
        log.warning("%s not handed over to %s: users other than root may change %s, so root changes no "
                    "ownership there; make it %s's by hand, or choose a state_dir in a directory only root "
                    "may change", directory, t.name, directory.parent, t.name)
        return
    try:
        why = _refusal(directory, t.uid)   # root's, else only root may add entries: no race with the give
        if why:
            raise PrivilegeError(f"cannot give {directory} (tunsec {{ state_dir }}) to {t.name}: {why}")
        skipped = give_dir(directory, t.uid, t.gid, tunsecs)
    except OSError as err:
        if err.errno != errno.ELOOP:
            raise
        log.warning("%s not handed over to %s: it is a symbolic link (name the directory itself)", directory, t.name)
        return
    if skipped:
        log.warning("in %s, not handed over to %s (only regular files with one link are): %s; %s cannot write "
                    "them", directory, t.name, ", ".join(skipped), t.name)


def _refusal(directory: Path, uid: int) -> str | None:
    """statedir.refusal of directory, opened without following a symbolic link (OSError ELOOP if it is one);
    None when it is uid's already: that user may rename or remove any entry in it now (lost+found on a
    mount, an administrator's README), nothing is given at its level, and give_dir gives only tunsec's
    names (review revroot F2)."""
    from tunsec.statedir import refusal

    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        return None if os.fstat(fd).st_uid == uid else refusal(fd, uid)
    finally:
        os.close(fd)


def check_config_files(cfg: Config) -> None:
    """As root: PrivilegeError unless each configuration file was read through the check (load_config with
    root_check: nobody but root may change the file, every directory on its path, a link on the way, checked
    before it was opened and compared with what was opened).  The file says where root creates directories
    and gives them away, and whom the processes run as (user = root): one the service user may write -- a
    control process taken over from the network -- would make it root at the next start.  Checking the
    paths again now would look at whatever the user put there since the read (review revroot F1)."""
    if os.geteuid() != 0 or not cfg.unchecked:
        return   # not root: the file decides nothing this user could not do itself
    raise PrivilegeError(f"refusing configuration file {cfg.unchecked[0]}: read without the check of who may "
                         "change it (load_config(..., root_check=True)); this is a bug in what started tunsec")


def config_refusal(name: str, why: str, fix: str, user: str | None) -> str:
    """The refusal of a configuration file root may not act on: why, the fix (commands naming the path at
    fault), and how the service user (tunsec { user }) reads the file once it is root's alone."""
    from tunsec.conf.tunsec_section import worker_user

    try:
        reader = worker_user(user)
    except LookupError:   # no such user here (`tunsec up` says so): no hint; nor a name from the file echoed
        reader = None
    grant = ""
    if reader:
        try:
            gid = pwd.getpwnam(reader).pw_gid
        except KeyError:
            gid = -1
        grant = f", then let {reader} (tunsec {{ user }}) read it: {read_grant(name, reader, gid)}"
    todo = (f"as root, {fix}" if fix else "make it a regular file of root's that stays in place") + (
        ", or move it to a directory only root may change" if fix and not fix.endswith(f" {name}") else "")
    return (f"refusing configuration file {name}: {why}; tunsec runs as root here and does what it says, so "
            f"nobody but root may change it or a directory on its path: {todo}{grant}")


def read_grant(file: str, user: str, gid: int) -> str:
    """The command that lets user (primary group gid) read file, which stays root's: through its group only
    when no one else is in it (a shared group such as nogroup would open the secrets to other daemons), else
    an ACL.  Never a chown: the file decides what root does at the next start."""
    try:
        group = grp.getgrgid(gid)
        own = group.gr_name == user and not group.gr_mem and all(
            p.pw_name == user for p in pwd.getpwall() if p.pw_gid == gid)
    except (KeyError, OverflowError):   # no such group (-1: no such user)
        own = False
    if own:
        return f"chgrp {user} {file}; chmod g+r {file}"
    return f"setfacl -m u:{user}:r {file}"


@dataclass(frozen=True)
class Plan:
    """What the control process does once set up: nothing (``user = root``), or become target
    (None: stay this user) with no capability but those it still uses."""

    drop: bool
    target: Target | None


def plan(user: str | None) -> Plan:
    """From tunsec { user = }: as root, the configured user (default tunsec, which must exist; root stays
    root); not as root, this user unless another is named, which needs CAP_SETUID/CAP_SETGID."""
    from tunsec.conf.tunsec_section import worker_user

    me = os.geteuid()
    if me == 0:
        try:
            name = worker_user(user)
        except LookupError as err:
            raise PrivilegeError(str(err)) from None
        if name is None:
            return Plan(False, None)
        t = target_for(name)
    else:
        t = target_for(user) if user and user != "root" else None
        if user == "root":
            raise PrivilegeError(f"tunsec {{ user = root }} but tunsec runs as uid {me}: start it as root, or "
                                 "remove the line")
    check_can_switch(t)
    return Plan(True, t)


def writable_error(what: str, path: Path, t: Target | None) -> str:
    who = t.name if t else _me()
    return (f"{what} {path} is not writable by {who}: make it (and every directory above it searchable) "
            f"writable by that user (as root: install -d -o {who} {path}), or choose another path in tunsec {{ }}")


def _me() -> str:
    uid = os.geteuid()
    return pwd.getpwuid(uid).pw_name if _known_uid(uid) else str(uid)


def give_up(p: Plan, keep: int, hand: list[Path], writable: list[tuple[str, Path]]) -> str | None:
    """The control process's drop: hand over the directories it writes in later, drop, and prove it can still write
    there (a startup error now rather than a lost sequence number reservation later)."""
    if not p.drop:
        return None
    # deepest first: root without CAP_DAC_OVERRIDE (a container) cannot enter a directory once it is the user's
    for directory in sorted(hand, key=lambda x: len(x.parts), reverse=True):
        hand_over(directory, p.target)
    line = drop(p.target, keep & get_caps().permitted)
    for what, path in writable:
        if not os.access(path, os.W_OK | os.X_OK):
            raise PrivilegeError(writable_error(what, path, p.target))
    return line


def spawn_problem() -> str | None:
    """Why this (dropped) process could not start a new worker: the interpreter or the tunsec
    package out of its reach (a Python under /root, say); None when it can."""
    import sys

    import tunsec

    for path, mode, what in ((sys.executable, os.X_OK, "the Python interpreter"),
                             (os.path.dirname(tunsec.__file__), os.R_OK | os.X_OK, "the tunsec package")):
        if not os.access(path, mode):
            return (f"{what} {path} is not reachable by {_me()}; install tunsec where that user can run it "
                    "(a system Python or a venv outside /root)")
    return None


def give_up_control(p: Plan, settings: TunsecSettings, manual: bool,
                    own_routes_on_kept_tun: bool, virtual_ips: bool = False, block_record: bool = False) -> None:
    """The control process, once set up (TUN, sockets, routes, control socket, first worker), before
    any IKE is read: the user, with only the capabilities it still uses.  Routes follow the configured
    selectors and are installed by then, so that is none; except CAP_NET_ADMIN to remove at exit the
    routes it put on a TUN that outlives it (one it created takes its routes with it), and to put on
    the TUN (and take off) the virtual IPs a gateway assigns at run time (a connection with ``vips``).  The
    daemon passes its blocks held now as own_routes_on_kept_tun too: kept for those alone, netadmin.py gives
    CAP_NET_ADMIN up with the last of them."""
    hand: list[Path] = []   # the control socket is the user's from its bind (tunsec.ctlsocket)
    writable: list[tuple[str, Path]] = []
    state = Path(settings.state_dir)
    if manual or block_record:   # sequence number reservations, the record of prohibit routes: written from now on
        hand.append(state)
    if manual:   # the record alone does without (BlockRecord.usable_after_drop says so)
        writable.append(("state_dir", state))
    keep = mask(CAP_NET_ADMIN) if own_routes_on_kept_tun or virtual_ips else 0
    line = give_up(p, keep, hand, writable)
    if line:
        log.info("control process %s", line)
        restart = spawn_problem()
        if restart:
            log.warning("a worker that dies cannot be restarted: %s", restart)
