"""Review revcontainer F2: tunsec gives up on its worker and exits 0.

When no successor worker can be started (daemon._restart_worker: "restarting the worker failed"),
the watcher sets `stopping` and run() returns `1 if len(self.restarts) > MAX_RESTARTS else 0`
(daemon.py:698): 0, the status of a clean stop on SIGTERM.  The systemd unit's Restart=on-failure
and compose's `restart: on-failure` then leave the tunnels down for good, and systemd shows the unit
inactive, not failed.  The spawner killed (the OOM killer, a `kill -9`) is such a case: the worker dies
with it (its parent-death signal) and nothing is left to start a successor.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from conftest import TunnelOptions, TunsecPair

from tunsec.bench.netns import TwoHosts, wait_until


def spawner_of(worker: int) -> int:
    ppid = int(next(line.split()[1] for line in Path(f"/proc/{worker}/status").read_text().splitlines()
                    if line.startswith("PPid:")))
    assert "tunsec.dataplane.spawner" in Path(f"/proc/{ppid}/cmdline").read_text()
    return ppid


def test_tunsec_that_gives_up_on_its_worker_exits_with_a_failure(topo: TwoHosts) -> None:
    pair = TunsecPair(topo, TunnelOptions(inner6=False))
    pair.start_both()
    worker = int(pair.a.status_json(topo)["worker"]["pid"])
    os.kill(spawner_of(worker), signal.SIGKILL)
    proc = pair.a.proc
    assert proc is not None
    assert wait_until(lambda: proc.poll() is not None, 30), "tunsec kept running without a worker"
    log = pair.a.log.read_text()
    assert "restarting the worker failed" in log or "giving up" in log, log[-2000:]
    # main: 0, as after a clean stop: Restart=on-failure does not start it again
    assert proc.returncode != 0, f"tunsec gave up on its worker and exited {proc.returncode}:\n{log[-1500:]}"
