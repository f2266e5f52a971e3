"""The control socket's file (made without a chmod/chown through a path another user may
change) and who may run which command through it (SO_PEERCRED).  Run as root, in this process:
the daemon's own code path binds the socket, as `tunsec up` does before it drops privilege."""

from __future__ import annotations

import asyncio
import os
import pwd
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from reachable import scratch_dir

from tunsec import ctlsocket, privilege
from tunsec.cli import _ask
from tunsec.conf.config import load_config
from tunsec.daemon import Daemon

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to bind as root and act as the user")

USER = "tunsec"


@pytest.fixture
def base() -> Iterator[Path]:
    """A scratch directory the service user can reach (pytest's own is root's alone)."""
    with scratch_dir("tunsec-ctl-") as d:
        yield d


def daemon_for(sock: Path, conf_dir: Path) -> Daemon:
    conf = conf_dir / "t.conf"
    conf.write_text(f"tunsec {{\n  control_socket = {sock}\n}}\n")
    d = Daemon(load_config(str(conf)))
    d.privilege = privilege.Plan(True, privilege.target_for(USER))   # root, about to become the user
    return d


def open_and_close(d: Daemon) -> None:
    async def once() -> None:
        await d._open_control_socket()
        assert d._server is not None
        d._server.close()
    asyncio.run(once())


def swap_after_bind(monkeypatch: pytest.MonkeyPatch, sock: Path, victim: Path) -> list[str]:
    """The attacker's move, made deterministic: at the first of these calls after the socket file
    exists, it becomes a symlink to victim (as a same-uid process racing the daemon would do)."""
    swapped: list[str] = []
    lstat, symlink, rename = os.lstat, os.symlink, os.rename

    def is_socket() -> bool:
        try:
            return stat.S_ISSOCK(lstat(sock).st_mode)
        except FileNotFoundError:
            return False

    def hook(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if not swapped and is_socket():
                tmp = sock.with_name("swap")
                symlink(victim, tmp)
                rename(tmp, sock)
                swapped.append(name)
            return real(*args, **kwargs)
        return call

    for name in ("umask", "chmod", "chown", "lchown", "stat", "lstat", "setegid", "seteuid", "setgroups"):
        monkeypatch.setattr(os, name, hook(name, getattr(os, name)))
    return swapped


@pytest.mark.parametrize("dir_owner", [USER, "root"])
def test_a_symlink_swapped_in_after_the_bind_changes_no_file(base: Path, dir_owner: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A victim standing for /etc/tunsec/tunsec.conf (root:tunsec 0640); the socket directory the
    user's (after `tunsec prepare`) or root's.  On main, root's chmod 0660 followed the symlink."""
    pw = pwd.getpwnam(USER)
    run = base / "run"
    run.mkdir(mode=0o750)
    os.chown(run, pwd.getpwnam(dir_owner).pw_uid, pw.pw_gid)
    victim = base / "victim.conf"
    victim.write_text("secrets\n")
    os.chown(victim, 0, pw.pw_gid)
    victim.chmod(0o640)
    sock = run / "tunsec.sock"
    d = daemon_for(sock, base)
    swapped = swap_after_bind(monkeypatch, sock, victim)
    open_and_close(d)
    monkeypatch.undo()
    assert swapped, "the hook never ran: the test proves nothing"
    st = os.stat(victim)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 0, pw.pw_gid)


@pytest.mark.parametrize("dir_owner", [USER, "root"])
def test_the_socket_is_the_users_and_0660(base: Path, dir_owner: str) -> None:
    pw = pwd.getpwnam(USER)
    run = base / "run"
    run.mkdir(mode=0o750)
    os.chown(run, pwd.getpwnam(dir_owner).pw_uid, pw.pw_gid)
    sock = run / "tunsec.sock"
    open_and_close(daemon_for(sock, base))
    st = os.lstat(sock)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
    assert (st.st_uid, st.st_gid) == (pw.pw_uid, pw.pw_gid)
    # acting as the user for the bind ended: root again, with every capability it had
    assert os.geteuid() == 0 and os.getegid() == 0
    caps = privilege.get_caps()
    assert caps.effective == caps.permitted != 0


def claimed_under_the_units_umask(sock: Path, base: Path) -> None:
    """The daemon claims (and closes) its control socket under contrib/systemd/tunsec.service's UMask=0077."""
    d = daemon_for(sock, base)
    old = os.umask(0o077)
    try:
        d._claim_control_socket()
    finally:
        os.umask(old)
    open_and_close(d)


def test_a_directory_tunsec_makes_is_roots_and_the_users_group(base: Path) -> None:
    """The user's processes (the worker, updown scripts) reach the socket but cannot replace it; also
    under the umask contrib/systemd/tunsec.service sets (UMask=0077), which took the group's access."""
    sock = base / "new" / "tunsec.sock"
    claimed_under_the_units_umask(sock, base)
    st = os.stat(sock.parent)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o750, 0, pwd.getpwnam(USER).pw_gid)
    assert os.lstat(sock).st_uid == pwd.getpwnam(USER).pw_uid


def test_every_directory_level_tunsec_makes_is_roots_and_the_users_group(base: Path) -> None:
    """A control socket two levels below an existing directory: each level made is 0750 with the
    user's group (review AC F3: os.makedirs made the parents 0700 root:root under UMask=0077, so the
    user's processes could not reach the socket)."""
    sock = base / "one" / "two" / "tunsec.sock"
    claimed_under_the_units_umask(sock, base)
    for level in (base / "one", base / "one" / "two"):
        st = os.stat(level)
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o750, 0, pwd.getpwnam(USER).pw_gid), level


def test_a_directory_the_user_may_not_write_is_a_startup_error(base: Path) -> None:
    """root's, but writable by others (so root may not bind there itself): the bind runs as the user."""
    other = base / "other"
    other.mkdir()
    os.chown(other, pwd.getpwnam("daemon").pw_uid, 0)
    other.chmod(0o775)
    d = daemon_for(other / "tunsec.sock", base)
    with pytest.raises(Exception) as err:
        open_and_close(d)
    assert f"control socket directory {other} is not writable by {USER}" in str(err.value)
    assert not (other / "tunsec.sock").exists()


GATE = ctlsocket.Gate(own_uid=lambda: 999, worker_pid=lambda: 4242)


@pytest.mark.parametrize("cmd", ["reload", "terminate", "initiate", "anything-else"])
def test_the_gate_lets_only_root_and_the_daemons_uid_change_state(cmd: str) -> None:
    assert GATE.refusal(cmd, ctlsocket.Peer(100, 0, 0)) is None
    assert GATE.refusal(cmd, ctlsocket.Peer(100, 999, 5)) is None
    refused = GATE.refusal(cmd, ctlsocket.Peer(100, 1000, 999))
    assert refused is not None and refused.startswith("permission denied") and "status only" in refused
    worker = GATE.refusal(cmd, ctlsocket.Peer(4242, 999, 999))   # the worker runs as the daemon's uid
    assert worker is not None and "dataplane worker" in worker
    for uid in (0, 999, 1000):
        assert GATE.refusal("status", ctlsocket.Peer(100, uid, 0)) is None


def test_a_worker_uid_of_its_own_is_refused_whatever_its_pid() -> None:
    gate = ctlsocket.Gate(own_uid=lambda: 999, worker_pid=lambda: 4242, worker_uid=lambda: 998)
    assert gate.refusal("reload", ctlsocket.Peer(7, 998, 998)) is not None
    assert gate.refusal("reload", ctlsocket.Peer(7, 999, 999)) is None
    assert gate.refusal("status", ctlsocket.Peer(7, 998, 998)) is None


def test_a_client_refused_busy_before_its_request_was_read_gets_the_busy_answer(base: Path) -> None:
    """Every slot root may take is held: the daemon answers the next connection busy and closes it
    without reading.  A request too large for the socket's buffers cannot all be sent before that
    close, so the send fails (EPIPE or ECONNRESET): the client still reads and returns the busy answer."""
    sock = base / "ctl.sock"
    d = daemon_for(sock, base)

    async def body() -> None:
        await d._open_control_socket()
        await d._start_serving()   # what _start_worker does once privilege is given up
        assert d._server is not None
        held: list[asyncio.StreamWriter] = []
        try:
            for _ in range(ctlsocket.TOTAL + ctlsocket.ROOT_RESERVE):
                held.append((await asyncio.open_unix_connection(str(sock)))[1])
            for _ in range(1000):
                if d.ctl_slots.held.total() == len(held):
                    break
                await asyncio.sleep(0.01)
            assert d.ctl_slots.held.total() == len(held)
            answer = await asyncio.to_thread(_ask, str(sock), {"cmd": "status", "pad": "x" * (4 << 20)})
            assert answer == {"ok": False, "error": f"busy: {len(held)} control connections open; try again"}
            assert d.ctl_counts.busy == 1
        finally:
            for w in held:
                w.close()
            d._server.close()

    asyncio.run(body())
