"""Two TUNs' blocks of one network (review AC F4's rest, h/blockmark): each instance's prohibit routes are
known by its TUN's mark (RTAX_REORDERING, blockrecord.block_mark) at start, and now also when it lifts one
(Tun.unblock, at a reload or its stop) and when blockwatch looks for it.  Both matched tunsec's proto and the
network only: instance A lifting its block of a network removed instance B's block of it too (B's replace
had taken A's place), and B's traffic took the host's default route in clear until B's blockwatch put it
back; A's blockwatch took B's block for its own.  An unmarked block (a pre-upgrade tunsec's) is A's only
when A's record listed it at start.

The real Tun (two TUNs made beforehand, as `tunsec prepare` does) and real routes in a namespace with a
default route through eth0 (the way out in clear), and two real `tunsec up` processes."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import test_prohibit_two_instances as two
from test_prohibit_record_forged import marks
from test_prohibit_two_instances import instance, prohibits, tunnel
from test_vips_netns import inside

from tunsec.bench.netns import make_netns
from tunsec.dataplane import blockwatch
from tunsec.dataplane.blockrecord import BlockRecord, block_mark, record_name, this_netns
from tunsec.dataplane.routetable import TABLE
from tunsec.dataplane.tun import IPNetwork, IPRoute, NetlinkError, Tun

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(two.NETNS_PROBLEM is not None, reason=f"NETNS TESTS SKIPPED: {two.NETNS_PROBLEM}"),
]

TUN_A, TUN_B = "tsma0", "tsmb0"
NETS = {4: ipaddress.ip_network("10.9.0.0/16"), 6: ipaddress.ip_network("2001:db8:9::/48")}
PROBES = {4: "10.9.0.5", 6: "2001:db8:9::5"}
OLD_NET = ipaddress.ip_network("10.7.0.0/16")   # a pre-upgrade tunsec's unmarked block, in A's record


@pytest.fixture
def ns() -> Iterator[str]:
    name = make_ns("blockmark", TUN_A, TUN_B)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def make_ns(prefix: str, *tuns: str) -> str:
    """A namespace PREFIX-xxxxxx: eth0 with the default routes of both families (what a network's traffic
    takes without a block), and ``tuns``, as instances' `tunsec prepare` left them; the caller deletes it."""
    return make_netns(prefix, "ip link add eth0 type veth peer name eth0p", "ip link set eth0 up",
                      "ip link set eth0p up", "ip addr add 192.168.1.10/24 dev eth0",
                      "ip -6 addr add 2001:db8:1::10/64 dev eth0 nodad", "ip route add default via 192.168.1.1",
                      "ip -6 route add default via 2001:db8:1::1", *(f"ip tuntap add dev {t} mode tun" for t in tuns))


def opened(name: str, state: Path) -> Tun:
    """Tun as the daemon has it for a TUN it did not create, with its record in state (in the namespace)."""
    state.mkdir(mode=0o700, exist_ok=True)
    tun = Tun(name, False, None)  # type: ignore[arg-type]
    tun.record = BlockRecord.open(str(state), name, None)
    return tun


def blocks() -> dict[IPNetwork, list[int | None]]:
    """tunsec's prohibit routes (proto 116) in this thread's namespace: the marks each network's carry."""
    found: dict[IPNetwork, list[int | None]] = {}
    with IPRoute() as ipr:
        for family in (4, 6):
            for r in ipr.route("dump", family=10 if family == 6 else 2):
                if r["type"] == 8 and r["proto"] == 116:
                    net = ipaddress.ip_network(f"{r.get_attr('RTA_DST')}/{r['dst_len']}")
                    m = r.get_attr("RTA_METRICS")
                    mark = m.get_attr("RTAX_REORDERING") if m is not None else None
                    found.setdefault(net, []).append(int(mark) if mark else None)
    return found


def way(probe: str) -> str:
    """How a packet to probe leaves: "refused" (a prohibit route) or the interface's name (eth0: in clear)."""
    with IPRoute() as ipr:
        try:
            oif = ipr.route("get", dst=probe)[0].get_attr("RTA_OIF")
        except NetlinkError:
            return "refused"
        return str(ipr.get_links(oif)[0].get_attr("IFLA_IFNAME"))


@pytest.mark.parametrize("family", [4, 6])
def test_an_instance_stopping_leaves_another_tuns_block_of_the_network(ns: str, tmp_path: Path, family: int) -> None:
    """A blocks NET, then B blocks it (B's replace takes the place of A's: the kernel holds one route, B's).
    A stops (Tun.remove_routes, as at exit): B's block stays, marked B's, and NET's traffic is still refused.
    Before, A's stop removed it and NET followed eth0's default route."""
    net, probe = NETS[family], PROBES[family]

    def run() -> dict[str, object]:
        a, b = opened(TUN_A, tmp_path / "a"), opened(TUN_B, tmp_path / "b")
        a.block(net, "A's route refused")
        b.block(net, "B's route refused")
        seen: dict[str, object] = {"both": blocks()}
        a.remove_routes()
        seen["a_stopped"], seen["way"] = blocks(), way(probe)
        b.remove_routes()
        seen["b_stopped"], seen["way_after"] = blocks(), way(probe)
        return seen

    seen = inside(ns, run)
    assert seen["both"] == {net: [block_mark(TUN_B)]}, seen
    assert seen["a_stopped"] == {net: [block_mark(TUN_B)]} and seen["way"] == "refused", seen
    assert seen["b_stopped"] == {} and seen["way_after"] == "eth0", seen   # B's own does go


@pytest.mark.parametrize("family", [4, 6])
def test_a_blockwatch_takes_no_other_tuns_block_for_its_own(ns: str, tmp_path: Path, family: int) -> None:
    """A blocks NET, B blocks it too (its route replaces A's).  A's blockwatch: A's block is gone and B's is
    not A's, so NET is said not blocked by A, and B's route stays as it is (put back with add, never over
    it).  Before, A took B's block for its own.  B stops (its block goes): A's next check puts A's back,
    with A's mark, and the one after finds it A's; A stops: it goes."""
    net = NETS[family]

    def run() -> dict[str, object]:
        a, b = opened(TUN_A, tmp_path / "a"), opened(TUN_B, tmp_path / "b")
        keeper = blockwatch.Keeper(a)
        a.block(net, "A's route refused")
        b.block(net, "B's route refused")
        keeper.check()
        seen: dict[str, object] = {"checked": blocks(), "a_blocked": a.unrouted[net].blocked,
                                   "a_why": a.unrouted[net].why, "a_holding": keeper.holding()}
        b.remove_routes()
        keeper.check()
        seen["put_back"], seen["a_blocked_again"] = blocks(), a.unrouted[net].blocked
        keeper.check()   # A's own, known by its mark as the dump carries it: left as it is
        seen["kept"] = (blocks(), a.unrouted[net].blocked, keeper.lost)
        a.remove_routes()
        seen["a_stopped"] = blocks()
        return seen

    seen = inside(ns, run)
    assert seen["checked"] == {net: [block_mark(TUN_B)]}, seen
    assert seen["a_blocked"] is False and "taken by a route not this instance's" in str(seen["a_why"]), seen
    assert seen["a_holding"] is True, seen   # a lost block it waits to put back: CAP_NET_ADMIN kept for it
    assert seen["put_back"] == {net: [block_mark(TUN_A)]} and seen["a_blocked_again"] is True, seen
    assert seen["kept"] == ({net: [block_mark(TUN_A)]}, True, {}), seen
    assert seen["a_stopped"] == {}, seen


def test_an_unmarked_block_is_this_instances_only_if_its_record_listed_it(ns: str, tmp_path: Path) -> None:
    """A's record lists OLD_NET, whose unmarked block (an older tunsec's: A's before an upgrade) is still in:
    A's start keeps it, as its own (OLD_NET is still wanted and not yet routed).  A blocks NET; an older
    tunsec still running (instance C, no mark) blocks NET too: its replace takes the place of A's.  A's
    blockwatch finds OLD_NET's block (A's, unmarked) and not A's of NET (C's is not A's).  A stops:
    OLD_NET's goes, C's of NET stays.  Before, A took C's block for its own and its stop removed it."""
    net = NETS[4]

    def run() -> dict[str, object]:
        state = tmp_path / "a"
        state.mkdir(mode=0o700)
        (state / record_name(TUN_A, this_netns().suffix)).write_text(
            json.dumps({"tun": TUN_A, "networks": [str(OLD_NET)]}) + "\n")
        with IPRoute() as ipr:
            ipr.route("add", dst=str(OLD_NET), type="prohibit", proto=116)
        a = opened(TUN_A, state)
        a.clear_stale_blocks({OLD_NET})
        keeper = blockwatch.Keeper(a)
        a.block(net, "A's route refused")
        with IPRoute() as ipr:   # C: an unmarked block, proto 116, where A's is (tunsec's table)
            ipr.route("replace", dst=str(net), type="prohibit", proto=116, table=TABLE)
        keeper.check()
        seen: dict[str, object] = {"checked": blocks(), "old_blocked": a.unrouted[OLD_NET].blocked,
                                   "net_blocked": a.unrouted[net].blocked}
        a.remove_routes()
        seen["a_stopped"], seen["way"] = blocks(), way(PROBES[4])
        return seen

    seen = inside(ns, run)
    assert seen["checked"] == {OLD_NET: [None], net: [None]}, seen     # nothing put over C's
    assert seen["old_blocked"] is True and seen["net_blocked"] is False, seen
    assert seen["a_stopped"] == {net: [None]} and seen["way"] == "refused", seen


def test_a_tunsec_stopping_leaves_the_block_another_tunsec_made_of_its_network(tmp_path: Path) -> None:
    """Two `tunsec up` (IPv6 disabled in their namespace: a reload adding an IPv6 network blocks it), both
    given fd00:5::/64 (two instances must not route one network; a block of it must still not open the other's
    traffic).  A blocks it, then B (B's route takes the place of A's).  A stops: B's block is in, with B's mark,
    and B never had to put it back.  Before, A's stop removed it and B's blockwatch put it back up to 2 s
    later, its traffic in clear meanwhile."""
    name = two.two_instances_ns("blockmark")
    try:
        a = instance(name, tmp_path, "a", "tsmc0", "192.0.2.1")
        b = instance(name, tmp_path, "b", "tsmd0", "192.0.2.11")
        a_site, b_site = tunnel("site-a", a.local, 2, "10.2.0.0/24"), tunnel("site-b", b.local, 4, "10.4.0.0/24")
        try:
            for inst, site, n in ((a, a_site, 3), (b, b_site, 5)):
                inst.write(site)
                inst.up()
                inst.write(site, tunnel("site-6", inst.local, n, "fd00:5::/64"))
                r = inst.reload()
                assert r.returncode == 1 and "failed: adding route fd00:5::/64" in r.stderr, (r.stdout, r.stderr)
            assert marks(name) == {"fd00:5::/64": block_mark(b.tun)}
            a.stop()
            assert marks(name) == {"fd00:5::/64": block_mark(b.tun)}, a.log.read_text()
            assert "removed by someone else: put back" not in b.log.read_text()
            b.stop()
            assert prohibits(name) == [], b.log.read_text()
        finally:
            a.stop()
            b.stop()
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
