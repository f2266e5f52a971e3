"""A manual tunnel a reload fails to install fails closed (review M, F1).

The reload replacing a tunnel (a rotated key) uninstalls its old version first; when the new one
then does not go in (the worker refuses it, or its sequence state cannot be written), its remote
network must stay routed into the TUN (where no policy takes it: dropped), never taken off, or the
traffic the tunnel protected a moment earlier would follow the host's default route in clear.
Real ManualService, daemon reload and worker logic in-process; the TUN is a stand-in that records
which routes the reload asks to add or remove (tests/test_tun_prohibit.py covers the kernel side)."""

from __future__ import annotations

import asyncio
import errno
import os
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any

import pytest
from status_stub import stub_daemon
from test_reload_manual import KEY_A2, Harness, conf, sa_pair, tunnel

from tunsec import seqstate
from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Direction
from tunsec.dataplane.tun import Unrouted
from tunsec.status import render, status_document

IPNetwork = IPv4Network | IPv6Network
CHANGED = ip_network("10.2.3.0/24")   # tunnel("change", 3)'s remote network


class RecordingTun:
    """The daemon's Tun as the reload uses it: its routes, and every change asked of it."""

    name = "tun-test"

    def __init__(self, routes: list[str]) -> None:
        self.routes: list[tuple[IPNetwork, str | None]] = [(ip_network(r), None) for r in routes]
        self.unrouted: dict[IPNetwork, Unrouted] = {}
        self.unapplied: list[tuple[str, str]] = []
        self.removed: list[IPNetwork] = []
        self.blocked: list[IPNetwork] = []

    def remove_route(self, dst: IPNetwork) -> None:
        self.removed.append(dst)
        self.routes = [r for r in self.routes if r[0] != dst]

    def add_route(self, dst: IPNetwork, src: str | None) -> None:
        self.routes.append((dst, src))
        self.unrouted.pop(dst, None)   # as Tun.add_route: its block goes in the same change

    def block(self, dst: IPNetwork, why: str) -> None:
        self.blocked.append(dst)
        self.unrouted[dst] = Unrouted(why, blocked=True)

    def unblock(self, dst: IPNetwork) -> None:
        self.unrouted.pop(dst, None)


async def started(tmp: Path) -> tuple[Harness, RecordingTun]:
    """Tunnels keep (10.2.1.0/24) and change (10.2.3.0/24) up, each routed into the TUN."""
    h = Harness(tmp, conf(tmp, tunnel("keep", 1), tunnel("change", 3)))
    await h.start()
    tun = RecordingTun(["10.2.1.0/24", "10.2.3.0/24"])
    h.daemon.tun = tun  # type: ignore[assignment]
    h.daemon._add_route = lambda net, local: tun.add_route(net, None)  # type: ignore[method-assign]
    return h, tun


async def status(h: Harness) -> dict[str, Any]:
    dump = (await h.worker.request(lambda r: pipe.Dump(r)))[0]
    return h.daemon.manual.status(dump)


def assert_failed_closed(seen: dict[str, Any]) -> None:
    """The failed reload: an error naming the tunnel, its network still routed into the TUN (never
    removed), nothing of its new version in the worker, and status says it is not installed."""
    answer = seen["answer"]
    assert CHANGED not in seen["removed"], seen["removed"]
    assert CHANGED in [n for n, _ in seen["routes"]] or CHANGED in seen["unrouted"]
    assert answer["ok"] is False, answer
    assert "manual tunnels change not installed (the previous version of change removed)" in answer["error"]
    assert "manual tunnels removed" not in answer["error"]
    assert seen["sas"] == sa_pair(1) | seen["foreign"]   # keep's, and what was there before
    (entry,) = [t for t in seen["status"]["tunnels"] if t["name"] == "change"]
    assert entry["sas"] == [] and entry["not_installed"], entry


def run_failing_rotation(tmp_path: Path, fail: Any, repair: Any, foreign: set[tuple[int, Direction]]) -> dict[str, Any]:
    """change gets a new key (and spi_in 0xC0010033); fail(h) makes its install fail, repair(h) undoes
    that before a second reload of the same file, and a third reload removes the tunnel."""
    seen: dict[str, Any] = {"foreign": foreign}

    async def body() -> None:
        h, tun = await started(tmp_path)
        rotated = conf(tmp_path, tunnel("keep", 1), tunnel("change", 3, KEY_A2, spi_in=0xC0010033))
        await fail(h)
        seen["answer"] = await h.reload(rotated)
        seen["routes"], seen["unrouted"], seen["removed"] = list(tun.routes), dict(tun.unrouted), list(tun.removed)
        seen["sas"], seen["status"] = h.sas(), await status(h)
        await repair(h)
        seen["again"] = await h.reload(rotated)
        seen["sas_again"], seen["status_again"] = h.sas(), await status(h)
        seen["removed_again"] = list(tun.removed)
        seen["gone"] = await h.reload(conf(tmp_path, tunnel("keep", 1)))
        seen["removed_at_last"] = list(tun.removed)
        h.stop()
    asyncio.run(body())
    return seen


def assert_installed_later_and_removed_last(seen: dict[str, Any]) -> None:
    assert seen["again"] == {"ok": True, "message": "manual tunnels added: change"}, seen["again"]
    assert (0xC0010033, Direction.IN) in seen["sas_again"]
    assert not any("not_installed" in t for t in seen["status_again"]["tunnels"])
    assert CHANGED not in seen["removed_again"]
    assert seen["gone"]["ok"] is True and CHANGED in seen["removed_at_last"]


def test_a_replaced_tunnel_the_worker_refuses_keeps_its_tun_route(tmp_path: Path) -> None:
    """review M's proof: the new version's inbound SPI is held by another SA in the worker."""
    taken = 0xC0010033

    async def take(h: Harness) -> None:
        await h.worker.request(lambda r: pipe.GetSpi(r, taken, taken))

    async def free(h: Harness) -> None:
        await h.worker.request(lambda r: pipe.Delete(r, taken, Direction.IN, None))

    seen = run_failing_rotation(tmp_path, take, free, {(taken, Direction.IN)})
    assert_failed_closed(seen)
    assert "GetSpi" in seen["answer"]["error"]
    assert_installed_later_and_removed_last(seen)


def test_a_replaced_tunnel_whose_state_file_cannot_be_written_keeps_its_tun_route(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A key rotation on a full disk: the new key's state file cannot be written (ENOSPC)."""
    real = seqstate.write_atomic_at

    def full(dir_fd: int, name: str, data: bytes, owner: tuple[int, int] | None = None) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    async def fill(h: Harness) -> None:
        monkeypatch.setattr(seqstate, "write_atomic_at", full)

    async def free(h: Harness) -> None:
        monkeypatch.setattr(seqstate, "write_atomic_at", real)

    seen = run_failing_rotation(tmp_path, fill, free, set())
    assert_failed_closed(seen)
    assert os.strerror(errno.ENOSPC) in seen["answer"]["error"]
    assert_installed_later_and_removed_last(seen)


def test_a_new_tunnel_that_fails_to_install_is_routed_into_the_tun(tmp_path: Path) -> None:
    """Its traffic goes to the TUN, where the worker drops it (no policy), as the configuration asks
    for it to be protected; status lists it as not installed, in text too."""
    seen: dict[str, Any] = {}

    async def body() -> None:
        h, tun = await started(tmp_path)
        taken = 0xC0010004
        await h.worker.request(lambda r: pipe.GetSpi(r, taken, taken))
        seen["answer"] = await h.reload(conf(tmp_path, tunnel("keep", 1), tunnel("change", 3), tunnel("new", 4)))
        seen["routes"] = [n for n, _ in tun.routes]
        dump = (await h.worker.request(lambda r: pipe.Dump(r)))[0]
        seen["status"] = render(status_document(stub_daemon(lambda d: {}), dump) | h.daemon.manual.status(dump))
        h.stop()
    asyncio.run(body())
    assert seen["answer"]["ok"] is False and "manual tunnels new not installed: " in seen["answer"]["error"]
    assert ip_network("10.2.4.0/24") in seen["routes"]
    assert "not installed, traffic dropped until a reload installs it: new: installing SAs failed" \
        in seen["status"], seen["status"]
