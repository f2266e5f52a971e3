"""Virtual IPs with strongSwan: a charon road-warrior client (kernel-libipsec, ``vips = 0.0.0.0, ::``)
in namespace B against a tunsec gateway with an IPv4 and an IPv6 pool in namespace A.

The client must get the first address of each pool (seen by charon in ``swanctl --list-sas``
and installed on its TUN), the gateway's Child SA must cover exactly those addresses, pings
from each virtual IP to the gateway's inner addresses must pass, and ``tunsec status`` must
list the leases; after the client leaves, the leases are offline and come back to it when it
reconnects. The updown scripts of both roles, and of a site-to-site child, get strongSwan's
PLUTO_* variables.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ike_peers import CHILD, CONN, Charon, Conn, TunsecIke, ident, requires_strongswan
from roadwarrior import GatewayConn, Pool, RoadWarriorConn

from tunsec.bench.netns import Host, TwoHosts, wait_until

pytestmark = [
    pytest.mark.interop,
    requires_strongswan,
]

POOL4, POOL6 = "10.3.0.0/24", "fd00:3::/120"
VIP4, VIP6 = "10.3.0.1", "fd00:3::1"
DNS4, DNS6 = "10.1.0.53", "fd00:1::53"
RW4, RW6 = Pool("rw4", POOL4, dns=DNS4), Pool("rw6", POOL6)


def gateway_conn(me: Host, peer: Host, pools: tuple[Pool, ...] = (RW4, RW6), **changes: Any) -> GatewayConn:
    """A remote-access gateway: an IPv4 and an IPv6 pool, both of its inner networks."""
    return GatewayConn(me, peer, pools=pools, local_ts=f"{me.inner_net4}, {me.inner_net6}", **changes)


def road_warrior_conn(me: Host, peer: Host, vips: tuple[str, ...] = ("0.0.0.0", "::"),
                      **changes: Any) -> RoadWarriorConn:
    """A road warrior that asks for an IPv4 and an IPv6 address, for both of the gateway's networks."""
    return RoadWarriorConn(me, peer, vips=vips, remote_ts=f"{peer.inner_net4}, {peer.inner_net6}", **changes)


@pytest.fixture
def topo() -> Iterator[TwoHosts]:
    with TwoHosts(ipv6=True) as t:
        yield t


@pytest.fixture
def scripts() -> Iterator[Path]:
    """An updown script that saves its PLUTO_* variables per call, where tunsec's unprivileged user may write."""
    out = Path(tempfile.mkdtemp(prefix="tunsec-updown-"))
    out.chmod(0o1777)
    script = out / "updown.sh"
    # written under a hidden name, then renamed: the test must never read a half-written file
    script.write_text('#!/bin/sh\nd="$(dirname "$0")"\n'
                      'env | grep ^PLUTO_ | sort > "$d/.$PLUTO_VERB.$$"\n'
                      'mv "$d/.$PLUTO_VERB.$$" "$d/$PLUTO_VERB.$$"\n')
    script.chmod(0o755)
    yield script
    shutil.rmtree(out, ignore_errors=True)


def updown_calls(script: Path, verb: str) -> list[dict[str, str]]:
    return [dict(line.split("=", 1) for line in f.read_text().splitlines())
            for f in sorted(script.parent.glob(f"{verb}.*"))]


def wait_calls(script: Path, verb: str, n: int = 1) -> list[dict[str, str]]:
    assert wait_until(lambda: len(updown_calls(script, verb)) >= n, 10), list(script.parent.iterdir())
    return updown_calls(script, verb)


def road_warrior(topo: TwoHosts, script: Path) -> tuple[TunsecIke, Charon]:
    gateway = TunsecIke(topo, gateway_conn(topo.a, topo.b, extra_child=f"        updown = {script}\n"))
    client = Charon(topo, road_warrior_conn(topo.b, topo.a))    # it installs its virtual IPs on its TUN
    client.start()
    gateway.start()
    return gateway, client


def leases(gateway: TunsecIke) -> set[tuple[str, str, str, str]]:
    return {(x["pool"], x["address"], x["identity"], x["status"]) for x in gateway.status()["leases"]}


def test_strongswan_road_warrior_gets_pool_addresses_and_pings_through(topo: TwoHosts, scripts: Path) -> None:
    gateway, client = road_warrior(topo, scripts)
    r = client.initiate()
    assert r.returncode == 0, f"swanctl --initiate: {r.stdout[-2000:]}{r.stderr}\ntunsec:\n{gateway.log_tail()}"
    sa = gateway.wait_established()
    theirs = client.sas()[CONN]
    assert sorted(theirs["local-vips"]) == sorted([VIP4, VIP6]), theirs
    (child,) = sa["children"]
    assert sorted(child["remote_ts"]) == sorted([f"{VIP4}/32", f"{VIP6}/128"])     # exactly the lease
    assert sorted(sa["remote_vips"]) == sorted([VIP4, VIP6])
    (their_child,) = theirs["child-sas"].values()
    assert sorted(their_child["local-ts"]) == sorted([f"{VIP4}/32", f"{VIP6}/128"])
    client.wait_log(rf"installing new virtual IP {VIP4}")
    # the reply carries both addresses and the pool's DNS server, before the SA payload
    client.wait_log(r"parsed IKE_AUTH response 1 \[ IDr AUTH CPRP\(ADDR ADDR6 DNS\) SA TSi TSr")
    peer = client.conn.me
    assert topo.wait_ping(peer, topo.a.inner4, src=VIP4, timeout=10)
    assert topo.wait_ping(peer, topo.a.inner6, src=VIP6, timeout=10)
    me = ident(topo.b)
    assert leases(gateway) == {("rw4", VIP4, me, "online"), ("rw6", VIP6, me, "online")}
    gateway.wait_log(rf"assigned virtual IP {VIP4}, {VIP6} to peer {me}")
    text = gateway.cli("status").stdout
    assert f"rw4: {VIP4} online {me}" in text and f"rw6: {VIP6} online {me}" in text
    # the gateway's updown script: one call per family, strongSwan's variables
    (up4,) = wait_calls(scripts, "up-client")
    (up6,) = wait_calls(scripts, "up-client-v6")
    assert (up4["PLUTO_MY_CLIENT"], up4["PLUTO_PEER_CLIENT"]) == (topo.a.inner_net4, f"{VIP4}/32")
    assert up6["PLUTO_PEER_CLIENT"] == f"{VIP6}/128"
    assert up4["PLUTO_PEER_SOURCEIP"] == VIP4 and up4["PLUTO_PEER_SOURCEIP6_1"] == VIP6
    assert (up4["PLUTO_ME"], up4["PLUTO_PEER"], up4["PLUTO_PEER_ID"]) == (topo.a.outer4, topo.b.outer4, me)
    assert (up4["PLUTO_CONNECTION"], up4["PLUTO_INTERFACE"], up4["PLUTO_PROTO"]) == (CHILD, "tunsec0", "esp")
    assert up4["PLUTO_REQID"] == up6["PLUTO_REQID"] and int(up4["PLUTO_REQID"]) > 0

    # the client leaves: leases offline; it comes back and gets the same addresses
    client.swanctl_ok("--terminate", "--ike", CONN)
    assert wait_until(lambda: leases(gateway) == {("rw4", VIP4, me, "offline"), ("rw6", VIP6, me, "offline")}, 10)
    # the leases go offline with the IKE SA; its Child SA's policies go after, through the worker
    assert wait_until(lambda: gateway.status()["policies"] == [], 10), gateway.status()["policies"]
    (down4,) = wait_calls(scripts, "down-client")
    assert down4["PLUTO_PEER_CLIENT"] == f"{VIP4}/32" and down4["PLUTO_REQID"] == up4["PLUTO_REQID"]
    r = client.initiate()
    assert r.returncode == 0, r.stdout[-2000:]
    gateway.wait_established()
    assert sorted(client.sas()[CONN]["local-vips"]) == sorted([VIP4, VIP6])
    assert topo.wait_ping(peer, topo.a.inner4, src=VIP4, timeout=10)


# --------------------------------------------------------------------------
# tunsec as the road warrior, a strongSwan gateway with pools
# --------------------------------------------------------------------------


def _proc_status(pid: int, key: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return line.split()[1]
    raise AssertionError(f"no {key} for {pid}")


def _tun_addresses(topo: TwoHosts) -> str:
    return topo.run(topo.a, ["ip", "-o", "addr", "show", "dev", "tunsec0"], check=False).stdout


def test_tunsec_road_warrior_against_a_strongswan_gateway(topo: TwoHosts, scripts: Path) -> None:
    # the gateway connection tunsec has in the other tests: the swanctl.conf syntax is shared
    gateway = Charon(topo, gateway_conn(topo.b, topo.a, pools=(RW4, Pool("rw6", POOL6, dns=DNS6))))
    client = TunsecIke(topo, road_warrior_conn(topo.a, topo.b, start_action="start",
                                               extra_child=f"        updown = {scripts}\n"))
    gateway.start()
    client.start()
    sa = client.wait_established()
    assert sorted(sa["local_vips"]) == sorted([VIP4, VIP6])
    (child,) = sa["children"]
    assert sorted(child["local_ts"]) == sorted([f"{VIP4}/32", f"{VIP6}/128"])
    (theirs,) = gateway.sas()[CONN]["child-sas"].values()
    assert sorted(theirs["remote-ts"]) == sorted([f"{VIP4}/32", f"{VIP6}/128"])
    # on the TUN, after the control process dropped to its user: it kept CAP_NET_ADMIN for this only
    assert wait_until(lambda: VIP4 in _tun_addresses(topo) and VIP6 in _tun_addresses(topo), 10), \
        _tun_addresses(topo)
    worker = int(client.status()["worker"]["pid"])
    control = int(_proc_status(worker, "PPid"))
    if "tunsec.dataplane.spawner" in Path(f"/proc/{control}/cmdline").read_text():   # the worker's own user
        control = int(_proc_status(control, "PPid"))
    assert int(_proc_status(control, "CapEff"), 16) == 1 << 12     # CAP_NET_ADMIN
    assert _proc_status(control, "Uid") != "0"
    # no -I: the routes to the gateway's networks carry the virtual IP as their source
    assert topo.wait_ping(topo.a, topo.b.inner4, timeout=10)
    assert topo.wait_ping(topo.a, topo.b.inner6, timeout=10)
    client.wait_log(rf"virtual IP {VIP4}, {VIP6} assigned by the peer, DNS {DNS4}, {DNS6}")
    # the client's updown script hears its virtual IPs and the gateway's DNS server
    (up4,) = wait_calls(scripts, "up-client")
    assert (up4["PLUTO_MY_CLIENT"], up4["PLUTO_PEER_CLIENT"]) == (f"{VIP4}/32", topo.b.inner_net4)
    assert (up4["PLUTO_MY_SOURCEIP"], up4["PLUTO_MY_SOURCEIP6_1"]) == (VIP4, VIP6)
    assert (up4["PLUTO_DNS4_1"], up4["PLUTO_DNS6_1"]) == (DNS4, DNS6)
    # the gateway deletes the IKE SA: the addresses leave the TUN
    gateway.swanctl_ok("--terminate", "--ike", CONN)
    assert wait_until(lambda: VIP4 not in _tun_addresses(topo) and VIP6 not in _tun_addresses(topo), 10), \
        _tun_addresses(topo)
    (down4,) = wait_calls(scripts, "down-client")
    assert down4["PLUTO_MY_SOURCEIP"] == VIP4


def test_no_address_left_fails_the_child_and_tells_the_client(topo: TwoHosts) -> None:
    """A gateway whose pools cannot serve the request (here: IPv6 only, the client asks for IPv4)."""
    gateway = TunsecIke(topo, gateway_conn(topo.a, topo.b, pools=(RW6,)))
    client = Charon(topo, road_warrior_conn(topo.b, topo.a, vips=("0.0.0.0",)))
    client.start()
    gateway.start()
    r = client.initiate()
    assert r.returncode != 0 and "received INTERNAL_ADDRESS_FAILURE notify, no CHILD_SA built" in r.stdout
    line = gateway.wait_log(r"ERROR tun child net: INTERNAL_ADDRESS_FAILURE: .*").group(0)
    assert f"no virtual IP (IPv4) for {ident(topo.b)}: pools rw6 exhausted or of another family" in line
    assert gateway.status()["leases"] == [] and gateway.status()["policies"] == []


def test_updown_for_a_site_to_site_child(topo: TwoHosts, scripts: Path) -> None:
    """updown is not only for road warriors: a subnet-to-subnet child gets up-client and down-client."""
    tunsec = TunsecIke(topo, Conn(topo.a, topo.b, start_action="start",
                                  extra_child=f"        updown = {scripts} --from-tunsec\n"))
    charon = Charon(topo, Conn(topo.b, topo.a))
    charon.start()
    tunsec.start()
    sa = tunsec.wait_established()
    (up,) = wait_calls(scripts, "up-client")
    assert (up["PLUTO_MY_CLIENT"], up["PLUTO_PEER_CLIENT"]) == (topo.a.inner_net4, topo.b.inner_net4)
    assert (up["PLUTO_MY_ID"], up["PLUTO_PEER_ID"]) == (sa["local_id"], sa["remote_id"])
    assert "PLUTO_MY_SOURCEIP" not in up and "PLUTO_PEER_SOURCEIP" not in up
    charon.swanctl_ok("--terminate", "--ike", CONN)
    (down,) = wait_calls(scripts, "down-client")
    assert down["PLUTO_REQID"] == up["PLUTO_REQID"] and down["PLUTO_UNIQUEID"] == up["PLUTO_UNIQUEID"]
