"""A site's full tunnel through a charon hub beside a manual tunnel toward the same LAN (review
revclaimfix F1, h/fixclaims2): tunsec proposes TSr 0.0.0.0/0 without the manual tunnel's network
(exchanges/child.py outside_others_claims), charon as the responder narrows its ``local_ts =
0.0.0.0/0`` to the two ranges offered, and the site comes up with them: its LAN reaches the hub's
through the tunnel.  On main the hub's answer 0.0.0.0/0 was refused at every try.

RoutedHosts: the site A (LAN 10.1.0.0/24) and the hub B (10.2.0.0/24) behind a router; the manual
tunnel's peer is an address nobody answers (its network 10.77.0.0/24 is only claimed here)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from ike_peers import Charon, Conn, TunsecIke, requires_strongswan
from routed_hosts import RoutedHosts

from tunsec.statedir import init_state_dir

pytestmark = [pytest.mark.interop, requires_strongswan]

MANUAL_NET = "10.77.0.0/24"


@dataclass(frozen=True)
class SiteBesideManual(Conn):
    """The site's connection (remote_ts 0.0.0.0/0) and a manual tunnel from its LAN to MANUAL_NET."""

    def sections(self) -> str:
        return f"""manual {{
  legacy {{
    local_addr = {self.me.outer4}
    remote_addr = 192.0.2.50
    local_ts = {self.me.inner_net4}
    remote_ts = {MANUAL_NET}
    spi_in = 0xc0010001
    key_in = 0x{"11" * 20}
    spi_out = 0xc0020001
    key_out = 0x{"22" * 20}
  }}
}}
"""


@pytest.fixture
def topo() -> Iterator[RoutedHosts]:
    with RoutedHosts(prefix="fxclaims") as t:
        yield t


def test_a_site_full_tunnel_beside_a_manual_tunnel_comes_up_with_charon_as_the_hub(topo: RoutedHosts) -> None:
    hub = Charon(topo, Conn(topo.b, topo.a, local_ts="0.0.0.0/0"))
    site = TunsecIke(topo, SiteBesideManual(topo.a, topo.b, remote_ts="0.0.0.0/0", start_action="start"))
    init_state_dir(site.state_dir)   # the manual keys' sequence numbers
    hub.start()
    site.start()
    sa = site.wait_established(timeout=20)
    (child,) = sa["children"]
    assert child["remote_ts"] == ["0.0.0.0-10.76.255.255", "10.77.1.0-255.255.255.255"], site.log_tail()
    assert topo.wait_ping(topo.a, topo.b.inner4, src=topo.a.inner4, timeout=10), site.log_tail()
    assert any("proposing TSr" in line and MANUAL_NET in line for line in site.log_lines()), site.log_tail()
