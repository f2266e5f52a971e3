"""Review revconf F3 (low): a reload of a configuration that was read from a pipe (`tunsec up -c /dev/stdin`, or
`-c <(...)`, which load_config and docs/privileges.md accept) reads the pipe again, now at its end: an empty
configuration.  As root (`user = root`) the reload is then refused with "needs a restart: tun, control_socket,
user, state_dir", keys the operator never changed; dropped to the service user it says "cannot read: Permission
denied ... chgrp tunsec /dev/stdin"; run as the user with the defaults (no tunsec { } section) the empty file
would be applied, every tunnel removed (by reading the code; not run here).  The reload must say what is
wrong: the configuration came from a pipe, which cannot be read again (restart tunsec, or give it a file)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest
from control import status, wait_up
from reachable import python_argv
from revconf_data import manual_tunnel

from tunsec.bench.netns import TwoHosts
from tunsec.cli import _ask
from tunsec.statedir import init_state_dir

root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (tunsec up)")
MANUAL = manual_tunnel()


@pytest.fixture
def topo() -> Iterator[TwoHosts]:
    with TwoHosts(ipv6=False, prefix="revconf") as t:
        yield t


@root
def test_a_reload_of_a_configuration_read_from_a_pipe_says_so(topo: TwoHosts) -> None:
    sock, state, log = topo.workdir / "tunsec.sock", topo.workdir / "state", topo.workdir / "tunsec.log"
    init_state_dir(state)
    text = (f"tunsec {{\n  tun = revconf2\n  user = root\n  control_socket = {sock}\n  state_dir = {state}\n}}\n"
            + MANUAL)
    proc = topo.popen(topo.a, [*python_argv(), "-m", "tunsec", "up", "-c", "/dev/stdin"], log=log,
                      stdin=subprocess.PIPE)
    assert proc.stdin is not None
    proc.stdin.write(text.encode())
    proc.stdin.close()   # the pipe's end: what a reload reads of it now
    assert wait_up(proc, log, 0, sock), log.read_text()

    answer = _ask(str(sock), {"cmd": "reload"}, timeout=60)
    assert [t["name"] for t in status(sock)["tunnels"]] == ["t"], answer   # nothing applied (as on main)
    assert not answer.get("ok"), answer
    error = answer.get("error", "")
    assert "pipe" in error, error                      # what is wrong: the configuration was a pipe
    assert "needs a restart: tun " not in error + " ", error   # not a change the operator never made
