"""(review revfull F1) an unauthenticated IKE_SA_INIT from a spoofed source makes a full-tunnel gateway
route that source's address around its tunnel, in clear (services/ike/exclude_gate.py).

tunsec runs on b (tests/routed_hosts.py: b reaches everything beyond its link through router r) as
a site that sends everything to its hub (connection ``hq``: ``remote_ts = 0.0.0.0/0``, the hub's
address 192.0.2.2) and takes road warriors from anywhere (connection ``rw``: ``remote_addrs = %any``).
b's rp_filter is loose (systemd's default on every distribution that ships it): a source the TUN's
halves route is accepted on the uplink.

From the router, a raw socket sends genuine IKE_SA_INIT requests to b with made-up sources (any
internet address: a bank, a DNS resolver, a mail server). tunsec answers each (a half-open SA, or a
COOKIE once the threshold is passed); the answer goes through ExcludeGate.holds, which sees a captured
address and adds a host route for it by the host's default route before sending. From then on, b's
own traffic and its LAN's (forwarded) to that address leaves by the uplink in clear instead of
through the tunnel to the hub, and stays so: a half-open SA that times out emits no IkeSaDown, so
no sweep removes the route; each new spoofed source adds one more (no bound).
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import tunsec_table
from ike_peers import CHILD, PSK, Conn, TunsecIke
from routed_hosts import RoutedHosts

from tunsec.bench.netns import wait_until
from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.identity import Identity
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.secret import Secret

VICTIM = "203.0.113.80"                      # an internet address the site's traffic to must go to the hub
MANY = [f"203.0.113.{i}" for i in range(100, 140)]


@dataclass(frozen=True)
class SiteConn(Conn):
    """b: everything to its hub (a, 192.0.2.2), and road warriors from any address."""

    def connections(self) -> str:
        hq = self.connection("hq").replace(f"remote_ts = {self.peer.inner_net4}", "remote_ts = 0.0.0.0/0")
        return hq + f"""  rw {{
    version = 2
    local_addrs = {self.me.outer4}
    remote_addrs = %any
    encap = yes
    proposals = {self.proposals}
    local {{
      auth = psk
      id = {self.my_id()}
    }}
    remote {{
      auth = psk
      id = roadwarrior.tunsec.test
    }}
    children {{
      {CHILD} {{
        local_ts = {self.me.inner_net4}
        remote_ts = 10.9.0.0/24
        esp_proposals = {self.esp_proposals}
        mode = tunnel
      }}
    }}
  }}
"""


@pytest.fixture
def topo() -> Iterator[RoutedHosts]:
    t = RoutedHosts(prefix="revfull")
    with t:
        for key in ("all", "default", "veth0"):   # loose reverse-path filter, systemd's 50-default.conf
            t.run(t.b, ["sysctl", "-q", "-w", f"net.ipv4.conf.{key}.rp_filter=2"])
        yield t


def init_request(topo: RoutedHosts, conn: Conn) -> bytes:
    """A genuine IKE_SA_INIT request for ``rw``, made by tunsec's engine as an initiator."""
    cfg = IkeConfig("i", LocalAuth("psk", Identity.parse("roadwarrior.tunsec.test")),
                    RemoteAuth("psk", Identity.parse(conn.my_id())), parse_proposals(conn.proposals),
                    (child_config(CHILD, "10.9.0.0/24", topo.b.inner_net4, "aes128gcm16"),),
                    psk=Secret(PSK.encode()), local_addr=VICTIM, remote_addr=topo.b.outer4)
    endpoint = IkeEndpoint([cfg])
    endpoint.initiate("i", CHILD, 0.0)
    return endpoint.datagrams_to_send(0.0)[0].data


def spoof(topo: RoutedHosts, sources: list[str], request: bytes) -> None:
    """From the router: ``request`` under a fresh SPI from each of sources to b's UDP 500."""
    raw = topo.socket(topo.r, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    try:
        for i, src in enumerate(sources):
            ike = struct.pack("!Q", 0x7E57_0000 + i) + request[8:]
            udp = struct.pack("!HHHH", 500, 500, 8 + len(ike), 0)
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp) + len(ike), 0, 0, 64, socket.IPPROTO_UDP, 0,
                             socket.inet_aton(src), socket.inet_aton(topo.b.outer4))
            raw.sendto(ip + udp + ike, (topo.b.outer4, 0))
            time.sleep(0.01)
    finally:
        raw.close()


def tunsec_routes(topo: RoutedHosts) -> str:
    return tunsec_table.proto_routes(topo.b.ns)


def started_site(topo: RoutedHosts) -> tuple[TunsecIke, SiteConn]:
    conn = SiteConn(topo.b, topo.a)
    site = TunsecIke(topo, conn)
    site.start()
    # the hub's own address keeps its path (its exclude route): the gateway to everything else is the TUN
    assert "dev tunsec0" in topo.run(topo.b, ["ip", "route", "get", VICTIM]).stdout
    return site, conn


def answered(site: TunsecIke, source: str) -> bool:
    """tunsec took the request from source (a half-open IKE SA with that peer): its answer is on its way."""
    return any(sa["remote"].startswith(f"{source}[") for sa in site.ike_sas())


def test_a_spoofed_ike_sa_init_does_not_route_its_source_around_the_full_tunnel(topo: RoutedHosts) -> None:
    site, conn = started_site(topo)
    spoof(topo, [VICTIM], init_request(topo, conn))
    assert wait_until(lambda: answered(site, VICTIM), 15), site.log_tail()
    # the answer went through the gate (synchronously, in the pump); an exclude route follows within a
    # thread's netlink round trip if there is to be one
    wait_until(lambda: VICTIM in tunsec_routes(topo), 5)
    path = topo.run(topo.b, ["ip", "route", "get", VICTIM]).stdout
    assert "dev tunsec0" in path, f"traffic to {VICTIM} leaves in clear: {path}{tunsec_routes(topo)}"


def test_spoofed_sources_add_no_exclude_routes_however_many(topo: RoutedHosts) -> None:
    site, conn = started_site(topo)
    before = tunsec_routes(topo)
    spoof(topo, MANY, init_request(topo, conn))
    assert wait_until(lambda: answered(site, MANY[0]), 15), site.log_tail()
    wait_until(lambda: tunsec_routes(topo).count("203.0.113.") >= len(MANY), 10)
    leaked = [src for src in MANY if "dev tunsec0" not in topo.run(topo.b, ["ip", "route", "get", src]).stdout]
    assert leaked == [], f"{len(leaked)} of {len(MANY)} spoofed sources routed around the tunnel:\n" \
                         f"{tunsec_routes(topo)}"
    assert tunsec_routes(topo) == before


POOL_SOURCES = [f"10.3.0.{i}" for i in range(10, 35)]   # the hub's road warriors' (fewer than cookie_threshold)


@dataclass(frozen=True)
class HubConn(Conn):
    """b: a road-warrior hub (pool 10.3.0.0/24, no full tunnel): it gives CAP_NET_ADMIN up at start."""

    def sections(self) -> str:
        return "pools {\n  rw4 {\n    addrs = 10.3.0.0/24\n  }\n}\n"

    def conn_lines(self) -> str:
        return (f"    local_addrs = {self.me.outer4}\n    remote_addrs = %any\n    pools = rw4\n"
                f"    proposals = {self.proposals}\n")

    def remote_lines(self) -> str:
        return "      auth = psk\n      id = roadwarrior.tunsec.test\n"


def test_refused_exclude_routes_for_spoofed_sources_are_not_an_error_line_each(topo: RoutedHosts) -> None:
    """F6: without CAP_NET_ADMIN every made-up source inside a TUN route (here the hub's pool, whose
    addresses the router would otherwise reach by b's default route) costs a routing-table dump in a
    thread and one ERROR line naming the route and a root command, unlimited."""
    conn = HubConn(topo.b, topo.a, remote_ts="dynamic")
    hub = TunsecIke(topo, conn)
    hub.start()
    assert "dev tunsec0" in topo.run(topo.b, ["ip", "route", "get", POOL_SOURCES[0]]).stdout
    spoof(topo, POOL_SOURCES, init_request(topo, conn))
    assert wait_until(lambda: answered(hub, POOL_SOURCES[-1]), 15), hub.log_tail()
    wait_until(lambda: f"exclude route {POOL_SOURCES[-1]}/32" in hub.log_text(), 5)
    refused = [ln for ln in hub.log_text().splitlines() if "exclude route" in ln and "refused" in ln]
    assert len(refused) <= 12, f"{len(refused)} error lines for {len(POOL_SOURCES)} spoofed sources:\n{refused[0]}"
