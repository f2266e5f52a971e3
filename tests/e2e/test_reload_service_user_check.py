"""A reload after the drop checks what it reads as the root start does, the service user allowed besides root
(review revconf F1).  On main the reload, run as the service user, checked nothing: a configuration changed to
include a folder another user (nobody) owns loaded the tunnel that user wrote there, keys and networks of its
choosing installed into the worker.  Now the reload is refused, naming the folder and the fix; a folder and a
file of root's are still taken.  A real daemon as root dropping to its user, real files of uid nobody, the
reloads asked through the control socket as root (the operator's next change)."""

from __future__ import annotations

import os
import pwd
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from control import log_size, status, wait_up
from reachable import python_argv
from revconf_data import manual_tunnel

from tunsec.bench.netns import TwoHosts
from tunsec.cli import _ask
from tunsec.statedir import init_state_dir

root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a start that drops privileges, file owners)")


@pytest.fixture
def topo() -> Iterator[TwoHosts]:
    with TwoHosts(ipv6=False, prefix="fixconf") as t:
        yield t


def manual_names(sock: Path) -> list[str]:
    return sorted(t["name"] for t in status(sock)["tunnels"] if t.get("type") == "manual")


@root
def test_a_reload_refuses_an_include_folder_another_user_owns(topo: TwoHosts) -> None:
    etc = topo.workdir / "etc"
    etc.mkdir(mode=0o755)
    sock, state, log = topo.workdir / "tunsec.sock", topo.workdir / "state", topo.workdir / "tunsec.log"
    init_state_dir(state)
    head = f"tunsec {{\n  tun = fixconf0\n  control_socket = {sock}\n  state_dir = {state}\n}}\n"
    conf = etc / "tunsec.conf"
    conf.write_text(head + manual_tunnel("good", 1, "10.2.0.0/24"))
    conf.chmod(0o644)   # the service user reads it at a reload (no key of worth in it)
    proc = topo.popen(topo.a, [*python_argv(), "-m", "tunsec", "up", "-c", str(conf)], log=log)
    assert wait_up(proc, log, log_size(log), sock), log.read_text()

    nobody = pwd.getpwnam("nobody")
    other = topo.workdir / "other.d"
    other.mkdir(mode=0o755)
    os.chown(other, nobody.pw_uid, nobody.pw_gid)
    subprocess.run(["tee", str(other / "evil.conf")], input=manual_tunnel("evil", 2, "10.3.0.0/24").encode(),
                   check=True, stdout=subprocess.DEVNULL, user=nobody.pw_uid, group=nobody.pw_gid)
    conf.write_text(head + manual_tunnel("good", 1, "10.2.0.0/24") + f"include {other}/*.conf\n")
    answer = _ask(str(sock), {"cmd": "reload"}, timeout=60)
    assert not answer.get("ok"), answer
    assert f"refusing include folder {other}" in answer.get("error", ""), answer
    assert f"chown root {other}" in answer["error"], answer
    assert manual_names(sock) == ["good"], log.read_text()[-3000:]

    mine = etc / "conf.d"   # root's folder and file: taken as before
    mine.mkdir(mode=0o755)
    (mine / "more.conf").write_text(manual_tunnel("more", 3, "10.4.0.0/24"))
    conf.write_text(head + manual_tunnel("good", 1, "10.2.0.0/24") + "include conf.d/*.conf\n")
    answer = _ask(str(sock), {"cmd": "reload"}, timeout=60)
    assert answer.get("ok"), answer
    assert manual_names(sock) == ["good", "more"], answer
