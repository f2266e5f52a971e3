"""A strongSwan road warrior back without INITIAL_CONTACT while its old IKE SA is still at the tunsec
gateway (issue 9): it gets the same virtual IP, and the traffic to that address goes to its new
Child SA at once.

charon (kernel-libipsec, ``unique = never``: no INITIAL_CONTACT) in namespace B connects to a tunsec
gateway with a pool in namespace A and pings from its virtual IP.  It then forgets its IKE SA
without the gateway hearing of it (a crash, a lost network: its DELETE is dropped by nftables in
its own namespace) and connects again.  The gateway has two IKE SAs of the same identity, and one
lease.  Before services/ike/installs.py ``_sibling`` let the new Child SA join the old one's
lineage, the gateway sent the echo replies on the old Child SA (its policies sat before the new
one's), which charon no longer has: the pings failed until DPD removed the old IKE SA (no DPD here:
for ever).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from ike_peers import CONN, Charon, TunsecIke, ident, requires_strongswan
from roadwarrior import GatewayConn, Pool, RoadWarriorConn

from tunsec.bench.netns import TwoHosts, wait_until

pytestmark = [
    pytest.mark.interop,
    requires_strongswan,
]

VIP = "10.3.0.1"
RW = Pool("rw4", "10.3.0.0/24")
TABLE = "gone"   # nftables table in the client's namespace that drops what it sends


@pytest.fixture
def topo() -> Iterator[TwoHosts]:
    with TwoHosts(ipv6=False) as t:
        yield t


def test_a_strongswan_client_back_without_initial_contact_is_reached_at_once(topo: TwoHosts) -> None:
    gateway = TunsecIke(topo, GatewayConn(topo.a, topo.b, pools=(RW,), local_ts=topo.a.inner_net4))
    client = Charon(topo, RoadWarriorConn(topo.b, topo.a, vips=("0.0.0.0",), remote_ts=topo.a.inner_net4,
                                          extra_conn="    unique = never\n"))
    client.start()
    gateway.start()
    r = client.initiate()
    assert r.returncode == 0, f"swanctl --initiate: {r.stdout[-2000:]}{r.stderr}\ntunsec:\n{gateway.log_tail()}"
    first = gateway.wait_established()
    assert first["remote_vips"] == [VIP]
    assert topo.wait_ping(topo.b, topo.a.inner4, src=VIP, timeout=10)
    # the client forgets its IKE SA; nothing of that reaches the gateway
    for rule in (["add", "table", "inet", TABLE],
                 ["add", "chain", "inet", TABLE, "out", "{ type filter hook output priority 0 ; policy drop ; }"]):
        topo.run(topo.b, ["nft", *rule], check=True)
    client.swanctl_ok("--terminate", "--ike", CONN, "--force")
    assert wait_until(lambda: CONN not in client.sas(), 10), client.list_sas()
    topo.run(topo.b, ["nft", "delete", "table", "inet", TABLE], check=True)
    # it comes back: a second IKE SA of its identity at the gateway, the same address
    r = client.initiate()
    assert r.returncode == 0, f"swanctl --initiate: {r.stdout[-2000:]}{r.stderr}\ntunsec:\n{gateway.log_tail()}"
    assert "N(INIT_CONTACT)" not in client.log.read_text()
    assert wait_until(lambda: len(gateway.established()) == 2, 10), gateway.status()["ike_sas"]
    assert client.sas()[CONN]["local-vips"] == [VIP]
    me = ident(topo.b)
    assert {(x["address"], x["identity"], x["status"]) for x in gateway.status()["leases"]} == {(VIP, me, "online")}
    # the gateway's answers reach it on its new Child SA
    assert topo.wait_ping(topo.b, topo.a.inner4, src=VIP, timeout=10), gateway.log_tail()
    reqids = {child["reqid"] for sa in gateway.established() for child in sa["children"]}
    assert len(reqids) == 1, gateway.status()["ike_sas"]
