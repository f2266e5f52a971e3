"""Two IKE-only instances, each in a network namespace and a PID namespace of its own (as every
container runtime starts them: /proc is the container's, PID 1 is its init), one TUN name, one
state_dir (a shared volume), keep a record each (review AC F1: a namespace was taken for the initial
one when PID 1 was in it, so both used the plain name prohibit-routes.TUN; B's start deleted A's
record as stale, and A, killed and started again in its kept namespace, inherited nothing: its own
leftover prohibit route stayed for good).  Real `tunsec up` under unshare --pid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from control import log_size, wait_up
from test_prohibit_record_netns import blocks_on_reload, ike_conf
from test_prohibit_record_two_netns import two_ns  # noqa: F401  (fixture)
from test_prohibit_two_instances import Instance, prohibits

from tunsec.bench.netns import wait_until
from tunsec.statedir import init_state_dir

TUN = "tsac0"


class PidnsInstance(Instance):
    """An Instance whose tunsec is PID 1 of a PID namespace of its own with its own /proc."""

    def up(self) -> None:
        offset = log_size(self.log)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, "unshare", "--pid", "--fork", "--mount-proc",
                                          sys.executable, "-m", "tunsec", "up", "-c", str(self.dir / "tunsec.conf")],
                                         stdout=log, stderr=log)
        assert wait_up(self.proc, self.log, offset, self.sock, 30), self.log.read_text()

    def _child(self) -> int:
        assert self.proc is not None
        return int(Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()[0])

    def stop(self) -> None:
        """unshare --fork ignores SIGTERM while it waits: the signal goes to its child, tunsec."""
        if self.proc is not None:
            os.kill(self._child(), signal.SIGTERM)
            self.proc.wait(30)
            self.proc = None

    def kill(self) -> None:
        """SIGKILL to the namespace's PID 1 (the control process): the kernel kills the worker with it."""
        assert self.proc is not None
        child = self._child()
        os.kill(child, signal.SIGKILL)
        self.proc.wait(10)
        assert wait_until(lambda: not Path(f"/proc/{child}").exists(), 10)
        self.proc = None


def test_two_pid_namespaces_keep_two_records(two_ns: tuple[str, str], tmp_path: Path) -> None:  # noqa: F811
    ns1, ns2 = two_ns
    state = tmp_path / "state"
    init_state_dir(state)
    a = PidnsInstance(ns1, tmp_path / "a", TUN, "192.0.2.1")
    b = PidnsInstance(ns2, tmp_path / "b", TUN, "192.0.2.1")
    try:
        for inst, net in ((a, "fd00:3::/64"), (b, "fd00:5::/64")):
            inst.dir.mkdir(mode=0o700)
            ike_conf(inst, state, "root", "10.2.0.0/24")
            inst.up()
            ike_conf(inst, state, "root", "10.2.0.0/24", net)
            blocks_on_reload(inst, net)
        records = sorted(p.name for p in state.glob("prohibit-routes.*"))
        print("records:", records, [json.loads((state / r).read_text()) for r in records])
        a.kill()
        ike_conf(a, state, "root", "10.2.0.0/24")
        a.up()
        assert prohibits(ns1) == [], a.log.read_text()   # A's own leftover, no tunnel wants it
        assert prohibits(ns2) == ["fd00:5::/64"]
    finally:
        a.stop()
        b.stop()
