"""Review revblock's findings on prohibit-route blocks (h/blockfix), with the real Tun and real routes in a
namespace (blockfix-*) with a default route through eth0 (the way out in clear).

F1: an unblock dumps (sees its own block), then another instance's block takes its place (another process:
nothing orders the two), then the unblock's delete.  IPv4: the marked delete was refused (ESRCH) and unblock
raised for a block already gone.  IPv6: the kernel's delete ignores the metrics (the mark), so it took the
other instance's block and the network's traffic left by eth0 in clear.
F1b: after that ESRCH the network stayed listed as blocked; the blockwatch put back a block no tunnel wanted.
F2: two TUN names with one mark (31 bits): nothing said so.
F3: remove_address's stand-in (metric 0xFFFFFFFF) was put in with replace and deleted by network and metric
only: an operator's own prohibit route at that metric (a kill switch) was taken over, then deleted."""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import test_prohibit_two_instances as two
from test_prohibit_mark_netns import blocks, make_ns, opened, way
from test_vips_netns import inside

from tunsec.dataplane import blockwatch
from tunsec.dataplane import tun as tunmod
from tunsec.dataplane.blockrecord import BlockRecord, block_mark, record_name, this_netns
from tunsec.dataplane.netlink import IPRoute

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(two.NETNS_PROBLEM is not None, reason=f"NETNS TESTS SKIPPED: {two.NETNS_PROBLEM}"),
]

TUN_A, TUN_B = "tsra0", "tsrb0"
NETS = {4: ipaddress.ip_network("10.9.0.0/16"), 6: ipaddress.ip_network("2001:db8:9::/48")}
PROBES = {4: "10.9.0.5", 6: "2001:db8:9::5"}


@pytest.fixture
def ns() -> Iterator[str]:
    name = make_ns("blockfix", TUN_A, TUN_B)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def racing(monkeypatch: pytest.MonkeyPatch, meanwhile: Any, family: int | None = None) -> None:
    """tun's next IPRoute is the real one, but meanwhile() runs right after its first dump (of family, 4 or 6:
    the start dumps both), once."""
    real = tunmod._iproute

    class Racing:
        def __init__(self) -> None:
            self.ipr = real()

        def __enter__(self) -> Racing:
            self.ipr.__enter__()
            return self

        def __exit__(self, *exc: Any) -> Any:
            return self.ipr.__exit__(*exc)

        def route(self, cmd: str, **kw: Any) -> Any:
            out = self.ipr.route(cmd, **kw)
            if cmd == "dump" and family in (None, {2: 4, 10: 6}[kw["family"]]):
                out = list(out)
                monkeypatch.setattr(tunmod, "_iproute", real)
                meanwhile()
            return out

    monkeypatch.setattr(tunmod, "_iproute", Racing)


@pytest.mark.parametrize("family", [4, 6])
def test_another_instances_block_landing_during_an_unblock_stays(ns: str, tmp_path: Path, family: int,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """F1: B's block lands between A's dump and A's delete.  B's block stays, marked B's, NET's traffic refused
    (IPv6: put back right after A's delete took it), and A's unblock does not fail (its own block is gone,
    whatever the family); B lifts its block later, and none is left."""
    net, probe = NETS[family], PROBES[family]

    def run() -> dict[str, object]:
        a, b = opened(TUN_A, tmp_path / "a"), opened(TUN_B, tmp_path / "b")
        a.block(net, "A's route refused")
        racing(monkeypatch, lambda: b.block(net, "B's route refused"))
        err = None
        try:
            a.unblock(net)
        except OSError as exc:
            err = str(exc)
        seen = {"blocks": blocks(), "way": way(probe), "err": err, "a": dict(a.unrouted)}
        b.unblock(net)   # B's block, put back as it was: B's to lift (nothing of A's left either)
        return {**seen, "after_b": blocks()}

    seen = inside(ns, run)
    assert seen["blocks"] == {net: [block_mark(TUN_B)]} and seen["way"] == "refused", seen
    assert seen["err"] is None and seen["a"] == {} and seen["after_b"] == {}, seen


def test_an_unblock_whose_block_was_gone_forgets_the_network(ns: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """F1b (IPv4): the reload that drops NET's last tunnel unblocks it while B's block takes the place of A's.
    A forgets NET (it is no tunnel's any more): once B's block goes, A's blockwatch puts back nothing."""
    net = NETS[4]

    def run() -> dict[str, object]:
        a, b = opened(TUN_A, tmp_path / "a"), opened(TUN_B, tmp_path / "b")
        keeper = blockwatch.Keeper(a)
        a.block(net, "A's route refused")
        racing(monkeypatch, lambda: b.block(net, "B's route refused"))
        with contextlib.suppress(OSError):   # as reroute._unblock_unwanted: a failure is said, the reload goes on
            a.unblock(net)
        keeper.check()
        b.remove_routes()
        keeper.check()
        return {"blocks": blocks(), "a": dict(a.unrouted), "lost": dict(keeper.lost)}

    seen = inside(ns, run)
    assert seen == {"blocks": {}, "a": {}, "lost": {}}, seen


@pytest.mark.parametrize("family", [4, 6])
def test_a_start_removing_its_leftover_leaves_the_block_that_took_its_place(ns: str, tmp_path: Path, family: int,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """F1 at start: A's leftover block (A killed), of a network no tunnel of A's wants; A's start dumps, B's
    block lands, A's start deletes.  B's block stays and NET's traffic is refused."""
    net, probe = NETS[family], PROBES[family]

    def run() -> dict[str, object]:
        killed, b = opened(TUN_A, tmp_path / "a"), opened(TUN_B, tmp_path / "b")
        killed.block(net, "A's route refused")   # then kill -9: the block and the record stay
        a = opened(TUN_A, tmp_path / "a")
        racing(monkeypatch, lambda: b.block(net, "B's route refused"), family)
        a.clear_stale_blocks(set())
        return {"blocks": blocks(), "way": way(probe), "a": dict(a.unrouted)}

    seen = inside(ns, run)
    assert seen["blocks"] == {net: [block_mark(TUN_B)]} and seen["way"] == "refused", seen
    assert seen["a"] == {}, seen   # A's is gone (IPv4: ESRCH), not A's to hold: nothing of A's blocked


def colliding_names() -> tuple[str, str]:
    """Two TUN names with one mark (a birthday search over 31 bits: ~2^16 names)."""
    seen: dict[int, str] = {}
    i = 0
    while True:
        name = f"t{i:x}"
        digest = hashlib.blake2b(name.encode(), digest_size=4, person=b"tunsec-block").digest()
        mark = int.from_bytes(digest, "big") | 1
        if mark in seen:
            return seen[mark], name
        seen[mark] = name
        i += 1


def test_a_start_says_another_link_has_its_tuns_mark(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """F2: x and y share a mark; x's start (its record opened) says y's name, as an error; a start beside a
    link with another mark says nothing of the kind."""
    x, y = colliding_names()
    assert block_mark(x) == block_mark(y) and x != y
    name = make_ns("blockfix", x, y, TUN_A)
    try:
        def start(tun: str) -> list[str]:
            caplog.clear()
            with caplog.at_level(logging.ERROR, logger="tunsec"):
                (tmp_path / tun).mkdir(mode=0o700)
                BlockRecord.open(str(tmp_path / tun), tun, None).close()
            return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]

        said = inside(name, lambda: start(x))
        assert len(said) == 1 and y in said[0] and "same mark" in said[0], said
        assert inside(name, lambda: start(TUN_A)) == []
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def prohibits_v4() -> list[tuple[str, int, int]]:
    """Every IPv4 prohibit route here: network, proto, metric."""
    with tunmod.IPRoute() as ipr:
        return sorted((f"{r.get_attr('RTA_DST')}/{r['dst_len']}", r["proto"], r.get_attr("RTA_PRIORITY") or 0)
                      for r in ipr.route("dump", family=2) if r["type"] == 8)


@pytest.mark.parametrize("proto", [None, 116])
def test_a_vip_removal_leaves_an_operators_route_at_the_stand_ins_metric(tmp_path: Path, proto: int | None) -> None:
    """F3: root's `ip route add prohibit NET metric 4294967295` (a kill switch under the VPN's route; also with
    tunsec's proto, unmarked) is there before a virtual IP goes: afterwards it is still there, as it was, and
    NET's traffic is refused once tunsec's route goes (its stop)."""
    name = make_ns("blockfix", "tsrv0")
    extra = ["proto", str(proto)] if proto is not None else []
    subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "tsrv0", "up"], check=True)
    subprocess.run(["ip", "netns", "exec", name, "ip", "route", "add", "prohibit", str(NETS[4]), "metric",
                    "4294967295", *extra], check=True)
    try:
        def run() -> dict[str, object]:
            before = prohibits_v4()
            a = opened("tsrv0", tmp_path / "a")
            a.add_address("10.3.0.1")
            a.add_route(NETS[4], "10.3.0.1")
            a.remove_address("10.3.0.1")
            after_vip, routes = prohibits_v4(), list(a.routes)
            a.remove_routes()   # tunsec stops
            return {"before": before, "after_vip": after_vip, "routes": routes, "way": way(PROBES[4])}

        seen = inside(name, run)
        assert seen["after_vip"] == seen["before"] == [("10.9.0.0/16", proto or 3, 0xFFFFFFFF)], seen
        assert seen["routes"] == [(NETS[4], None)] and seen["way"] == "refused", seen
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_a_start_removing_an_unmarked_leftover_leaves_the_marked_block_that_replaced_it(
        ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review revfix F1: A's record lists NET, whose unmarked block (an older tunsec's, before marks) is
    still in; no tunnel of A's wants NET now.  A's start dumps (its unmarked leftover), B's marked block
    of NET lands (its replace takes the leftover's place), A's start deletes by a key without metrics,
    which an IPv4 delete matches against any: B's block went and NET left by eth0 in clear (only IPv6
    deletes read the kernel's notification then).  Now B's block is put back: NET stays refused."""
    net = NETS[4]

    def run() -> dict[str, object]:
        state = tmp_path / "a"
        state.mkdir(mode=0o700)
        (state / record_name(TUN_A, this_netns().suffix)).write_text(
            json.dumps({"tun": TUN_A, "networks": [str(net)]}) + "\n")
        with IPRoute() as ipr:   # a pre-mark tunsec's block: proto 116, no mark
            ipr.route("add", dst=str(net), type="prohibit", proto=116)
        a, b = opened(TUN_A, state), opened(TUN_B, tmp_path / "b")
        racing(monkeypatch, lambda: b.block(net, "B's route refused"), 4)
        a.clear_stale_blocks(set())
        return {"blocks": blocks(), "way": way(PROBES[4])}

    seen = inside(ns, run)
    assert seen["blocks"] == {net: [block_mark(TUN_B)]} and seen["way"] == "refused", seen
