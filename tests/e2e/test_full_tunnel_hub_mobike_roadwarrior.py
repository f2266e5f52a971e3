"""A full-tunnel site's MOBIKE road warrior (charon, ``mobike = yes``) changes its address (review
revsweep2 F2, F3): the site routes the new address around its full tunnel once the return routability
check succeeded and before it MIGRATEs the Child SA there (the check's own IKE leaves by the uplink,
unproven then, so nothing else would ask for that route: the site's ESP would follow its halves into
the TUN until it next sent IKE there), and the old address's exclude route goes once the Child SA
left it, while the IKE SA lives on (it kept no IKE SA's address any more).

charon's kernel-libipsec cannot move an SA, so it rekeys its Child SA after the update (as in
tests/interop/test_strongswan_mobike.py): the site's answer to that rekey is IKE to the new address and
would add the route too, later; hence the order of the site's log lines is what is checked.

    road warrior a (192.0.2.2, then 192.0.2.12) -- router r -- site b (198.51.100.2): hq = 0.0.0.0/0
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from ike_peers import Charon, TunsecIke, requires_strongswan
from roadwarrior import Pool, RoadWarriorConn
from routed_hosts import RoutedHosts
from test_full_tunnel_hub_answers_roadwarriors import SiteGateway

from tunsec.bench.netns import wait_until

pytestmark = [pytest.mark.interop, pytest.mark.netns, requires_strongswan]

NEW = "192.0.2.12"


@pytest.fixture
def topo() -> Iterator[RoutedHosts]:
    with RoutedHosts(prefix="fixsweep2") as t:
        yield t


def _line(lines: list[str], text: str) -> int:
    return next((i for i, ln in enumerate(lines) if text in ln), -1)


def test_a_mobike_client_of_a_full_tunnel_site_is_routed_out_at_its_new_address_before_its_esp_goes_there(
        topo: RoutedHosts) -> None:
    a = topo.a
    site = TunsecIke(topo, SiteGateway(topo.b, a, pools=(Pool("rw4", "10.3.0.0/24"),)))
    client = Charon(topo, RoadWarriorConn(a, topo.b, vips=("0.0.0.0",), fixed_address=False, mobike=True))
    site.start()
    client.start()
    r = client.initiate()
    assert r.returncode == 0, f"swanctl --initiate: {r.stdout[-1500:]}\n{site.log_tail()}"
    assert wait_until(lambda: f"exclude route {a.outer4}/32" in site.log_text(), 10), site.log_tail()
    assert "dev tunsec0" in topo.run(topo.b, ["ip", "route", "get", NEW]).stdout, "(the premise: NEW is captured)"
    assert topo.wait_ping(a, topo.b.inner4, timeout=10), site.log_tail()

    subprocess.run(["ip", "-n", a.ns, "addr", "del", f"{a.outer4}/24", "dev", a.veth], check=True)
    subprocess.run(["ip", "-n", a.ns, "addr", "add", f"{NEW}/24", "dev", a.veth], check=True)
    subprocess.run(["ip", "-n", a.ns, "route", "replace", "default", "via", topo.links[0][1]], check=True)
    moved = f"follow their peer to {NEW}:4500"
    assert wait_until(lambda: moved in site.log_text(), 30), f"{site.log_tail()}\n{client.log_tail(30)}"
    assert wait_until(lambda: f"exclude route {a.outer4}/32 removed" in site.log_text(), 10), site.log_tail()
    lines = site.log_text().splitlines()
    routed, migrated = _line(lines, f"exclude route {NEW}/32"), _line(lines, moved)
    assert 0 <= routed < migrated, (
        f"the Child SA was MIGRATEd to {NEW} before its exclude route went in (its ESP into the TUN):\n"
        + "\n".join(lines[min(routed, migrated):]))
    assert _line(lines, f"exclude route {a.outer4}/32 removed") > migrated
    assert f"via {topo.links[1][1]} dev veth0" in topo.run(topo.b, ["ip", "route", "get", NEW]).stdout
    old = topo.run(topo.b, ["ip", "route", "get", a.outer4]).stdout
    assert "dev tunsec0" in old, f"the old address stays routed around the full tunnel: {old}"
    assert topo.wait_ping(a, topo.b.inner4, timeout=10), site.log_tail()
    assert [sa["remote"] for sa in site.established()] == [f"{NEW}[4500]"]
    client.stop()
    site.stop()
