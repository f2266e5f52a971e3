"""Review revconf F1: another local user adds to tunsec's configuration through an include glob's folder.

`tunsec up` as root refuses a configuration file, or one it includes, that anyone but root may change
(docs/privileges.md).  It checks the files a glob matched, not the folder the glob looks in: with
`include conf.d/*.conf` and conf.d owned by another user (here nobody) but empty at the start, the start
passes.  The reload then reads the configuration as the service user, who checks nothing (docs/privileges.md:
"run as the user, tunsec checks nothing"), so the file nobody puts there is loaded: here a manual tunnel of
nobody's choosing, keys and networks included, installed into the worker.  A real daemon as root dropping to
its user, a real file written by uid nobody, the reload asked through the control socket as root.

Whatever the fix (refuse the folder at the start, or check the files a reload reads), nobody's tunnel must
never be installed."""

from __future__ import annotations

import os
import pwd
import subprocess
from collections.abc import Iterator

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
    with TwoHosts(ipv6=False, prefix="revconf") as t:
        yield t


@root
def test_a_file_another_user_puts_in_an_include_folder_is_never_acted_on(topo: TwoHosts) -> None:
    etc = topo.workdir / "etc"
    etc.mkdir(mode=0o755)
    conf_d = etc / "conf.d"
    conf_d.mkdir(mode=0o755)
    nobody = pwd.getpwnam("nobody")
    os.chown(conf_d, nobody.pw_uid, nobody.pw_gid)   # another user's folder, empty at the start
    sock, state, log = topo.workdir / "tunsec.sock", topo.workdir / "state", topo.workdir / "tunsec.log"
    init_state_dir(state)
    conf = etc / "tunsec.conf"
    conf.write_text(f"tunsec {{\n  tun = revconf0\n  control_socket = {sock}\n  state_dir = {state}\n}}\n"
                    + manual_tunnel("good", 1, "10.2.0.0/24") + "include conf.d/*.conf\n")
    conf.chmod(0o644)   # the service user reads it at a reload (no key of worth in it)
    proc = topo.popen(topo.a, [*python_argv(), "-m", "tunsec", "up", "-c", str(conf)], log=log)
    if not wait_up(proc, log, log_size(log) if log.exists() else 0, sock):
        text = log.read_text()   # refused at the start: it must say which folder, and why
        assert proc.poll() is not None and str(conf_d) in text, text
        return

    evil = conf_d / "evil.conf"
    subprocess.run(["tee", str(evil)], input=manual_tunnel("evil", 2, "10.3.0.0/24").encode(), check=True,
                   stdout=subprocess.DEVNULL, user=nobody.pw_uid, group=nobody.pw_gid)
    assert evil.stat().st_uid == nobody.pw_uid
    answer = _ask(str(sock), {"cmd": "reload"}, timeout=60)   # as root, e.g. the operator's next change
    names = [t["name"] for t in status(sock)["tunnels"] if t.get("type") == "manual"]
    assert names == ["good"], (answer, names, log.read_text()[-3000:])
    assert not answer.get("ok"), answer
