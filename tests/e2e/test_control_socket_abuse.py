"""A running tunsec's control socket against the clients anyone in its group may be (review of
2026-12-03, item 3): an overlong or deeply nested request gets a clear error and no traceback;
clients of six uids that hold connections (idle, or asking for a status answer bigger than the
socket's buffers and never reading it) hold at most ctlsocket.TOTAL of the daemon's descriptors,
at most PER_UID each, while root's status and reload still work; the deadline then closes them."""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest
from conftest import python_argv
from control import ask, log_size, wait_up

from tunsec import ctlsocket
from tunsec.bench.netns import TwoHosts, wait_until
from tunsec.statedir import init_state_dir

IDLE, ASKING = 3, 5                  # each uid's connections: idle ones first, then status requests
UIDS = range(61001, 61007)           # six uids: more than TOTAL // PER_UID
TUNNELS = 100                        # with their policies: a status answer bigger than the socket's buffers


def config(topo: TwoHosts, sock: Path, state: Path) -> str:
    return f"""tunsec {{
  tun = tsctl0
  control_socket = {sock}
  state_dir = {state}
}}
manual {{
{"".join(tunnel(topo, n) for n in range(TUNNELS))}}}
"""


def tunnel(topo: TwoHosts, n: int) -> str:
    """Tunnel n: 2 x 4 selector pairs (the most an SA takes), keys and SPIs of its own."""
    remote = ", ".join(f"10.2.0.{64 * j}/26" for j in range(4))   # the same routes for all
    return f"""  t{n} {{
    local_addr = {topo.a.outer4}
    remote_addr = {topo.b.outer4}
    local_ts = 10.1.0.0/25, 10.1.0.128/25
    remote_ts = {remote}
    spi_in = {0xC0010000 + n:#x}
    key_in = 0x{n:04x}030405060708090a0b0c0d0e0f1011121314
    spi_out = {0xC0020000 + n:#x}
    key_out = 0x{n:04x}131415161718191a1b1c1d1e1f2021222324
  }}
"""


@dataclass
class Running:
    pid: int
    sock: Path
    log: Path

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))


@pytest.fixture
def daemon() -> Iterator[Running]:
    with TwoHosts(ipv6=False) as topo:
        sock = topo.workdir / "run" / "tunsec.sock"
        state = topo.workdir / "state"
        init_state_dir(state)
        conf = topo.workdir / "tunsec.conf"
        conf.write_text(config(topo, sock, state))
        conf.chmod(0o644)
        log = topo.workdir / "tunsec.log"
        proc = topo.popen(topo.a, [*python_argv(), "-m", "tunsec", "up", "-c", str(conf)], log=log)
        assert wait_up(proc, log, log_size(log) if log.exists() else 0, sock), log.read_text()
        yield Running(proc.pid, sock, log)
        topo.stop(proc)


def exchange(sock: Path, data: bytes) -> bytes:
    """What the daemon answers to data, read until it closes."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)
        s.connect(str(sock))
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


@contextlib.contextmanager
def holders(sock: Path, uids: Sequence[int], gid: int) -> Iterator[list[tuple[int, int]]]:
    """A child process per uid (in the socket's group, gid) holding IDLE idle connections and ASKING
    that ask for the status and never read it.  Each reports [held, refused busy, asking ones
    answered] on its pipe, then holds its connections until the block ends.  Yields (pid, report fd)."""
    end_r, end_w = os.pipe()   # one for all: a child inherits no other's write end to keep it open
    children: list[tuple[int, int]] = []
    try:
        for uid in uids:
            report_r, report_w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(end_w)
                _hold(sock, uid, gid, report_w, end_r)
            os.close(report_w)
            children.append((pid, report_r))
        yield children
    finally:
        os.close(end_w)
        os.close(end_r)
        for pid, report in children:
            os.close(report)
            os.waitpid(pid, 0)


def _hold(sock: Path, uid: int, gid: int, report: int, end: int) -> NoReturn:
    """The child (no pytest from here on): see holders."""
    try:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
        conns = []
        for i in range(IDLE + ASKING):
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(sock))
            if i >= IDLE:
                # a connection refused "busy" may be answered and closed before the request goes out:
                # EPIPE then, and the answer is still there to read below
                with contextlib.suppress(BrokenPipeError):
                    s.sendall(b'{"cmd": "status"}\n')
            conns.append(s)
        firsts = []
        for s in conns[IDLE:]:   # answered in order: the idle ones before were taken or refused by then
            select.select([s], [], [], 30)
            firsts.append(s.recv(64, socket.MSG_PEEK))   # the rest stays unread
        idle_busy = sum(1 for s in conns[:IDLE] if select.select([s], [], [], 0)[0] and s.recv(64, socket.MSG_PEEK))
        busy = sum(f.startswith(b'{"ok": false, "error": "busy') for f in firsts)
        ok = sum(f.startswith(b'{"ok": true, "status"') for f in firsts)
        os.write(report, json.dumps([ok + IDLE - idle_busy, busy + idle_busy, ok + busy == ASKING]).encode())
        os.read(end, 1)   # EOF when the test is done
        os._exit(0)
    except BaseException as err:
        os.write(report, json.dumps(["failed", repr(err)]).encode())
        os._exit(1)


def test_overlong_nested_and_held_connections(daemon: Running) -> None:
    # an overlong line and a deeply nested one: an answer each, then the connection ends
    too_long = exchange(daemon.sock, b'{"cmd": "status", "pad": "' + b"x" * 70_000 + b'"}\n')
    assert json.loads(too_long) == {"ok": False, "error": "request too long"}
    nested = exchange(daemon.sock, b"[" * 10_000 + b"\n")
    assert json.loads(nested) == {"ok": False, "error": "malformed request"}
    assert ask(daemon.sock, {"cmd": "status"})["ok"]
    baseline = daemon.fds()

    gid = os.stat(daemon.sock).st_gid
    with holders(daemon.sock, UIDS, gid) as children:
        reports = [json.loads(os.read(report, 4096) or b'["failed", "no report"]') for _, report in children]
        # each got a status or "busy" (a child that failed reports ["failed", why]: shown, not unpacked)
        assert all(len(r) == 3 and r[2] is True for r in reports), reports
        held = [h for h, _, _ in reports]
        assert all(h <= ctlsocket.PER_UID for h in held) and sum(held) <= ctlsocket.TOTAL, reports
        assert sum(b for _, b, _ in reports) >= len(UIDS) * (IDLE + ASKING) - ctlsocket.TOTAL, reports
        assert daemon.fds() <= baseline + ctlsocket.TOTAL

        # root gets in meanwhile
        assert ask(daemon.sock, {"cmd": "status"})["status"]["tunnels"][0]["name"] == "t0"
        assert ask(daemon.sock, {"cmd": "reload"}, timeout=60)["message"] == "no changes"

        # the deadline closes the held ones, idle or not reading (their clients still hold them)
        assert wait_until(lambda: daemon.fds() <= baseline, 60), (daemon.fds(), baseline)
    counts = ask(daemon.sock, {"cmd": "status"})["status"]["control"]["control_socket"]
    assert counts["too_long"] == 1 and counts["malformed"] == 1
    assert counts["busy"] == sum(b for _, b, _ in reports) and counts["timed_out"] >= sum(held)
    text = daemon.log.read_text()
    assert "Traceback" not in text and "RecursionError" not in text, text[-3000:]
