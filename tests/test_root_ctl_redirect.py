"""Root's CLI request and a control socket path another user may re-point (ctlpeer.py): a server of root's
counts only at a name nobody but root may have put there.  Review revrootfiles F3; failed before its fix.

The shipped unit (contrib/systemd/tunsec.service: User=tunsec, RuntimeDirectory=tunsec) makes the control
socket's directory /run/tunsec the service user's.  As root the CLI reads the path from a file only root may
change and accepts a server whose SO_PEERCRED uid is root or the service user.  But the service user (taken
over, or an updown script, which runs as it) may put a symbolic link (with fs.protected_hardlinks=0 a hard
link) at the socket's name in its own directory: root then connected to any other root daemon's socket, whose
uid 0 passed the check, and wrote root's request there: what ctlpeer's docstring says the file check is for
("it may name any socket root may connect to (another daemon's, root's alone), and root would write its
request there").  The same holds for a default path under an XDG_RUNTIME_DIR that root inherited (`su`).

Real parts: a "root daemon" process listening as root in a directory only root may change, the service
user's directory, the link made by a process of the service user, `python -m tunsec reload` as root."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from reachable import scratch_dir
from test_root_ctl_client import SERVER  # the fake server: records what it is sent, answers

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/bin/python3"),
                                reason="needs root (owners, a process of the service user) and a system Python")
SERVICE = "tunsec"
SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture
def base() -> Iterator[Path]:
    with scratch_dir("revrootfiles-ctl-") as d:
        yield d


@pytest.fixture
def root_daemon(base: Path) -> Iterator[tuple[Path, Path]]:
    """(socket, what it was sent): another daemon of root's, in a directory only root may change."""
    run = base / "other-daemon"
    run.mkdir(mode=0o755)
    sock, got = run / "d.sock", run / "got"
    answer = '{"ok": true, "message": "answered by another root daemon"}'
    proc = subprocess.Popen([SYSTEM_PYTHON, "-c", SERVER, str(sock), str(got), answer])   # as root
    try:
        for _ in range(1000):
            if got.exists():
                break
            time.sleep(0.01)
        else:
            raise AssertionError("the root daemon did not start")
        yield sock, got
    finally:
        proc.kill()
        proc.wait()


def as_service_user(code: str, *args: str) -> None:
    """Run code as the service user (what a taken-over tunsec or an updown script can do)."""
    pw = pwd.getpwnam(SERVICE)
    subprocess.run([SYSTEM_PYTHON, "-c", code, *args], user=pw.pw_uid, group=pw.pw_gid, extra_groups=[],
                   check=True, timeout=60)


def service_run_dir(base: Path) -> Path:
    """/run/tunsec as the shipped unit makes it: the service user's, 0750."""
    pw = pwd.getpwnam(SERVICE)
    run = base / "run-tunsec"
    run.mkdir(mode=0o750)
    os.chown(run, pw.pw_uid, pw.pw_gid)
    return run


def root_config(base: Path, sock: Path) -> Path:
    conf = base / "etc" / "tunsec.conf"
    conf.parent.mkdir(mode=0o755)
    conf.write_text(f"tunsec {{ control_socket = {sock} }}\n")   # root's, 0644: passes the root check
    return conf


@pytest.mark.parametrize("how", ["config", "default"])
def test_root_sends_nothing_through_a_name_the_service_user_repointed(base: Path, root_daemon: tuple[Path, Path],
                                                                      how: str) -> None:
    """config: `tunsec reload -c FILE`, FILE root's naming the socket in the service user's directory;
    default: plain `tunsec reload`, the default socket in the service user's /run/tunsec (here placed with
    RUNTIME_DIRECTORY, not to touch the host's /run/tunsec).  A symbolic link; with fs.protected_hardlinks=0 a
    hard link does the same (not made here: this host has 1, which lets a user hard-link only regular files)."""
    target, got = root_daemon
    run = service_run_dir(base)
    name = run / "tunsec.sock"   # no tunsec running: the service user made the name
    as_service_user("import os, sys; os.symlink(sys.argv[1], sys.argv[2])", str(target), str(name))
    args, env = ["reload"], dict(os.environ)
    if how == "config":
        args += ["-c", str(root_config(base, name))]
    else:
        env["RUNTIME_DIRECTORY"] = str(run)
    r = subprocess.run([sys.executable, "-m", "tunsec", *args], capture_output=True, text=True, timeout=60, env=env)
    sent = got.read_bytes()
    assert sent == b"", f"root wrote {sent!r} to another root daemon's socket {target} through {name}: {r}"
    assert r.returncode == 1, r
