"""A full-tunnel road warrior (``vips = 0.0.0.0, ::``, ``remote_ts = 0.0.0.0/0, ::/0``) behind a router:
tunsec as the client, charon as the gateway on another subnet, each reaching the other through its
default route (tests/routed_hosts.py).

The client's routes into the TUN must not take its own IKE and ESP to the gateway (an exclude route
keeps the gateway's address on the path it had), nor replace the host's default route: its traffic
to a host beyond the gateway passes through the tunnel, its IKE SA survives a rekey, and after
tunsec stops the host's default routes are as before, no route of tunsec's left.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest
import tunsec_table
from ike_peers import CONN, Charon, TunsecIke, requires_strongswan
from roadwarrior import GatewayConn, Pool, RoadWarriorConn
from routed_hosts import RoutedHosts

from tunsec.bench.netns import wait_until
from tunsec.dataplane.blockrecord import block_mark
from tunsec.dataplane.prohibitroute import RTPROT_TUNSEC

pytestmark = [pytest.mark.interop, requires_strongswan]

EVERYTHING = "0.0.0.0/0, ::/0"
RW4, RW6 = Pool("rw4", "10.3.0.0/24"), Pool("rw6", "fd00:3::/120")
VIP4, VIP6 = "10.3.0.1", "fd00:3::1"


@pytest.fixture
def topo() -> Iterator[RoutedHosts]:
    with RoutedHosts(prefix="fixfull") as t:
        yield t


GONE = "203.0.113.77"   # an address no configuration here has


def tunsec_routes(topo: RoutedHosts) -> str:
    """The routes of tunsec's proto in the client, both families."""
    return tunsec_table.proto_routes(topo.a.ns)


def full_tunnel(topo: RoutedHosts) -> tuple[Charon, TunsecIke]:
    gateway = Charon(topo, GatewayConn(topo.b, topo.a, pools=(RW4, RW6), local_ts=EVERYTHING))
    client = TunsecIke(topo, RoadWarriorConn(topo.a, topo.b, vips=("0.0.0.0", "::"), remote_ts=EVERYTHING,
                                             start_action="start"))
    return gateway, client


def test_full_tunnel_client_keeps_its_gateway_and_default_route(topo: RoutedHosts) -> None:
    before = topo.default_routes(topo.a)
    gateway, client = full_tunnel(topo)
    gateway.start()
    client.start()
    sa = client.wait_established(timeout=20)
    assert sorted(sa["local_vips"]) == sorted([VIP4, VIP6])
    # the default routes are the host's own still; the tunnel's are the two halves of each family
    assert topo.default_routes(topo.a) == before
    tun4 = tunsec_table.show("-4", "dev", "tunsec0", ns=topo.a.ns)
    assert "0.0.0.0/1" in tun4 and "128.0.0.0/1" in tun4, tun4
    tun6 = tunsec_table.show("-6", "dev", "tunsec0", ns=topo.a.ns)
    assert "::/1" in tun6 and "8000::/1" in tun6, tun6
    # the gateway's address keeps the path it had: through the router, not into the TUN
    path = topo.run(topo.a, ["ip", "route", "get", topo.b.outer4]).stdout
    assert "via 192.0.2.1 dev veth0" in path, path
    # a host beyond the gateway (its inner addresses) through the tunnel, from the virtual IPs
    assert topo.wait_ping(topo.a, topo.b.inner4, timeout=10)
    assert topo.wait_ping(topo.a, topo.b.inner6, timeout=10)
    assert any(c["spi_in"] for c in sa["children"])
    # the gateway rekeys the IKE SA: the exchange reaches the client and its answer the gateway
    r = gateway.swanctl("--rekey", "--ike", CONN)
    assert r.returncode == 0, r.stdout + r.stderr
    assert wait_until(lambda: any(s["spi_i"] != sa["spi_i"] for s in client.established()), 15), client.log_tail()
    assert topo.ping(topo.a, topo.b.inner4, count=2)
    client.stop()
    assert topo.default_routes(topo.a) == before
    assert tunsec_routes(topo) == ""


def test_a_start_after_kill_9_removes_the_exclude_route_the_killed_run_left(topo: RoutedHosts) -> None:
    before = topo.default_routes(topo.a)
    gateway, client = full_tunnel(topo)
    gateway.start()
    client.start()
    client.wait_established(timeout=20)
    assert client.proc is not None
    os.kill(client.proc.pid, signal.SIGKILL)
    client.proc.wait(timeout=10)
    client.proc = None
    # the TUN went with its last descriptor, its routes with it; the exclude route stayed
    exclude = f"{topo.b.outer4} table 116 "   # a throw route in tunsec's table
    assert exclude in tunsec_routes(topo) and topo.default_routes(topo.a) == before
    # one of a peer no longer configured (the killed run's configuration had it)
    topo.run(topo.a, ["ip", "route", "add", "throw", f"{GONE}/32", "table", "116", "proto", str(RTPROT_TUNSEC),
                      "metric", str(block_mark("tunsec0"))])
    client.start()
    # the configured peer's is replaced by the start's own (h/prepare: no longer removed first), the other goes
    added = f"exclude route {topo.b.outer4}/32 (the host's path via 192.0.2.1"
    assert wait_until(lambda: client.log_text().count(added) == 2, 15), client.log_tail()
    client.wait_log(rf"exclude route {GONE}/32 an earlier tunsec left removed")
    client.wait_established(timeout=20)
    assert tunsec_routes(topo).count(exclude) == 1
    assert topo.wait_ping(topo.a, topo.b.inner4, timeout=10)
    client.stop()
    assert tunsec_routes(topo) == "" and topo.default_routes(topo.a) == before
