"""Review revfull3 F1, end to end: a full-tunnel site that takes EAP road warriors never brings one up.

tunsec always uses UDP encapsulation, so its client floats to port 4500 for IKE_AUTH (as a NAT'd
client, or a strongSwan one with MOBIKE, does).  The site's IKE_AUTH answers before the client is
authenticated (the EAP rounds) are not trusted by services/ike/exclude_trust.py, get no exclude route,
and on port 4500 (the worker's SEND_IKE takes no interface) go into the site's full-tunnel TUN
(``into_tun``): the client never sees its EAP challenge.  The same pair with PSK comes up
(tests/e2e/test_full_tunnel_hub_answers_roadwarriors.py): only the last IKE_AUTH answer is trusted.

    road warrior a (192.0.2.2) -- router r -- site b (198.51.100.2): hq = 0.0.0.0/0 to 203.0.113.1
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from ike_peers import Pki, TunsecIke, requires_strongswan
from roadwarrior import Pool, RoadWarriorConn
from routed_hosts import RoutedHosts
from test_full_tunnel_hub_answers_roadwarriors import SiteGateway

from tunsec.bench.netns import wait_until

pytestmark = [requires_strongswan]   # pki makes the site's certificate

USER, PASSWORD = "alice", "Alice-revfull3-pw-9"


@dataclasses.dataclass(frozen=True)
class EapSite(SiteGateway):
    """The site with EAP-MSCHAPv2 road warriors; its hub (never up) still by PSK."""

    def secrets(self) -> str:
        hq = f'  ike-hq {{\n    id = {self.my_id()}\n    secret = "revfull3-hq-psk-0123456789"\n  }}\n'
        return str(super().secrets()).replace("secrets {\n", "secrets {\n" + hq, 1)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.new_ca(tmp_path_factory, "pki-revfull3")


@pytest.fixture
def topo() -> Iterator[RoutedHosts]:
    t = RoutedHosts(prefix="revfull3")
    with t:
        yield t


@dataclasses.dataclass(frozen=True)
class EapSplitSite(EapSite):
    """The same site with a split tunnel to its hub: nothing captures the client (the control)."""

    def connections(self) -> str:
        return super().connections().replace("remote_ts = 0.0.0.0/0", "remote_ts = 10.9.0.0/16")


def test_a_split_tunnel_site_brings_up_the_same_eap_road_warrior(topo: RoutedHosts, pki: Pki) -> None:
    """The control: the same pair and configuration come up when the site's tunnel is not a full one."""
    site, client = _pair(topo, pki, EapSplitSite)
    site.start()
    client.start()
    assert wait_until(lambda: bool(client.established()), 30), site.log_tail()
    client.stop()
    site.stop()


def _pair(topo: RoutedHosts, pki: Pki, kind: type[EapSite]) -> tuple[TunsecIke, TunsecIke]:
    gw = kind(topo.b, topo.a, pools=(Pool("rw4", "10.3.0.0/24"),), method="eap-mschapv2", users=((USER, PASSWORD),))
    client = RoadWarriorConn(topo.a, topo.b, vips=("0.0.0.0",), start_action="start", method="eap-mschapv2",
                             eap_user=USER, psk=PASSWORD)
    return TunsecIke(topo, gw, pki=pki), TunsecIke(topo, client, pki=pki)


def test_a_full_tunnel_site_brings_up_an_eap_road_warrior(topo: RoutedHosts, pki: Pki) -> None:
    site, client = _pair(topo, pki, EapSite)
    site.start()
    assert "dev tunsec0" in topo.run(topo.b, ["ip", "route", "get", topo.a.outer4]).stdout   # captured
    client.start()
    up = wait_until(lambda: bool(client.established()), 30)
    counters = site.status()["exclude_routes"]
    assert up and counters["into_tun"] == 0, (
        f"the EAP road warrior did not come up; the site's IKE_AUTH answers sent into its TUN: {counters}\n"
        + site.log_tail())
    client.stop()
    site.stop()
