"""Review revlate11: a `tunsec reload` that outlasts the stop's RELOAD_STOP_WAIT (h/fixreload2) goes on
after the stop went on without it: it installs its tunnel into the manual service already shut down
(and into the worker the stop stopped), and its answer says "added" -- review revreload2 F1 again,
only 10 s later.  Harness as tests/test_reload_stopping.py (the real ManualService, Daemon.shutdown, the
worker's logic and C fast path in process)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from test_reload_stopping import _reload_under_way

from tunsec import daemon as daemon_module


def test_a_reload_the_stop_did_not_wait_for_installs_nothing_after_the_services_shut_down(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stop waits RELOAD_STOP_WAIT (0.05 s here) for the reload adding `late`, then shuts the
    services down; the worker then answers the reload.  Nothing of late may go into the shut-down
    manual service (no plan: its SAs would have no sequence refills, no clean removal), and the answer
    must not say it was added.  On main: plans ["keep", "late"], answer ok "manual tunnels added: late"."""
    monkeypatch.setattr(daemon_module, "RELOAD_STOP_WAIT", 0.05, raising=False)

    async def body() -> dict[str, Any]:
        h, gate, reload = await _reload_under_way(tmp_path)
        try:
            await h.daemon.shutdown()
            assert h.daemon.manual.closing
            gate.set()   # the stuck worker answers, after the stop went on
            answer = await reload
            return {"answer": answer, "plans": [p.tunnel.name for p in h.daemon.manual.plans]}
        finally:
            gate.set()
            h.stop()

    seen = asyncio.run(body())
    assert "late" not in seen["plans"], seen
    assert seen["answer"] != {"ok": True, "message": "manual tunnels added: late"}, seen

