"""The worker spawner (tunsec.dataplane.spawner): whom the worker runs as, and the channel between the
control process and the spawner, which neither side trusts further than it parses.  The spawner here
is a real process (root, becoming tunsec-dp); the worker itself is exercised by tests/e2e."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import socket
import subprocess
from pathlib import Path
from typing import Any, cast

import pytest
from reachable import python_argv, unreachable_python_argv

from tunsec import privilege
from tunsec.conf.tunsec_section import DATAPLANE_USER
from tunsec.dataplane import client as client_mod
from tunsec.dataplane import spawner

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="changes user")


def plan_for(name: str) -> privilege.Plan:
    return privilege.Plan(True, privilege.target_for(name))


def test_choose_a_user_of_its_own_unless_root_is_asked_or_it_is_the_same() -> None:
    pwd.getpwnam(DATAPLANE_USER)   # scripts/install-deps.sh makes it
    assert spawner.choose(None, plan_for("tunsec")) == spawner.Choice(DATAPLANE_USER)
    assert spawner.choose("nobody", plan_for("tunsec")) == spawner.Choice("nobody")
    assert spawner.choose(None, privilege.Plan(False, None)) == spawner.Choice(None)   # user = root
    assert spawner.choose("tunsec", plan_for("tunsec")) == spawner.Choice(None)        # the same uid


CHOOSE = """import sys
from tunsec import privilege
from tunsec.dataplane import spawner
try:
    print(spawner.choose(sys.argv[1] or None, privilege.Plan(True, None)))
except privilege.PrivilegeError as err:
    print("refused:", err)
"""


def choose_without_caps(configured: str) -> str:
    """choose() in a process started as tunsec with no capability (a unit without CAP_SETUID)."""
    pw = pwd.getpwnam("tunsec")
    pre = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups", "--inh-caps=-all", "--"]
    env = dict(os.environ, PYTHONPATH=str(Path(spawner.__file__).parents[2]))
    r = subprocess.run([*python_argv(pre), "-c", CHOOSE, configured], capture_output=True, text=True, timeout=30,
                       env=env, cwd="/")
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_without_setuid_the_default_warns_and_a_configured_user_is_refused() -> None:
    out = choose_without_caps("")
    assert "user=None" in out and "needs CAP_SETUID and CAP_SETGID" in out, out
    assert out.startswith("refused:") is False
    refused = choose_without_caps(DATAPLANE_USER)
    assert refused.startswith("refused:") and "CAP_SETUID" in refused, refused


class _Proc:
    pid = 0


def test_control_side_drops_malformed_spawner_messages() -> None:
    """A spawner is as exposed as a worker: what it says is parsed strictly, never trusted to crash us."""
    async def run() -> tuple[int, int | None]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sp = spawner.Spawner(cast(Any, _Proc()), ours)
        sp._message(b"ready")
        worker = spawner.SpawnedWorker(1234, sp)
        sp._workers[1234] = worker
        for bad in (b"pid", b"pid x", b"exit 1234", b"exit x y", b"\xff\x00", b"hello world", b"exit 1234 z"):
            sp._message(bad)
        assert not worker._exited.is_set()
        sp._message(b"exit 999 0")      # no worker of ours: ignored
        sp._message(b"exit 1234 -9")
        theirs.close()
        return sp.malformed, await asyncio.wait_for(worker.wait(), 1)
    assert asyncio.run(run()) == (7, -9)


def test_a_worker_that_dies_at_start_is_seen_to_exit() -> None:
    """``pid`` and ``exit`` read back to back (a worker crashing at start): the exit reaches the worker
    spawn() returns, so its watcher restarts it and stop() does not wait forever."""
    async def run() -> tuple[int | None, dict[int, spawner.SpawnedWorker]]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        sp = spawner.Spawner(cast(Any, _Proc()), ours)
        asyncio.get_running_loop().add_reader(ours.fileno(), sp._readable)
        sp._message(b"ready")
        theirs.send(b"pid 4242")
        theirs.send(b"exit 4242 1")
        r, w = os.pipe()
        try:
            worker = await sp.spawn(w, w)
            assert worker.pid == 4242
            code = await asyncio.wait_for(worker.wait(), 10)
        finally:
            sp._gone()
            theirs.close()
            os.close(r)
            os.close(w)
        return code, sp._workers
    assert asyncio.run(run()) == (1, {})


def test_answers_are_matched_to_requests_in_order_also_past_one_given_up() -> None:
    """Two spawns given up (timeout 0), then one waited for: the first answer (an error) and the
    second (a pid: killed through the spawner) are theirs; the third, a pid, is the waiting one's."""
    async def run() -> tuple[int, list[bytes]]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        sp = spawner.Spawner(cast(Any, _Proc()), ours)
        asyncio.get_running_loop().add_reader(ours.fileno(), sp._readable)
        sp._message(b"ready")
        r, w = os.pipe()
        try:
            for _ in range(2):
                with pytest.raises(OSError, match="did not answer"):
                    await sp.spawn(w, w, timeout=0)
            for answer in (b"error no luck", b"pid 4301", b"pid 4302"):
                theirs.send(answer)
            worker = await sp.spawn(w, w)
            return worker.pid, [theirs.recv(spawner.MAX_MESSAGE) for _ in range(4)]
        finally:
            sp._gone()
            theirs.close()
            os.close(r)
            os.close(w)
    assert asyncio.run(run()) == (4302, [b"spawn", b"spawn", b"spawn", b"kill 4301"])


def test_stop_gives_up_on_a_killed_worker_whose_exit_never_comes(monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """A spawner that never reports the exit (stuck, or it lost it): stop() kills, waits KILL_WAIT, says
    so and returns instead of hanging the shutdown."""
    monkeypatch.setattr(client_mod, "KILL_WAIT", 0.05)

    async def run() -> tuple[int | None, bytes]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sp = spawner.Spawner(cast(Any, _Proc()), ours)
        sp._message(b"ready")
        wc = client_mod.WorkerClient(lambda msg: None)
        wc.proc = spawner.SpawnedWorker(4243, sp)
        sp._workers[4243] = wc.proc
        try:
            code = await wc.stop(timeout=0.05)
            return code, theirs.recv(spawner.MAX_MESSAGE)
        finally:
            ours.close()
            theirs.close()
    assert asyncio.run(run()) == (None, b"kill 4243")
    assert "worker 4243: no exit reported" in caplog.text


SPAWNER = """import asyncio, json, pwd, sys
from pathlib import Path
from tunsec.dataplane import spawner

async def run():
    try:
        sp = await spawner.Spawner.start(sys.argv[1], [], ["--tun-fd", "-1"], "info", "text")
    except spawner.SpawnerUnusable as err:
        return {"unusable": str(err)}
    uid = next(ln.split()[1:] for ln in Path(f"/proc/{sp.proc.pid}/status").read_text().splitlines()
               if ln.startswith("Uid:"))
    sp.send(b"kill 1")            # not a worker of its own: ignored
    sp.send(b"spawn")             # no descriptor: answered with an error, nothing started
    await asyncio.sleep(0.2)
    running = sp.proc.returncode is None
    await sp.close()
    return {"uid": uid, "running": running, "code": sp.proc.returncode}

print(json.dumps(asyncio.run(run())))
"""


def run_spawner(wrapped: bool) -> dict[str, Any]:
    """A real spawner, started as the daemon starts it (root, then it drops); wrapped: with the
    interpreter made reachable for every user (reachable.py), as the e2e tests run tunsec; else
    from where only root may reach it, wherever this machine installed it."""
    env = dict(os.environ, PYTHONPATH=str(Path(spawner.__file__).parents[2]))
    argv = python_argv() if wrapped else unreachable_python_argv()
    r = subprocess.run([*argv, "-c", SPAWNER, DATAPLANE_USER], capture_output=True, text=True, timeout=60,
                       env=env, cwd="/")
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout.splitlines()[-1]))


def test_the_spawner_becomes_its_user_ignores_stray_requests_and_ends_with_the_channel() -> None:
    out = run_spawner(wrapped=True)
    assert out == {"uid": [str(pwd.getpwnam(DATAPLANE_USER).pw_uid)] * 4, "running": True, "code": 0}, out


def test_a_spawner_that_cannot_run_the_interpreter_says_so_at_start() -> None:
    out = run_spawner(wrapped=False)
    assert "cannot run as tunsec-dp" in out["unusable"] and "Python interpreter" in out["unusable"], out


LATE = """import asyncio, json, os, socket, sys
from pathlib import Path
from tunsec.dataplane import spawner

def children(parent):
    out = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                out.add(int(d.name))
    return out

def holds(pid, sock):
    # the socket the worker was given as its pipe (--pipe-fd N in its command line)
    # empty until its exec has set up the new arguments: the spawner's Popen can return before that
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\\0")
    if b"--pipe-fd" not in argv:
        return False
    fd = argv[argv.index(b"--pipe-fd") + 1].decode()
    return os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{os.fstat(sock.fileno()).st_ino}]"

async def until(check):
    for _ in range(200):   # the late worker's kill, or its start: 10 s at most
        if check():
            return True
        await asyncio.sleep(0.05)
    return False

async def run():
    sp = await spawner.Spawner.start(sys.argv[1], [], ["--tun-fd", "-1"], "info", "text")
    first, first_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        await sp.spawn(first_end.fileno(), 2, timeout=0)   # gives up before any answer can come
        gave_up = None
    except OSError as err:
        gave_up = str(err)
    first_end.close()   # as WorkerClient.start does; ``first`` stays open, so that worker sees no EOF
    second, second_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    worker = await sp.spawn(second_end.fileno(), 2)
    ours = await until(lambda: holds(worker.pid, second_end))
    second_end.close()
    alone = await until(lambda: children(sp.proc.pid) == {worker.pid})
    second.close()   # EOF ends our worker
    try:
        code = await asyncio.wait_for(worker.wait(), 10)
    except TimeoutError:   # not the worker holding ``second``
        code = None
    first.close()
    await sp.close()
    return {"gave_up": gave_up, "ours": ours, "alone": alone, "code": code, "malformed": sp.malformed}

print(json.dumps(asyncio.run(run())))
"""


def test_a_worker_whose_pid_comes_after_spawn_gave_up_is_killed_and_not_given_to_the_next() -> None:
    """spawn() gives up before the spawner's ``pid`` can arrive (timeout 0), and the next spawn()
    follows at once: the late pid answers the first request, not the second (spawn() returns the
    worker holding the pipe it passed), and the first worker, whose pipe's other end the test keeps
    open, is killed rather than left running without an owner (the spawner's only child left is the
    second worker).  A real spawner and real workers (no TUN: ``--tun-fd -1``)."""
    env = dict(os.environ, PYTHONPATH=str(Path(spawner.__file__).parents[2]))
    r = subprocess.run([*python_argv(), "-c", LATE, DATAPLANE_USER], capture_output=True, text=True, timeout=120,
                       env=env, cwd="/")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.splitlines()[-1])
    assert out == {"gave_up": "the worker spawner did not answer", "ours": True, "alone": True, "code": 0,
                   "malformed": 0}, (out, r.stderr[-2000:])
    assert "started after the control process gave up waiting for it: killed" in r.stderr
