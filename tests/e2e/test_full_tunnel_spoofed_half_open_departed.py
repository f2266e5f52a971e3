"""Review revlast2 F1 in the kernel: a half-open IKE SA of one spoofed IKE_SA_INIT keeps no departed client's
exclude route (services/ike/exclude_trust.kept_address: an SA without an IkeSaUp record keeps nothing).

A full-tunnel site that takes road warriors (test_full_tunnel_hub_answers_roadwarriors.py's): the client
at a authenticates, so a's address gets its exclude route.  From the router, one genuine IKE_SA_INIT with
a's address as its source (test_full_tunnel_spoofed_init.py's spoof) makes a half-open IKE SA at the
site.  The client then leaves (terminate: its DELETE ends its IKE SA at the site).  Its end sweeps the
exclude routes; before h/fixsweep the half-open SA kept a's route, and with a new IKE_SA_INIT from a
within each half_open_timeout, for good: the site's traffic to a left around its full tunnel, in clear.

    road warrior a (192.0.2.2) -- router r -- site b (198.51.100.2): hq = 0.0.0.0/0 to 203.0.113.1
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from ike_peers import CONN, TunsecIke
from roadwarrior import Pool, RoadWarriorConn
from routed_hosts import RoutedHosts
from test_full_tunnel_hub_answers_roadwarriors import SiteGateway
from test_full_tunnel_spoofed_init import init_request, spoof, tunsec_routes

from tunsec.bench.netns import wait_until


@pytest.fixture
def topo() -> Iterator[RoutedHosts]:
    t = RoutedHosts(prefix="fixsweep")
    with t:
        yield t


def routed(topo: RoutedHosts, addr: str) -> bool:
    """addr has the site's exclude route."""
    return any(ln.split(" ", 1)[0] == addr for ln in tunsec_routes(topo).splitlines())


def half_open(site: TunsecIke, addr: str) -> bool:
    return any(sa["remote"].startswith(f"{addr}[") and sa["state"] == "connecting" for sa in site.ike_sas())


def test_a_spoofed_half_open_ike_sa_keeps_no_departed_clients_exclude_route(topo: RoutedHosts) -> None:
    # the half-open SA outlives the client's end by far: the order below does not depend on timing
    site = TunsecIke(topo, SiteGateway(topo.b, topo.a, pools=(Pool("rw4", "10.3.0.0/24"),)),
                     tunsec_extra="  half_open_timeout = 600\n")
    client = TunsecIke(topo, RoadWarriorConn(topo.a, topo.b, vips=("0.0.0.0",), start_action="start"))
    client_addr = topo.a.outer4
    site.start()
    client.start()
    assert wait_until(lambda: bool(client.established()), 30), site.log_tail()
    assert wait_until(lambda: routed(topo, client_addr), 10), site.log_tail()
    spoof(topo, [client_addr], init_request(topo, site.conn))
    assert wait_until(lambda: half_open(site, client_addr), 15), "no half-open IKE SA (the premise)\n" + site.log_tail()
    r = client.cli("terminate", "--ike", CONN)
    assert r.returncode == 0, r.stdout + r.stderr
    assert wait_until(lambda: not [sa for sa in site.ike_sas() if sa["state"] != "connecting"], 30), site.ike_sas()
    wait_until(lambda: not routed(topo, client_addr), 10)
    assert half_open(site, client_addr), "the half-open IKE SA is gone already (the premise)"
    path = topo.run(topo.b, ["ip", "route", "get", client_addr]).stdout
    assert not routed(topo, client_addr) and "dev tunsec0" in path, (
        f"the departed client's exclude route stays for a half-open IKE SA of one spoofed IKE_SA_INIT: traffic "
        f"to {client_addr} leaves around the full tunnel, in clear: {path}{tunsec_routes(topo)}")
    client.stop()
    site.stop()
