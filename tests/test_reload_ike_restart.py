"""A reload of IKE connections that meets a worker restart (review of 2026-12-03, J): while the
worker is down, and while the watcher starts its successor.  The daemon's own reload, _watch_worker
and _install_services run, into a real IkeService (test_reload_ike's gateway: the worker's logic and
C fast path in-process, the peers' IKE engines wired to it in memory)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from test_ikeservice_peers import InProcessWorker, assert_reaches_only_its_site, run
from test_reload_ike import ConfiguredGateway, conf, conn

from tunsec.dataplane.client import WorkerClient


def test_a_reload_while_the_worker_is_down(tmp_path: Path) -> None:
    """The reload lands between the worker's death and its restart (poc_reload_worker_down).  On
    main the trap policy's SPDADD raised out of the reload: daemon.cfg stayed old while the service
    had the new connections, "started" (after the trap one) was never initiated, and `tunsec reload`
    got no answer.  Now the reload completes; the restart's reinstall puts the trap policy in."""
    async def body() -> None:
        gw = ConfiguredGateway(3)
        gw.path = tmp_path / "tunsec.conf"
        gw.path.write_text(conf(conn("keep", 0)))
        await gw.start()
        gw.worker = WorkerClient(lambda m: None)  # type: ignore[assignment]   # its worker died: not running
        gw.path.write_text(conf(conn("keep", 0), conn("trapped", 1, "trap"), conn("started", 2, "start")))
        answer = await gw.daemon._command(json.dumps({"cmd": "reload"}).encode())
        assert answer == {"ok": True, "message": "IKE connections added: trapped, started"}
        assert [c.name for c in gw.daemon.cfg.connections] == ["keep", "trapped", "started"]
        # the watcher's new worker, and the reinstall into it
        gw.worker = InProcessWorker(asyncio.get_running_loop(), gw._natt_out)
        await gw.service.worker_restarted()
        await gw.settle()
        assert_reaches_only_its_site(gw, 2)   # "started" came up
        traps = [p for p in gw.worker.dp.policies() if p.id in gw.service.trap_policies]
        assert [str(p.selector.dst_lo) for p in traps] == ["10.2.2.0"]
        assert set(gw.service.trap_policies.values()) == {("trapped", "net")}
    run(body())
