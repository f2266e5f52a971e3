"""The CLI's control socket as root (ctlpeer.py): the path is read only from a configuration nobody but root
may change, and root's request goes only to a server running as root or as the service user (SO_PEERCRED),
never to one another user put in the socket's place.  Real files, owners and a server process of another uid
(the tests run as root)."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from reachable import scratch_dir

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/bin/python3"),
                                reason="needs root (owners, a server of another uid) and a system Python")
SERVICE, OTHER = "tunsec", "tunsec-dp"
SYSTEM_PYTHON = "/usr/bin/python3"   # every user's (this one may be under /root): the server needs only the stdlib
ANSWER = {"ok": True, "message": "reloaded by the fake"}

SERVER = """import socket, sys
srv = socket.socket(socket.AF_UNIX)
srv.bind(sys.argv[1])
srv.listen(4)
open(sys.argv[2], "w").close()
while True:
    conn, _ = srv.accept()
    with conn:
        try:
            got = conn.recv(4096)
            with open(sys.argv[2], "ab") as f:
                f.write(got)
            conn.sendall(sys.argv[3].encode() + b"\\n")
        except OSError:
            pass   # the client left
"""


@pytest.fixture
def base() -> Iterator[Path]:
    with scratch_dir("fixrootfiles-ctl-") as d:
        yield d


def tunsec(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tunsec", *args], capture_output=True, text=True, timeout=60)


Serve = Callable[[str], tuple[Path, Path]]


@pytest.fixture
def serve(base: Path) -> Iterator[Serve]:
    """serve(user) -> (socket path, the file of what it was sent): a server process running as user."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(user: str) -> tuple[Path, Path]:
        pw = pwd.getpwnam(user)
        run = base / f"run-{user}"
        run.mkdir()
        os.chown(run, pw.pw_uid, pw.pw_gid)
        sock, got = run / "t.sock", run / "got"
        argv = [SYSTEM_PYTHON, "-c", SERVER, str(sock), str(got), json.dumps(ANSWER)]
        procs.append(subprocess.Popen(argv, user=pw.pw_uid, group=pw.pw_gid, extra_groups=[]))
        for _ in range(500):
            if got.exists():
                return sock, got
            time.sleep(0.01)
        raise AssertionError("the server did not start")

    yield start
    for p in procs:
        p.kill()
        p.wait()


def config(base: Path, sock: Path, owner: str = "root") -> Path:
    conf = base / "etc" / "tunsec.conf"
    conf.parent.mkdir(exist_ok=True)
    conf.write_text(f"tunsec {{ control_socket = {sock} }}\n")
    os.chown(conf, pwd.getpwnam(owner).pw_uid, -1)
    return conf


def test_root_reads_the_socket_path_only_from_a_file_only_root_may_change(base: Path, serve: Serve) -> None:
    sock, got = serve(SERVICE)
    conf = config(base, sock, owner=SERVICE)
    r = tunsec("reload", "-c", str(conf))
    assert r.returncode == 1, r
    assert (f"tunsec: not reading the control socket's path from {conf}: {conf} is owned by {SERVICE}" in r.stderr
            and f"as root, chown root {conf}; chmod go-w {conf}, or name the socket with --socket PATH" in r.stderr), \
        r.stderr
    assert got.read_bytes() == b""   # never connected
    os.chown(conf, 0, -1)
    r = tunsec("reload", "-c", str(conf))   # root's now: the service user's server is tunsec's own
    assert r.returncode == 0 and r.stdout == "reloaded by the fake\n", r
    assert json.loads(got.read_bytes()) == {"cmd": "reload"}


def test_root_sends_nothing_to_a_server_of_another_user(base: Path, serve: Serve) -> None:
    sock, got = serve(OTHER)
    conf = config(base, sock)
    for args in (("status", "-c", str(conf)), ("reload", "--socket", str(sock)),
                 ("terminate", "--ike", "x", "-c", str(conf))):
        r = tunsec(*args)
        assert r.returncode == 1, r
        uid, service = pwd.getpwnam(OTHER).pw_uid, pwd.getpwnam(SERVICE).pw_uid
        assert (f"tunsec: {sock} is served by a process of {OTHER} (uid {uid}), not by root or {SERVICE} "
                f"(uid {service}) (tunsec {{ user }}): not sending it root's request" in r.stderr), r.stderr
    assert got.read_bytes() == b""


def test_a_refused_file_with_an_explicit_socket_lends_it_no_user(base: Path, serve: Serve) -> None:
    """--socket names the socket; the refused file's user = tunsec-dp is not taken to vouch for that server."""
    sock, got = serve(OTHER)
    conf = config(base, sock, owner=OTHER)
    conf.write_text(f"tunsec {{ control_socket = {sock}\n user = {OTHER} }}\n")
    r = tunsec("reload", "-c", str(conf), "--socket", str(sock))
    assert r.returncode == 1 and "not sending it root's request" in r.stderr, r.stderr
    assert got.read_bytes() == b""


def test_a_config_that_does_not_exist_leaves_the_default_socket_as_before(base: Path) -> None:
    """Nothing is read from it, so nothing to refuse: the default socket (here under RUNTIME_DIRECTORY)."""
    r = subprocess.run([sys.executable, "-m", "tunsec", "status", "-c", str(base / "missing.conf")],
                       capture_output=True, text=True, timeout=60, env={**os.environ, "RUNTIME_DIRECTORY": str(base)})
    assert r.returncode == 1 and r.stderr.startswith(f"tunsec: no running tunsec on {base}/tunsec.sock"), r.stderr


def test_with_user_root_only_roots_server_is_asked(base: Path, serve: Serve) -> None:
    sock, got = serve(SERVICE)
    conf = config(base, sock)
    conf.write_text(f"tunsec {{ control_socket = {sock}\n user = root }}\n")
    r = tunsec("status", "-c", str(conf))
    assert r.returncode == 1 and f"is served by a process of {SERVICE} (uid {pwd.getpwnam(SERVICE).pw_uid}), not by " \
        "root: not sending it root's request" in r.stderr, r.stderr
    assert got.read_bytes() == b""
