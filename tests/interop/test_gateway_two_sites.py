"""A tunsec gateway with two strongSwan sites on one ``remote_addrs = %any`` connection.

Three namespaces (tunsec.bench.netns.StarHosts): the gateway G (10.1.0.0/24
behind it) and sites A (10.2.1.0/24) and B (10.2.2.0/24), each joined to G
by its own veth pair; charon with kernel-libipsec in each site initiates.
Each site's Child SA must have its own reqid, policy and SAs on the gateway,
each site's pings must go through its own SA, and B terminating and coming
back must leave A's continuous ping untouched (every echo answered).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from ike_peers import CONN, Charon, Conn, TunsecIke, requires_strongswan
from roadwarrior import hub_gateway

from tunsec.bench.netns import StarHosts, wait_until

pytestmark = [
    pytest.mark.interop,
    pytest.mark.netns,
    requires_strongswan,
]


@pytest.fixture
def star() -> Iterator[StarHosts]:
    with StarHosts() as t:
        yield t


def children(gw: TunsecIke) -> dict[str, dict[str, Any]]:
    """The gateway's established children by site address."""
    out = {}
    for sa in gw.ike_sas():
        if sa["state"] == "established":
            for c in sa["children"]:
                out[sa["remote"].split("[")[0]] = c | {"ike_remote": sa["remote"]}
    return out


def counters(gw: TunsecIke, child: dict[str, Any]) -> dict[str, int]:
    """Packets through a child's inbound and outbound SA (the outbound one is (SPI, peer))."""
    sas = gw.status()["sas"]
    (sa_in,) = [s for s in sas if s["spi"] == child["spi_in"] and s["direction"] == "in"]
    (sa_out,) = [s for s in sas if s["spi"] == child["spi_out"] and s["direction"] == "out"
                 and s["remote"] == child["remote"]]
    return {"in": sa_in["packets"], "out": sa_out["packets"]}


def test_two_sites_each_through_its_own_sa(star: StarHosts) -> None:
    g, a, b = star.g, star.a, star.b
    gw = TunsecIke(star, hub_gateway(star))
    sites = {h.outer4: Charon(star, Conn(h, star.gateway_for(h))) for h in (a, b)}
    for c in sites.values():
        c.start()
    gw.start()
    for c in sites.values():
        r = c.initiate()
        assert r.returncode == 0, f"swanctl --initiate in {c.host.ns}: {r.stdout[-1500:]}\n{gw.log_tail()}"
    assert wait_until(lambda: len(children(gw)) == 2, 15), gw.log_tail()
    kids = children(gw)
    ca, cb = kids[a.outer4], kids[b.outer4]
    # own reqid, own SAs, own selectors
    assert ca["reqid"] != cb["reqid"]
    assert ca["remote_ts"] == [a.inner_net4] and cb["remote_ts"] == [b.inner_net4]
    assert ca["remote"].startswith(a.outer4 + "[") and cb["remote"].startswith(b.outer4 + "[")
    policies = {p["reqid"]: p for p in gw.status()["policies"]}
    assert policies[ca["reqid"]]["out_spi"] == ca["spi_out"] and policies[cb["reqid"]]["out_spi"] == cb["spi_out"]

    # each site's pings go through its own SA, and only through it
    before = {k: counters(gw, c) for k, c in (("a", ca), ("b", cb))}
    for h in (a, b):
        assert star.wait_ping(h, g.inner4, src=h.inner4, timeout=10), f"{h.ns} cannot reach the gateway's network"
        assert star.ping(h, g.inner4, count=5, src=h.inner4), f"pings from {h.ns} lost"
        assert star.ping(star.g.ns, h.inner4, count=3, src=g.inner4), f"pings from the gateway to {h.ns} lost"
    after = {k: counters(gw, c) for k, c in (("a", ca), ("b", cb))}
    for k in ("a", "b"):
        assert after[k]["in"] - before[k]["in"] >= 6 + 3      # echo requests in, replies to ours in
        assert after[k]["out"] - before[k]["out"] >= 6 + 3

    # A pings all along while B terminates its IKE SA and comes back
    log = star.workdir / "ping-a.log"
    ping = star.popen(a, ["ping", "-n", "-i", "0.1", "-c", "150", "-W", "3", "-I", a.inner4, g.inner4], log=log)
    charon_b = sites[b.outer4]
    assert wait_until(lambda: log.exists() and log.read_text().count("bytes from") >= 10, 10)
    charon_b.swanctl_ok("--terminate", "--ike", CONN)
    assert wait_until(lambda: b.outer4 not in children(gw), 10), gw.log_tail()
    assert children(gw)[a.outer4]["spi_out"] == ca["spi_out"]     # A's SA untouched
    assert not star.ping(b, g.inner4, src=b.inner4, timeout=1.0)   # B has no tunnel now
    r = charon_b.initiate()
    assert r.returncode == 0, f"B's second initiate: {r.stdout[-1500:]}\n{gw.log_tail()}"
    assert wait_until(lambda: b.outer4 in children(gw), 15), gw.log_tail()
    cb2 = children(gw)[b.outer4]
    assert cb2["spi_in"] != cb["spi_in"] and cb2["reqid"] != ca["reqid"]
    assert star.wait_ping(b, g.inner4, src=b.inner4, timeout=10)
    assert ping.wait(timeout=60) is not None
    text = log.read_text()
    m = re.search(r"(\d+) packets transmitted, (\d+) received", text)
    assert m, text[-500:]
    assert (int(m.group(1)), int(m.group(2))) == (150, 150), f"A lost pings while B left and came back:\n{text[-800:]}"
    ca_end = children(gw)[a.outer4]
    assert (ca_end["spi_in"], ca_end["spi_out"], ca_end["reqid"]) == (ca["spi_in"], ca["spi_out"], ca["reqid"])
    assert counters(gw, ca_end)["in"] - after["a"]["in"] >= 150
