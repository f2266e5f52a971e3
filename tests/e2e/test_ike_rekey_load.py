"""Child SA rekeys under bulk traffic, tunsec <-> tunsec in two namespaces.

Two iperf3 TCP streams run through the tunnel while both sides rekey the
Child SA every 5-7 s (either side may win the race, and sometimes both start
at once: a collision).  Make-before-break (RFC 7296 §2.8) means no ESP packet
arrives for an SA the receiver does not have: the no_sa drop counter stays 0
on both sides.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from ike_peers import Conn, TunsecIke, children_up, iperf3_two_streams, ping_both_ways

from tunsec.bench.netns import TwoHosts, wait_until

# at least 3 rekeys need at most 21 s (3 x 7 s); 25 s of traffic leave room for a slow rekey
SECONDS = 25
# life_time well past rekey_time: the worker hard-expires an SA life_time after it was made, which
# (with strongSwan's default of rekey_time + 10 %) would cut short the inbound SA's linger after a rekey
# each side rekeys 5-7 s after the last rekey (rekey_time minus up to rand_time, as strongSwan)
REKEY = "        rekey_time = 7s\n        rand_time = 2s\n        life_time = 30s\n"


@pytest.fixture
def topo() -> Iterator[TwoHosts]:
    with TwoHosts(ipv6=False) as t:
        yield t


def test_bulk_traffic_survives_rekeys_from_both_ends(topo: TwoHosts) -> None:
    a = TunsecIke(topo, Conn(topo.a, topo.b, start_action="start", extra_child=REKEY))
    b = TunsecIke(topo, Conn(topo.b, topo.a, extra_child=REKEY))
    b.start()
    a.start()
    a.wait_established()
    b.wait_established()
    ping_both_ways(topo)
    doc = iperf3_two_streams(topo, SECONDS)
    received = int(doc["end"]["sum_received"]["bytes"])
    retransmits = int(doc["end"]["sum_sent"].get("retransmits", -1))
    rekeys = {"a": len(children_up(a)) - 1, "b": len(children_up(b)) - 1}
    drops = {"a": a.status()["drops"], "b": b.status()["drops"]}
    print(f"\nrekey under load: {rekeys} rekeys, received {received} bytes, TCP retransmits {retransmits}, "
          f"no_sa a={drops['a'].get('no_sa')} b={drops['b'].get('no_sa')}")
    assert received > 1_000_000
    # the SPIs moved on at least three times in these 25 s (and both sides saw each move)
    assert rekeys["a"] >= 3 and rekeys["b"] >= 3, (rekeys, a.log_tail(), b.log_tail())
    assert drops["a"]["no_sa"] == 0 and drops["b"]["no_sa"] == 0, (drops, *(
        [line for line in side.log_text().splitlines() if re.search(r"CHILD_SA|unknown SPI|INVALID_SPI", line)][-40:]
        for side in (a, b)))
    # the tunnel is still one Child SA each way, and it carries traffic; the two status reads may
    # straddle a rekey (one side already holds the new child, or both old and new), so ask for the
    # pair both sides share and allow a second child in the middle of a rekey
    def agree() -> bool:
        kids_a, kids_b = a.wait_established()["children"], b.wait_established()["children"]
        if not 1 <= len(kids_a) <= 2 or not 1 <= len(kids_b) <= 2:
            return False
        pairs_a = {(k["spi_in"], k["spi_out"]) for k in kids_a}
        return any((k["spi_out"], k["spi_in"]) in pairs_a for k in kids_b)

    assert wait_until(agree, 30)
    ping_both_ways(topo)
