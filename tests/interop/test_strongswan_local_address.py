"""A gateway with two addresses on its outer interface and no local_addrs (its sockets on the
wildcard), and strongSwan's charon (kernel-libipsec, ``encap = yes``) talking to the second one.

The kernel would send from the interface's primary address; the peer talked to the second, so
everything must come from there (RFC 7296 §2.11), as strongSwan's own socket-default does with
IP_PKTINFO: the IKE_SA_INIT answer from the control process's port-500 socket, the IKE answers
the worker sends from port 4500 (SEND_IKE with ADDR_LOCAL), and the ESP of the Child SA (the
loop's IP_PKTINFO on sendmmsg). The IKE SA records the second address as its local one (the
worker's IKE events say where each datagram arrived). nftables counters in charon's namespace
count what arrives from each of the gateway's addresses.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest
from ike_peers import CONN, Charon, Conn, TunsecIke, ping_both_ways, requires_strongswan

from tunsec.bench.netns import TwoHosts, wait_until

pytestmark = [pytest.mark.interop, requires_strongswan]

SECOND = "192.0.2.11"   # the gateway's second address, on the same veth as its first (192.0.2.1)
TABLE = "pktinfo"


@dataclass(frozen=True)
class WildcardConn(Conn):
    """The gateway's connection without local_addrs: it serves any of its addresses."""

    def conn_lines(self) -> str:
        return f"    remote_addrs = {self.peer.outer4}\n    encap = yes\n    proposals = {self.proposals}\n"


@pytest.fixture
def topo() -> Iterator[TwoHosts]:
    with TwoHosts(ipv6=False) as t:
        yield t


def count_arrivals(topo: TwoHosts) -> None:
    """Counters in B (charon) for UDP from each of A's addresses, and for ESP in UDP (a non-zero
    SPI where IKE's non-ESP marker is zero) from the second."""
    a, b = topo.a, topo.b
    rules = f"""table inet {TABLE} {{
  chain input {{
    type filter hook input priority 0; policy accept;
    ip saddr {a.outer4} udp sport {{ 500, 4500 }} counter comment "first"
    ip saddr {SECOND} udp sport 500 counter comment "second_500"
    ip saddr {SECOND} udp sport 4500 @th,64,32 0 counter comment "second_ike"
    ip saddr {SECOND} udp sport 4500 @th,64,32 != 0 counter comment "second_esp"
  }}
}}
"""
    path = topo.workdir / "pktinfo.nft"
    path.write_text(rules)
    topo.run(b, ["nft", "-f", str(path)])


def arrivals(topo: TwoHosts) -> dict[str, int]:
    out = topo.run(topo.b, ["nft", "-j", "list", "table", "inet", TABLE]).stdout
    counts = {}
    for item in json.loads(out)["nftables"]:
        rule = item.get("rule")
        if rule is None:
            continue
        packets = next(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
        counts[rule["comment"]] = packets
    return counts


def test_answers_and_esp_leave_from_the_address_the_peer_talked_to(topo: TwoHosts) -> None:
    a, b = topo.a, topo.b
    topo.run(a, ["ip", "addr", "add", f"{SECOND}/24", "dev", a.veth])   # secondary: never the route's source
    count_arrivals(topo)
    tunsec = TunsecIke(topo, WildcardConn(a, b))
    charon = Charon(topo, Conn(b, replace(a, outer4=SECOND)))   # charon's remote_addrs: the second
    charon.start()
    tunsec.start()
    r = charon.initiate()
    assert r.returncode == 0, f"swanctl --initiate: {r.stdout[-2000:]}{r.stderr}\ntunsec:\n{tunsec.log_tail()}"
    sa = tunsec.wait_established()
    # the IKE SA's local address is the one charon talked to (its port 4500 after the float)
    assert sa["local"] == f"{SECOND}[4500]", sa
    assert sa["remote"] == f"{b.outer4}[4500]"
    assert wait_until(lambda: charon.sas().get(CONN, {}).get("state") == "ESTABLISHED", 15), charon.list_sas()
    theirs = charon.sas()[CONN]
    assert theirs["remote-host"] == SECOND, theirs
    ping_both_ways(topo)
    log = charon.log_text()
    assert f"received packet: from {SECOND}[500] to {b.outer4}[500]" in log, log[-3000:]
    assert f"received packet: from {SECOND}[4500] to {b.outer4}[4500]" in log, log[-3000:]
    got = arrivals(topo)
    # nothing from the primary address; IKE from the second on both ports, ESP from it too
    assert got["first"] == 0, got
    assert got["second_500"] >= 1 and got["second_ike"] >= 1 and got["second_esp"] >= 3, got
    assert f"from {a.outer4}[" not in log
