"""Review revreload2: a reload at the worst moment.

F1: a reload that lands in the stop.  SIGHUP is ignored once the stop began (Daemon._on_sighup
checks `stopping`), but `tunsec reload` over the control socket is not: the socket
stays open until the end of Daemon.shutdown, and a reload asked after the services' shutdown (or
running while it) applies in full: a manual tunnel is installed into the worker after the manual
service shut down (its sequence extensions already stopped, `closing`), its answer says "added"."""

from __future__ import annotations

import asyncio
from pathlib import Path

from test_ikeservice_peers import InProcessWorker
from test_reload_manual import KEY_A2, Harness, conf, sa_pair, tunnel
from test_reload_stopping import worker_dies_at_an_install


def test_f1_a_control_socket_reload_during_the_stop_is_refused_and_installs_nothing(tmp_path: Path) -> None:
    async def body() -> None:
        h = Harness(tmp_path, conf(tmp_path, tunnel("keep", 1)))
        await h.start()
        assert h.sas() == sa_pair(1)
        # what Daemon.shutdown does before the worker stops: the stop began, the services shut down
        h.daemon.stopping.set()
        await h.daemon.manual.shutdown()
        answer = await h.reload(conf(tmp_path, tunnel("keep", 1), tunnel("late", 2)))
        try:
            # the stop's drain must not take a new configuration: refused, and nothing new in the worker
            assert not answer["ok"], answer
            assert h.sas() == sa_pair(1)
        finally:
            h.stop()
    asyncio.run(body())


def test_f2_a_tunnel_a_reload_replaces_while_the_worker_dies_is_reinstalled_by_the_restart(tmp_path: Path) -> None:
    """The worker dies while a reload installs a replaced tunnel's new version (the reload holds
    _reloading; the restart's reinstall waits for it).  The install fails because the worker is gone,
    not because of the tunnel: as at a restart (manual_retry.py) the new version must go into the next
    worker.  On main it is dropped from the plans ("not installed until a reload"): the restart's
    reinstall leaves it out, and its traffic is dropped until someone reloads again (a SIGHUP's
    reload only logs it)."""
    async def body() -> None:
        h = Harness(tmp_path, conf(tmp_path, tunnel("keep", 1), tunnel("change", 2)))
        await h.start()
        worker_dies_at_an_install(h)
        answer = await h.reload(conf(tmp_path, tunnel("keep", 1), tunnel("change", 2, KEY_A2)))
        assert not answer["ok"], answer   # true: it is not installed (yet)
        # the daemon's watcher: the successor, and every service reinstalled into it (the restart)
        h.worker = InProcessWorker(asyncio.get_running_loop(), lambda m: None)
        h.daemon.worker = h.worker  # type: ignore[assignment]
        await h.daemon.manual.worker_restarted()
        try:
            assert h.sas() == sa_pair(1) | sa_pair(2), "the replaced tunnel is not in the restarted worker"
        finally:
            await h.daemon.manual.shutdown()
            h.stop()
    asyncio.run(body())
