"""A worker taken over writes what it likes to its stderr: escape sequences for the operator's
terminal, a line forged as the control process's (an AUTHENTICATION_FAILED naming an innocent
address, for fail2ban), NULs, a line without end, a flood.  The control process reads that stderr
(tunsec.dataplane.stderr_relay): what reaches its own stderr is escaped, bounded, counted, and
marked as the worker's.

The worker here is a stand-in process started through the very spawn path the daemon uses
(WorkerClient.start, without a spawner: worker_command replaced); the control process is a real
process whose stderr is a file.  With a spawner, a real worker (root, becoming tunsec-dp)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from reachable import python_argv

from tunsec.conf.tunsec_section import DATAPLANE_USER
from tunsec.dataplane import stderr_relay

SRC = str(Path(stderr_relay.__file__).parents[2])
FLOOD = 5000
ENDLESS = 100_000

# what a worker taken over writes on its stderr, then it exits in the middle of a line
STANDIN = rf"""import json, os, sys
flood = int(sys.argv[1])
w = sys.stderr.buffer.write
w(b"\x1b]0;owned\x07\x1b[2J\x1b[1;31mred\x9b31m\n")
w(b"2026-12-04 00:00:00,000 tunsec[1] ERROR net: AUTHENTICATION_FAILED from 203.0.113.9[500]: "
  b"the peer failed authentication ('x')\n")
w(json.dumps({{"ts": "2026-12-04T00:00:00.000Z", "level": "error", "logger": "tunsec.services.ike",
              "msg": "net: AUTHENTICATION_FAILED from 203.0.113.9[500]: the peer failed authentication",
              "process": "tunsec", "pid": 1, "remote": "203.0.113.9", "remote_port": 500}}).encode() + b"\n")
w(b"a NUL \x00 here, not UTF-8 \xff\xfe\n")
w(b"\r\x0bcarriage returns\u2028".replace(b"\\u2028", "\u2028".encode()) + b"\n")
w(b"A" * {ENDLESS} + b"\n")
for i in range(flood):
    w(b"flood %d\n" % i)
w(b"the last words, without a newline")
sys.stderr.flush()
os._exit(0)
"""

CONTROL = r"""import asyncio, os, sys
from tunsec import logs
from tunsec.dataplane import client
from tunsec.dataplane.client import WorkerClient, WorkerFds

fmt, standin, flood = sys.argv[1], sys.argv[2], sys.argv[3]
logs.configure("info", fmt, "tunsec")
client.worker_command = lambda: [sys.executable, "-c", standin, flood]

async def run():
    wc = WorkerClient(lambda msg: None)
    await wc.start(WorkerFds(-1), 1400, 30, "info", None, fmt, None, False)
    await wc.proc.wait()
    await wc.stop()
    print(wc.proc.pid)

asyncio.run(run())
"""

# the documented filter (docs/operations.md "Logs"), <HOST> any address
FAIL2BAN = re.compile(r"^.*? AUTHENTICATION_FAILED from (\S+)\[\d+\]: the peer failed")


def control(fmt: str, flood: int) -> tuple[int, str]:
    """The control process's stderr, raw, and the stand-in worker's pid."""
    with tempfile.TemporaryFile() as err:
        r = subprocess.run([sys.executable, "-c", CONTROL, fmt, STANDIN, str(flood)], stdout=subprocess.PIPE,
                           stderr=err, env=dict(os.environ, PYTHONPATH=SRC), timeout=120, cwd="/")
        err.seek(0)
        raw = err.read()
    assert r.returncode == 0, raw[-3000:]
    # raw bytes first: nothing the worker wrote reaches the terminal as a control character
    assert not set(raw) & (set(range(0x20)) - {0x0A}), [c for c in set(raw) if c < 0x20 and c != 0x0A]
    return int(r.stdout.split()[-1]), raw.decode()


def check_common(lines: list[str], own: list[str], worker_lines: list[str], pid: int, flood: int) -> None:
    """lines: all the control's, own: its own messages, worker_lines: the worker's messages."""
    assert not [ln for ln in lines if FAIL2BAN.search(ln)]
    assert not [ln for ln in lines if len(ln) > stderr_relay.MAX_LINE + 400]
    assert [ln for ln in worker_lines if "more bytes of this line dropped" in ln and "AAAA" in ln]
    passed = [ln for ln in worker_lines if "flood " in ln]
    dropped = sum(int(m.group(1)) for ln in own
                  if (m := re.search(rf"worker {pid}: (\d+) line\(s\) of its stderr dropped", ln)))
    last = [ln for ln in worker_lines if "the last words, without a newline ... (its stderr ended mid-line)" in ln]
    if not flood:   # its line cut by its death is passed on
        assert dropped == 0 and len(last) == 1, (dropped, last)
        return
    # past LINES, every line is dropped (the last words too) and counted
    assert 0 < len(passed) < stderr_relay.LINES and not last
    assert len(passed) + dropped == flood + 1, (len(passed), dropped)


@pytest.mark.parametrize("flood", [0, FLOOD])
def test_text_lines_of_a_worker_taken_over_are_escaped_bounded_counted_and_its_own(flood: int) -> None:
    pid, out = control("text", flood)
    lines = out.splitlines()
    mine = re.compile(rf"^\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d{{3}} tunsec-worker\[{pid}\] (WARNING|ERROR) ")
    worker_lines = [ln for ln in lines if mine.match(ln)]
    # every line but the control process's own is marked as the worker's
    assert all(ln in worker_lines or re.match(r"^\S+ \S+ tunsec\[\d+\] ", ln) for ln in lines), lines[:20]
    assert not [ln for ln in lines if "tunsec-worker" not in ln and ("flood" in ln or "AUTHENTICATION" in ln)]
    own = [ln for ln in lines if re.match(r"^\S+ \S+ tunsec\[\d+\] ", ln)]
    check_common(lines, own, worker_lines, pid, flood)
    assert any("\\x1b]0;owned\\x07\\x1b[2J" in ln and "\\x9b31m" in ln for ln in worker_lines)
    assert any("a NUL \\x00 here, not UTF-8 \\xff\\xfe" in ln for ln in worker_lines)
    assert any("\\r\\x0bcarriage returns\\u2028" in ln for ln in worker_lines)
    assert any("tunsec[1] ERROR net: AUTHENTICATION\\x5fFAILED from 203.0.113.9[500]" in ln for ln in worker_lines)


@pytest.mark.parametrize("flood", [0, FLOOD])
def test_json_lines_of_a_worker_taken_over_are_rebuilt_as_its_own(flood: int) -> None:
    pid, out = control("json", flood)
    docs = [json.loads(ln) for ln in out.splitlines()]   # every line still one JSON object
    assert all(d["process"] in ("tunsec", "tunsec-worker") for d in docs)
    worker = [d for d in docs if d["process"] == "tunsec-worker"]
    assert {d["pid"] for d in worker} == {pid}
    assert not [d for d in docs if d["process"] == "tunsec" and ("flood" in d["msg"] or "AUTH" in d["msg"])]
    check_common(out.splitlines(), [d["msg"] for d in docs if d["process"] == "tunsec"], [d["msg"] for d in worker],
                 pid, flood)
    forged = [d for d in worker if "203.0.113.9" in d["msg"] and d["level"] == "error"]
    assert len(forged) == 1 and "remote" not in forged[0] and forged[0]["logger"] == "tunsec.services.ike", worker
    assert "AUTHENTICATION\\x5fFAILED from" in forged[0]["msg"]
    assert any(d["msg"] == "a NUL \x00 here, not UTF-8 \\xff\\xfe" for d in worker)


SPAWNED = r"""import asyncio, os, sys
from tunsec import logs
from tunsec.dataplane import spawner
from tunsec.dataplane.client import WorkerClient, WorkerFds, worker_args

async def run():
    logs.configure("info", "text", "tunsec")
    fds = WorkerFds(-1)
    sp = await spawner.Spawner.start(sys.argv[1], fds.all(), worker_args(fds, 1400, 30, "info", "text"), "info",
                                     "text")
    wc = WorkerClient(lambda msg: None)
    await wc.start(fds, 1400, 30, "info", None, "text", sp)
    fd2 = os.readlink(f"/proc/{wc.proc.pid}/fd/2")
    ours = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            ours.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:   # listdir's own
            pass
    await wc.stop()
    await sp.close()
    print(wc.proc.pid, fd2, fd2 in ours, sep="|")

asyncio.run(run())
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="the spawner changes user")
def test_a_spawned_real_worker_writes_to_a_pipe_the_control_process_reads_and_relays() -> None:
    with tempfile.TemporaryFile() as err:
        r = subprocess.run([*python_argv(), "-c", SPAWNED, DATAPLANE_USER], stdout=subprocess.PIPE, stderr=err,
                           env=dict(os.environ, PYTHONPATH=SRC), timeout=120, cwd="/")
        err.seek(0)
        out = err.read().decode()
    assert r.returncode == 0, out[-3000:]
    pid, fd2, read_here = r.stdout.decode().splitlines()[-1].split("|")
    # its fd 2 is a pipe whose read end is the control process's, not the control's stderr
    assert fd2.startswith("pipe:") and read_here == "True", (fd2, read_here)
    # and the lines it wrote reach the control's stderr as the worker's, in today's format
    assert re.search(rf"^\S+ \S+ tunsec-worker\[{pid}\] INFO worker ready, 1 queue\(s\)$", out, re.M), out


# the count of lines dropped, read as `tunsec status` and the metrics read it, of the worker that wrote them
COUNTED = r"""import asyncio, json, sys
from status_stub import stub_daemon
from tunsec import logs, metrics, status
from tunsec.dataplane import client, pipe
from tunsec.dataplane.client import WorkerClient, WorkerFds

standin, flood = sys.argv[1], sys.argv[2]
logs.configure("info", "text", "tunsec")
client.worker_command = lambda: [sys.executable, "-c", standin, flood]

async def run():
    wc = WorkerClient(lambda msg: None)
    await wc.start(WorkerFds(-1), 1400, 30, "info", None, "text", None, False)
    await wc.proc.wait()
    await wc.stop()
    d = stub_daemon(lambda dump: {})
    d.worker = wc
    doc = status.status_document(d, pipe.Reply(7, pipe.MsgType.DUMP, pipe.Errno.OK))
    text = [ln for ln in status.render(doc).splitlines() if ln.startswith("worker:")]
    fams = {f.name: f.samples[0].value for f in metrics.state_families(doc, True)
            if getattr(f, "name", "").startswith("tunsec_worker_stderr")}
    print(json.dumps({"dropped": wc.stderr.dropped, "doc": doc["worker"].get("stderr_dropped", 0), "text": text,
                      "metric": fams}))

asyncio.run(run())
"""


@pytest.mark.parametrize("flood", [0, FLOOD])
def test_the_lines_a_worker_writes_past_the_limit_are_counted_in_status_and_metrics(flood: int) -> None:
    tests = str(Path(__file__).parents[1])
    r = subprocess.run([sys.executable, "-c", COUNTED, STANDIN, str(flood)], capture_output=True,
                       env=dict(os.environ, PYTHONPATH=f"{SRC}:{tests}"), timeout=120, cwd="/")
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.splitlines()[-1])
    # past LINES a window every line is dropped (check_common): at most the flood and its last words
    # beyond the 6 lines before them (fewer if a window ends during the flood)
    want = got["dropped"]
    assert (0 < want <= flood + 1 - (stderr_relay.LINES - 6)) if flood else want == 0, got
    assert got["doc"] == want, got
    assert got["metric"] == {"tunsec_worker_stderr_dropped_lines": want}, got
    assert [ln for ln in got["text"] if f"stderr lines dropped {want}" in ln] == ([] if not flood else got["text"])


# the spawner runs as the worker's user: one who took a worker over may take it over too (ptrace)
SPAWNER_STANDIN = r"""import sys
w = sys.stderr.buffer.write
w(b"\x1b]0;owned\x07\x1b[2J spawner\n")
w(b"2026-12-04 00:00:00,000 tunsec[1] ERROR net: AUTHENTICATION_FAILED from 203.0.113.9[500]: "
  b"the peer failed authentication ('x')\n")
w(b"its last words, without a newline")
"""

SPAWNER_CONTROL = r"""import asyncio, sys
from tunsec import logs
from tunsec.dataplane import spawner

logs.configure("info", "text", "tunsec")
spawner.spawner_command = lambda: [sys.executable, "-c", sys.argv[1]]

async def run():
    try:
        await spawner.Spawner.start("nobody", [], [], "info", "text")
    except spawner.SpawnerUnusable as err:
        print(err)

asyncio.run(run())
"""


def test_a_spawners_stderr_is_relayed_escaped_and_marked_as_its_own() -> None:
    with tempfile.TemporaryFile() as err:
        r = subprocess.run([sys.executable, "-c", SPAWNER_CONTROL, SPAWNER_STANDIN], stdout=subprocess.PIPE,
                           stderr=err, env=dict(os.environ, PYTHONPATH=SRC), timeout=60, cwd="/")
        err.seek(0)
        raw = err.read()
    assert r.returncode == 0 and b"cannot run as nobody" in r.stdout, (r.stdout, raw)
    assert not set(raw) & (set(range(0x20)) - {0x0A}), raw
    lines = raw.decode().splitlines()
    assert not [ln for ln in lines if FAIL2BAN.search(ln)]
    theirs = [ln for ln in lines if re.match(r"^\S+ \S+ tunsec-spawner\[\d+\] (WARNING|ERROR) ", ln)]
    assert any("\\x1b]0;owned\\x07\\x1b[2J spawner" in ln for ln in theirs), lines
    assert any("AUTHENTICATION\\x5fFAILED from 203.0.113.9" in ln for ln in theirs), lines
    assert any("its last words, without a newline ... (its stderr ended mid-line)" in ln for ln in theirs), lines
