"""The dataplane worker parses packets from the network: it runs without
privilege (a dedicated user, no capabilities, no_new_privs) unless
``user = root`` asks otherwise, and nothing on the daemon's path is imported
into it.  Read from /proc for the running worker."""

from __future__ import annotations

import os
import pwd
import signal
from pathlib import Path

from conftest import TunnelOptions, TunsecPair

from tunsec.bench.netns import TwoHosts, wait_until
from tunsec.conf.tunsec_section import WORKER_USER


def proc_status(pid: int) -> dict[str, list[str]]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.split()
    return out


def assert_unprivileged(pid: int, user: str) -> None:
    st = proc_status(pid)
    pw = pwd.getpwnam(user)
    assert st["Uid"] == [str(pw.pw_uid)] * 4, st["Uid"]      # real, effective, saved, filesystem
    assert st["Gid"] == [str(pw.pw_gid)] * 4, st["Gid"]
    assert pw.pw_uid != 0 and pw.pw_gid != 0
    assert st["Groups"] == []
    for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(st[caps][0], 16) == 0, f"{caps} = {st[caps][0]}"
    assert st["NoNewPrivs"] == ["1"]


def expected_default_user() -> str:
    try:
        pwd.getpwnam(WORKER_USER)
        return WORKER_USER
    except KeyError:
        return "nobody"


def test_worker_is_unprivileged_by_default_and_after_a_restart(topo: TwoHosts) -> None:
    pair = TunsecPair(topo, TunnelOptions(inner6=False))
    pair.start_both()
    assert topo.wait_ping(topo.a, topo.b.inner4, src=topo.a.inner4)
    user = expected_default_user()
    pid = int(pair.a.status_json(topo)["worker"]["pid"])
    assert_unprivileged(pid, user)
    # the daemon (root) opens the TUN and sockets again for a new worker, which drops again
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: pair.a.status(topo).returncode == 0
                      and pair.a.status_json(topo)["worker"]["pid"] != pid, 15)
    new = int(pair.a.status_json(topo)["worker"]["pid"])
    assert_unprivileged(new, user)
    # the new worker refuses B's sequence numbers up to its persisted reservation (manual keys never accept
    # a number twice across a crash): B's traffic must pass that mark before A hears B again
    topo.run(topo.b, ["ping", "-c", "60", "-i", "0.02", "-W", "1", topo.a.inner4], check=False, timeout=30)
    assert topo.wait_ping(topo.a, topo.b.inner4, src=topo.a.inner4)
    assert f"running as {user}" in pair.a.log.read_text()


def test_user_root_keeps_the_worker_root(topo: TwoHosts) -> None:
    pair = TunsecPair(topo, TunnelOptions(tunsec_extra="  user = root\n", inner6=False))
    pair.start_both()
    assert topo.wait_ping(topo.a, topo.b.inner4, src=topo.a.inner4)
    st = proc_status(int(pair.a.status_json(topo)["worker"]["pid"]))
    assert st["Uid"] == ["0"] * 4 and int(st["CapEff"][0], 16) != 0


EVIL = """import os, sys
with open({marker!r}, "a") as f:
    f.write(f"{{os.getpid()}} {{__name__}} {{' '.join(sys.argv)}}\\n")
"""


def test_nothing_on_the_daemons_path_is_imported_into_the_worker(topo: TwoHosts, tmp_path: Path) -> None:
    """A sitecustomize (imported by any Python that has it on sys.path) and a
    fake uvloop, both in the daemon's working directory and on its PYTHONPATH.
    The daemon itself imports them, which shows the trap works; the worker,
    which starts as root, must not."""
    marker = tmp_path / "imported"
    cwd, extra = tmp_path / "cwd", tmp_path / "pythonpath"
    for d in (cwd, extra):
        d.mkdir()
        (d / "sitecustomize.py").write_text(EVIL.format(marker=str(marker)))
        (d / "uvloop.py").write_text(EVIL.format(marker=str(marker)) + "raise ImportError('not the real one')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(extra), os.environ.get("PYTHONPATH", "")]))
    pair = TunsecPair(topo, TunnelOptions(inner6=False))
    pair.start(pair.a, cwd=cwd, env=env)
    pair.start(pair.b)
    assert topo.wait_ping(topo.a, topo.b.inner4, src=topo.a.inner4)
    worker = int(pair.a.status_json(topo)["worker"]["pid"])
    assert pair.a.proc is not None
    lines = marker.read_text().splitlines()
    pids = {int(line.split()[0]) for line in lines}
    assert pair.a.proc.pid in pids, f"the trap did not work on the daemon itself: {lines}"
    assert worker not in pids, lines
    assert not any("--pipe-fd" in line for line in lines), lines
