"""Review revlate8 F1: a worker that keeps uid 0 (``user = root``) still owns root's files.

h/fixwatch made ``worker.serve`` call ``privilege.drop`` whatever the user: a worker of ``user = root``
keeps uid 0 with every capability set empty and no-new-privs, and docs/privileges.md says that once
sandboxed "one taken over cannot use even what its own uid may".  But the rights of a file's owner
need no capability: chmod, a POSIX ACL (setxattr system.posix_acl_access) and utimes are the
owner's, and uid 0 owns /etc, /usr/bin and the configuration and keys.  Landlock does not restrict
them (its access rights cover opening, creating, removing, renaming, truncating and device ioctls;
chmod, chown, setxattr and utime are left to the caller: Documentation/userspace-api/landlock.rst),
and the seccomp deny-list (csrc/sandbox.c) does not name them.  So a worker taken over through its
packet parsing can set the set-user-ID bit on a root-owned program (any local user then runs it as
root), make /etc/shadow or the keys world-writable or -readable, or take every permission off the
libraries (the host's other users can run nothing) -- what the uid change of ``worker_user`` exists
to prevent ("the worker, which parses every packet, would own root's files", docs/privileges.md).

The same holds, on the service user's files, for a worker that runs as the control process's user
(no tunsec-dp on the host): it may make the credentials that user owns world-readable.

Real parts: the real worker (tunsec.dataplane.worker.main: its privilege drop and its sandbox) started
as root as the daemon starts it for ``user = root`` (no --user); the probe runs where an attacker
would, in the worker's packet thread once the sandbox is on (tests/dataplane/test_sandbox.py's way).
The target is a root-owned 0600 file outside the worker's Landlock paths."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from reachable import scratch_dir
from test_sandbox import WORKER as SANDBOX_WORKER

from tunsec.dataplane import sandbox
from tunsec.dataplane.client import WorkerFds, worker_args

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs the worker as root (user = root)")

SRC = str(Path(sandbox.__file__).resolve().parents[2])

# the worker, its packet thread's target wrapped: what the probe could do goes to fd PROBE_FD as JSON
WORKER = """import json, os, sys
sys.path.insert(0, sys.argv.pop(1))
probe_fd, target = int(sys.argv.pop(1)), sys.argv.pop(1)
from tunsec.dataplane import fastpath, worker

def attempt(what):
    try:
        what()
    except OSError as err:
        return type(err).__name__
    return "done"

def acl_other_rw():   # user::rw-, group::---, other::rw- (POSIX ACL xattr version 2)
    entries = [(0x01, 6, 0xFFFFFFFF), (0x04, 0, 0xFFFFFFFF), (0x20, 6, 0xFFFFFFFF)]
    blob = (2).to_bytes(4, "little") + b"".join(
        t.to_bytes(2, "little") + p.to_bytes(2, "little") + i.to_bytes(4, "little") for t, p, i in entries)
    os.setxattr(target, "system.posix_acl_access", blob)

def probe():
    found = {
        "read": attempt(lambda: open(target).close()),          # Landlock: refused
        "chmod_setuid": attempt(lambda: os.chmod(target, 0o4755)),
        "acl": attempt(acl_other_rw),
        "utime": attempt(lambda: os.utime(target, (0, 0))),
    }
    os.write(probe_fd, json.dumps(found).encode())
    os.close(probe_fd)

""" + SANDBOX_WORKER[SANDBOX_WORKER.index("real_run = "):]   # test_sandbox.py's wrap of the packet thread


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, v in (line.split(":", 1) for line in lines if ":" in line)}


def run_root_worker(target: Path) -> dict[str, Any]:
    """The real worker as ``user = root`` starts it (no --user), a datagram socket standing in for
    its TUN; what its probe did, and its /proc status while it ran."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    tun, tun_peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    r, w = os.pipe()
    args = worker_args(WorkerFds(tun.fileno(), udp.fileno()), 1400, 30, "info", "text")
    argv = [sys.executable, "-I", "-c", WORKER, SRC, str(w), str(target), "--pipe-fd", str(theirs.fileno()), *args]
    proc = subprocess.Popen(argv, pass_fds=[theirs.fileno(), tun.fileno(), udp.fileno(), w],
                            stderr=subprocess.PIPE, cwd="/")
    theirs.close()
    os.close(w)
    try:
        with os.fdopen(r, "rb") as probe:
            found = json.loads(probe.read() or b"{}")
        status = _status(proc.pid)
    finally:
        ours.close()   # the pipe's end: the worker stops
        _, err = proc.communicate(timeout=60)
        for s in (tun, tun_peer, udp):
            s.close()
    assert found, err.decode()
    return {"probe": found, "status": status, "code": proc.returncode, "log": err.decode()}


def test_a_root_worker_taken_over_cannot_change_root_owned_files() -> None:
    with scratch_dir("revlate8-rootfile-") as d:
        target = d / "shadow"
        target.write_text("root:$6$hash:19000:0:99999:7:::\n")
        os.chown(target, 0, 0)
        target.chmod(0o600)
        out = run_root_worker(target)
        mode = stat.S_IMODE(target.stat().st_mode)
        acl = os.listxattr(target)
    probe, status = out["probe"], out["status"]
    # the worker is as fixwatch left it: uid 0, no capability, sandboxed
    assert status["Uid"].split() == ["0"] * 4, status["Uid"]
    assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0, status
    assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2", status
    assert out["code"] == 0, out["log"]
    if sandbox.landlock_abi():
        assert probe["read"] == "PermissionError", probe   # Landlock keeps the file's contents out ...
    # ... but not its owner's rights: a set-user-ID root program, an ACL opening it to everyone
    assert probe["chmod_setuid"] == "PermissionError" and mode == 0o600, (
        f"the root worker, sandboxed and without capabilities, changed a root-owned 0600 file to "
        f"{mode:04o} (set-user-ID root if it were a program): {probe}")
    assert probe["acl"] == "PermissionError" and "system.posix_acl_access" not in acl, (
        f"the root worker gave everyone read and write on a root-owned file through an ACL: {probe}")
    assert probe["utime"] == "PermissionError", f"the root worker reset a root-owned file's times: {probe}"
