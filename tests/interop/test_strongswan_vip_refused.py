"""A tunsec road warrior whose strongSwan gateway hands out an address the client's host reaches on its
LAN (192.0.2.53, a neighbour on the client's outer link 192.0.2.0/24) ends the connection
(services/ike/vip_refused.py): one ERROR line names the address, the gateway and why, the IKE SA is
deleted at both ends (charon gets the DELETE), the address never goes on the TUN, and with the default
keyingtries (1) nothing is tried again.  Before, the IKE SA and its Child SA stayed up, selectors
matching nothing of the LAN."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from ike_peers import CONN, Charon, TunsecIke, requires_strongswan
from roadwarrior import Pool
from test_strongswan_vips import _tun_addresses, gateway_conn, road_warrior_conn

from tunsec.bench.netns import TwoHosts, wait_until

pytestmark = [
    pytest.mark.interop,
    requires_strongswan,
]

NEIGHBOUR = "192.0.2.53"


@pytest.fixture
def topo() -> Iterator[TwoHosts]:
    with TwoHosts(ipv6=True) as t:
        yield t


def test_a_pool_address_on_the_clients_lan_ends_the_connection(topo: TwoHosts) -> None:
    gateway = Charon(topo, gateway_conn(topo.b, topo.a, pools=(Pool("lan", f"{NEIGHBOUR}-{NEIGHBOUR}"),)))
    client = TunsecIke(topo, road_warrior_conn(topo.a, topo.b, vips=("0.0.0.0",), start_action="start"))
    gateway.start()
    client.start()
    line = client.wait_log(rf"ERROR .*virtual IP {NEIGHBOUR} from gateway {topo.b.outer4}: an address of network "
                           r"192\.0\.2\.0/24 on the link of interface [^ ]+ .*; deleting the IKE SA, not initiating "
                           r"it again \(keyingtries = 1\)").group(0)
    assert "Traceback" not in client.log_text(), line
    assert wait_until(lambda: client.ike_sas() == [], 10), client.ike_sas()
    assert wait_until(lambda: not gateway.sas().get(CONN), 10), gateway.list_sas()
    assert NEIGHBOUR not in _tun_addresses(topo)
    assert len([ln for ln in client.log_lines() if f"virtual IP {NEIGHBOUR} from gateway" in ln]) == 1
