"""Child SA rekeys under bulk traffic against strongSwan (charon, kernel-libipsec).

tunsec (namespace A) starts every rekey (rekey_time 6 s; charon's is an hour)
while two iperf3 TCP streams run in each direction.  As strongSwan orders a
rekey (RFC 7296 §2.8): charon, the responder, has its new inbound SA before it
answers and sends on the old one until our DELETE; tunsec installs both new
SAs before that DELETE leaves and keeps the old inbound SA for packets in
flight.  Nothing reaches tunsec for an SA it does not have (no_sa = 0).
(libipsec logs its own misses only at esp level 2, with a line per packet.)
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from ike_peers import (
    CHILD,
    Charon,
    Conn,
    TunsecIke,
    children_up,
    iperf3_two_streams,
    ping_both_ways,
    requires_strongswan,
)

from tunsec.bench.netns import TwoHosts

pytestmark = [
    pytest.mark.interop,
    requires_strongswan,
]
# at least 3 rekeys, one each 6 s: 18 s; 25 s of traffic leave room for a slow one
SECONDS = 25


@pytest.fixture
def topo() -> Iterator[TwoHosts]:
    with TwoHosts(ipv6=False) as t:
        yield t


def test_bulk_traffic_survives_rekeys_tunsec_starts(topo: TwoHosts) -> None:
    # life_time well past rekey_time: the worker hard-expires an SA that long after it was made
    ours = "        rekey_time = 6s\n        life_time = 30s\n"
    tunsec = TunsecIke(topo, Conn(topo.a, topo.b, start_action="start", extra_child=ours))
    charon = Charon(topo, Conn(topo.b, topo.a, extra_child="        rekey_time = 1h\n"))
    charon.start()
    tunsec.start()
    tunsec.wait_established()
    ping_both_ways(topo)
    doc = iperf3_two_streams(topo, SECONDS, bidir=True)
    received = int(doc["end"]["sum_received"]["bytes"])
    retransmits = int(doc["end"]["sum_sent"].get("retransmits", -1))
    rekeys = len(children_up(tunsec)) - 1
    no_sa = tunsec.status()["drops"]["no_sa"]
    print(f"\nrekey under load vs strongSwan: {rekeys} rekeys, received {received} bytes, TCP retransmits "
          f"{retransmits}, tunsec no_sa={no_sa}")
    assert received > 1_000_000
    assert rekeys >= 3, tunsec.log_tail()
    # every rekey was ours: charon answered them
    assert len(re.findall(r"parsed CREATE_CHILD_SA request \d+ \[ (?:N\(REKEY_SA\) )?SA No", charon.log_text())) \
        >= 3, charon.log_tail()
    assert no_sa == 0, "\n".join(line for line in tunsec.log_text().splitlines()
                                  if re.search(r"CHILD_SA|unknown SPI|INVALID_SPI|IKE SA", line))[-6000:]
    (sa,) = tunsec.established()
    assert {c["name"] for c in sa["children"]} == {CHILD}   # one child, or two in the middle of a rekey
    ping_both_ways(topo)
