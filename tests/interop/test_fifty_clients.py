"""50 strongSwan road warriors at once against a tunsec gateway with a pool (issue 9's "50 clients").

One charon in namespace B holds 50 connections with the identities ``rw1..rw50@example.org``, each
asking for a virtual IP; they all start when loaded, so the gateway in A sees a burst of 50
IKE_SA_INITs from one address (its COOKIE thresholds and half-open limits, global and per
address, are set above that: this tests setup, not the DoS protection). The setup is the scale
benchmark's (:mod:`tunsec.bench.scale` and its parts), with N = 50.

Every client must get its own pool address, every virtual IP must pass a ping through its own
tunnel (the source address picks the Child SA on both sides), ``tunsec status`` must list the 50
leases and 50 IKE SAs, and when the clients leave, every lease must be released (offline).
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterator

import pytest
from ike_peers import requires_strongswan
from reachable import python_argv

from tunsec.bench.netns import TwoHosts, wait_until
from tunsec.bench.ping import ping_from
from tunsec.bench.scale_clients import RoadWarriors
from tunsec.bench.scale_conf import CHILD, CONN, POOL, client_id
from tunsec.bench.scale_gateways import TunsecGateway

pytestmark = [pytest.mark.interop, requires_strongswan]

N = 50
POOL_NET = "10.3.0.0/24"


@pytest.fixture
def topo() -> Iterator[TwoHosts]:
    with TwoHosts(ipv6=False, prefix="fc") as t:
        yield t


def test_fifty_road_warriors_at_once(topo: TwoHosts) -> None:
    psk = secrets.token_hex(16)
    gateway = TunsecGateway(topo, psk, N, pool=POOL_NET)
    clients = RoadWarriors(topo, psk, N)
    gateway.start(python_argv())
    clients.start()
    clients.load()

    assert clients.wait_established(30) is not None, \
        f"{clients.established()} of {N} IKE SAs up\n{gateway.diagnostics()}\n{clients.diagnostics()}"
    vips = clients.wait_vips(15)
    assert sorted(vips) == sorted(f"{CONN}{k}" for k in range(1, N + 1)), sorted(vips)
    assert len(set(vips.values())) == N, f"shared addresses: {sorted(vips.values())}"
    assert all(ipaddress.ip_address(v) in ipaddress.ip_network(POOL_NET) for v in vips.values()), vips

    answered = ping_from(topo.b, list(vips.values()), topo.a.inner4, timeout=15)
    assert answered == set(vips.values()), f"no echo reply for {sorted(set(vips.values()) - answered)}"

    status = gateway.status()
    # the burst from one address met no DoS limit (the gateway's are set above it, as charon's are)
    assert {k: status["ike_drops"][k] for k in ("cookies_sent", "block_threshold", "half_open_limit")} == \
        {"cookies_sent": 0, "block_threshold": 0, "half_open_limit": 0}, status["ike_drops"]
    leases = {(x["pool"], x["address"], x["identity"], x["status"]) for x in status["leases"]}
    assert leases == {(POOL, vips[f"{CONN}{k}"], client_id(k), "online") for k in range(1, N + 1)}
    up = [sa for sa in status["ike_sas"] if sa["state"] == "established" and sa["children"]]
    assert sorted(sa["remote_id"] for sa in up) == sorted(client_id(k) for k in range(1, N + 1))
    assert all(sa["remote_vips"] == [vips[sa["remote_id"].split("@")[0]]] for sa in up)

    assert clients.terminate_all() == []

    def released() -> bool:
        now = gateway.status()
        return not now["ike_sas"] and all(x["status"] == "offline" for x in now["leases"])

    assert wait_until(released, 15), gateway.status()["leases"]
    assert {x["address"] for x in gateway.status()["leases"]} == set(vips.values())

    # the same identity gets its address back: the client that held the pool's highest address
    # comes back alone, with 50 offline leases to choose from (first-free would give it the lowest)
    k, old = max(((int(name[len(CONN):]), ip) for name, ip in vips.items()), key=lambda x: ipaddress.ip_address(x[1]))
    r = clients.swanctl("--initiate", "--ike", f"{CONN}{k}", "--child", CHILD, "--timeout", "20", timeout=60)
    assert r.returncode == 0, f"{r.stdout[-2000:]}{r.stderr}\n{gateway.diagnostics()}"
    assert clients.vips() == {f"{CONN}{k}": old}
    back = {(x["address"], x["identity"]) for x in gateway.status()["leases"] if x["status"] == "online"}
    assert back == {(old, client_id(k))}
