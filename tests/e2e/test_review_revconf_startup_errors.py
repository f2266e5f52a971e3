"""Review revconf F2 (low): startup errors about the control socket's and the state directory's paths that lack
what the project's rule asks of each (the operation, the object and its setting, what was wrong, how to fix it).

- `control_socket` naming an existing file that is not a socket: "cannot start: PATH exists and is not a socket"
  (no operation, no setting, no fix);
- `control_socket` in a "directory" that is a regular file: the error says the directory is not writable by root
  and gives `install -d -o root PATH` as the fix, which fails on a regular file (the fix is wrong);
- `state_dir` naming a regular file: "the state directory PATH (tunsec { state_dir }) is not a directory" (no fix).

A real `tunsec up` as root in a namespace; each start must fail with a message that names the setting and
says how to fix it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from reachable import python_argv
from revconf_data import manual_tunnel

from tunsec.bench.netns import TwoHosts
from tunsec.statedir import init_state_dir

root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (tunsec up)")
MANUAL = manual_tunnel()
# words of a fix: what to do with the path in the way (or where else to go)
FIX_WORDS = ("remove", "rm ", "move", "choose another", "another path")


@pytest.fixture(scope="module")
def topo() -> Iterator[TwoHosts]:
    with TwoHosts(ipv6=False, prefix="revconf") as t:
        yield t


def topo_run(topo: TwoHosts, conf: Path) -> str:
    done = subprocess.run(["ip", "netns", "exec", topo.a.ns, *python_argv(), "-m", "tunsec", "up", "-c", str(conf)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0, done.stdout + done.stderr
    return done.stdout + done.stderr


@root
@pytest.mark.parametrize("case", ["socket-is-a-file", "socket-dir-is-a-file", "state-dir-is-a-file"])
def test_a_startup_error_about_a_path_names_its_setting_and_a_fix(topo: TwoHosts, case: str) -> None:
    where = topo.workdir / case
    where.mkdir()
    state = where / "state"
    init_state_dir(state)
    afile = where / "afile"
    afile.write_text("")
    sock, state_dir = str(where / "tunsec.sock"), str(state)
    if case == "socket-is-a-file":
        sock = str(afile)
    elif case == "socket-dir-is-a-file":
        sock = str(afile / "tunsec.sock")
    else:
        state_dir = str(afile)
    text = topo_run(topo, write_conf(topo, case, sock, state_dir))
    line = next((ln for ln in text.splitlines() if "cannot start" in ln), text)
    setting = "state_dir" if case == "state-dir-is-a-file" else "control_socket"
    assert setting in line, line
    assert any(w in line for w in FIX_WORDS), line
    assert f"install -d -o root {afile}" not in line, line   # a fix that cannot work on a regular file


def write_conf(topo: TwoHosts, case: str, sock: str, state: str) -> Path:
    conf = topo.workdir / f"{case}.conf"
    conf.write_text(f"tunsec {{\n  tun = revconf1\n  control_socket = {sock}\n  state_dir = {state}\n}}\n" + MANUAL)
    conf.chmod(0o600)
    return conf
