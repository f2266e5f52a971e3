"""The worker's sandbox, put on once it is set up and before its loop threads start.

The worker parses every packet from the network, so it is the process most likely to be
taken over.  Its own uid, no capabilities and no-new-privs (tunsec.privilege) still let
such a worker read whatever that uid may (world-readable files, /proc), connect sockets,
execute programs and signal its spawner (the same uid).  Once its descriptors (TUN, UDP
sockets, pipe, eventfd) are open and OpenSSL has loaded its configuration (the cipher
self-test), it needs no new file but the Python modules it imports late, so:

- Landlock: read-only access to the directories on sys.path (the standard library, the
  site-packages, tunsec's own package; an exception's traceback reads source lines there
  too) and nothing else; no TCP bind or connect (ABI 4); no signal to a process outside
  its domain, no connect to an abstract unix socket made outside it (ABI 6).  Descriptors
  opened before keep their rights.
- seccomp (csrc/sandbox.c): no execve, fork, ptrace, process_vm_*, namespaces, mounts, BPF, perf,
  keyrings, io_uring, new sockets, signals other than to itself; nothing set on the descriptors it
  shares with the spawner (setsockopt, connect, shutdown, F_SETFL, ioctls but a few), no limits or
  priorities of another process.

Landlock applies to the calling thread and the threads it starts after, never to those
running already (ABI 7 has no way to sync them): apply() refuses to run with more than one
thread.  The seccomp filter goes on every thread anyway (TSYNC).

A kernel without Landlock (or an older ABI) or a build without the filter loses those
parts, not the worker: a VPN must run on older kernels.  What is missing is said once at
start (Outcome.line()); ``tunsec { worker_sandbox = no }`` leaves it all off.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

# imported now, not once confined: loading it opens libcrypto where Landlock allows no read
from tunsec.dataplane._fastpath import lib

log = logging.getLogger("tunsec.sandbox")

# the generic syscall numbers (the same on x86_64 and aarch64)
_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

# linux/landlock.h, LANDLOCK_ACCESS_FS_*: bits 0..12 since ABI 1
FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
FS_REMOVE_FILE, FS_MAKE_REG = 1 << 5, 1 << 8
FS_TRUNCATE = 1 << 14
_FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1, 5: (1 << 16) - 1}
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1

_READ = FS_READ_FILE | FS_READ_DIR
_READ_WRITE = _READ | FS_WRITE_FILE | FS_MAKE_REG | FS_REMOVE_FILE | FS_TRUNCATE
_FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE   # all a rule on a file may hold


GAUGE_LANDLOCK, GAUGE_SECCOMP = 1, 2


class SandboxError(Exception):
    """The sandbox could not be put on where the kernel has it (a bug, or a thread too early)."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1   # __attribute__((packed)) in linux/landlock.h
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


@dataclass(frozen=True)
class Outcome:
    """What the worker runs under: the parts put on, and those this kernel or build lacks."""

    landlock_abi: int = 0
    applied: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()

    @property
    def sandboxed(self) -> bool:
        return bool(self.applied)

    @property
    def gauge(self) -> int:
        """The worker's ``sandbox`` gauge (tunsec status, metrics): LANDLOCK | SECCOMP as put on."""
        landlock = any(part.startswith("landlock") for part in self.applied)
        return (GAUGE_LANDLOCK if landlock else 0) | (GAUGE_SECCOMP if "seccomp" in self.applied else 0)

    def line(self) -> str:
        if not self.applied and not self.missing:
            return "sandbox off (tunsec { worker_sandbox = no })"
        text = f"sandbox: {', '.join(self.applied) or 'none'}"
        return text + (f"; missing: {', '.join(self.missing)}" if self.missing else "")


@dataclass
class _Parts:
    applied: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 without Landlock (not built, not enabled at boot, or
    refused by a container's seccomp profile)."""
    got = int(_libc().syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION)))
    if got < 0:
        err = ctypes.get_errno()
        # EPERM: a container's own seccomp profile that does not know the call
        if err in (errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
            return 0
        raise SandboxError(f"landlock: cannot read the ABI version: {os.strerror(err)}")
    return got


def _call(name: str, number: int, *args: object) -> int:
    got = int(_libc().syscall(number, *args))
    if got < 0:
        err = ctypes.get_errno()
        raise SandboxError(f"landlock: {name}: {os.strerror(err)}")
    return got


def _add_path(ruleset: int, path: str, access: int, handled: int) -> bool:
    """A rule granting access beneath path (or to the file path); False if it does not exist."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        allowed = access & handled
        if not os.path.isdir(path):
            allowed &= _FILE_RIGHTS
        attr = _PathBeneathAttr(allowed, fd)
        _call(f"rule for {path}", _SYS_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH),
              ctypes.byref(attr), ctypes.c_uint32(0))
    finally:
        os.close(fd)
    return True


def _landlock(abi: int, read_only: Sequence[str], read_write: Sequence[str], parts: _Parts) -> None:
    handled_fs = _FS_BY_ABI.get(abi, _FS_BY_ABI[5])
    attr = _RulesetAttr(handled_fs, 0, 0)
    if abi >= 4:
        attr.handled_access_net = NET_BIND_TCP | NET_CONNECT_TCP
    if abi >= 6:
        attr.scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
    ruleset = _call("create ruleset", _SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)),
                    ctypes.c_uint32(0))
    try:
        for path in read_only:
            _add_path(ruleset, path, _READ, handled_fs)
        for path in read_write:
            _add_path(ruleset, path, _READ_WRITE, handled_fs)
        _call("restrict self", _SYS_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0))
    finally:
        os.close(ruleset)
    limits = ["files read-only under the Python path"]
    limits += ["no TCP"] if abi >= 4 else []
    limits += ["signals and abstract sockets scoped"] if abi >= 6 else []
    parts.applied.append(f"landlock ABI {abi} ({', '.join(limits)})")
    if abi < 4:
        parts.missing.append(f"landlock TCP rules (ABI 4, this kernel has {abi})")
    if abi < 6:
        parts.missing.append(f"landlock signal and abstract socket scoping (ABI 6, this kernel has {abi})")


def refuse_io_uring() -> int:
    """Before the event loop exists: no io_uring ring (libuv makes one for epoll_ctl batching unless
    io_uring_setup fails; the filter apply() installs later denies its use).  0 or -errno."""
    return int(lib.ts_sandbox_no_io_uring())


def _seccomp(parts: _Parts, early: int) -> None:
    # the early filter failed: the kernel or build takes neither, and a ring libuv made meanwhile
    # must stay usable
    rc = early or int(lib.ts_sandbox_seccomp(os.getpid()))
    if rc == -errno.ENOSYS:
        parts.missing.append("seccomp (not built for this architecture)")
    elif rc == -errno.EINVAL:
        parts.missing.append("seccomp (this kernel refused the filter or TSYNC)")
    elif rc != 0:
        raise SandboxError(f"seccomp: {os.strerror(-rc)}")
    else:
        parts.applied.append("seccomp")


def python_path() -> list[str]:
    """What late imports read: sys.path (tunsec's package is on it, put there by the worker's boot)."""
    return [os.path.abspath(p) for p in sys.path if p]


def apply(read_only: Sequence[str], read_write: Sequence[str] = (), early: int = 0) -> Outcome:
    """Landlock (read_only, read_write: the only paths left open) and the seccomp filter, on this
    process; call with one thread running, after refuse_io_uring() (early: what it returned).
    SandboxError if a part the kernel has fails."""
    threads = os.listdir("/proc/self/task")
    if len(threads) != 1:
        raise SandboxError(f"sandboxing with {len(threads)} threads running (Landlock is per thread); this is a "
                           "bug in tunsec")
    if int(_libc().prctl(_PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), ctypes.c_ulong(0), ctypes.c_ulong(0),
                         ctypes.c_ulong(0))) != 0:
        raise SandboxError(f"no-new-privs: {os.strerror(ctypes.get_errno())}")
    parts = _Parts()
    abi = landlock_abi()
    if abi:
        _landlock(abi, read_only, read_write, parts)
    else:
        parts.missing.append("landlock (this kernel has none, it is not enabled (lsm=landlock), or a container "
                             "refuses it)")
    _seccomp(parts, early)
    return Outcome(abi, tuple(parts.applied), tuple(parts.missing))
