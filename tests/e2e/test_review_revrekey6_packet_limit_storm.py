"""Review revrekey6 F1: a packet (or byte) soft limit whose random part exceeds it rekeys at once.

strongSwan's default rand_packets is life_packets - rekey_packets; tunsec draws each SA's soft
limit as rekey_packets minus a random 0..rand_packets, floored at 1 (conf/children.py rekey_limit).
With life_packets ten times rekey_packets (an ordinary "rekey often, hard stop much later") about
nine SAs in ten get a soft limit of ONE packet: each new Child SA asks for its rekey with its first
packet, so a tunnel under traffic rekeys as fast as CREATE_CHILD_SA round trips go (measured by
the review: 2,005 Child SA rekeys in 25 s of 200 Mbit/s UDP at rekey_packets = 40000, 65 inbound
SAs lingering in the worker at once). The time limit's jitter is bounded by the period
(ike/sa_timers.jittered: min(rand_time, rekey_time)); the packet and byte ones are not.

Real parts: two tunsec daemons in namespaces, 1,500 pings each way through the tunnel. Each SA
counts about 1,500 packets, so SAs whose soft limit stays near 4,000 packets would not rekey at all,
and any limit not below rekey_packets / 2 rekeys at most once per 2,000 packets; the test asserts
a count far above that (a storm) is not reached.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from ike_peers import children_up, tunsec_pair

from tunsec.bench.netns import TwoHosts

# no rekey on time in the run; soft limit on packets only, the hard one ten times further
LIMITS = "        rekey_time = 0\n        rekey_packets = 4000\n        life_packets = 40000\n        life_time = 1h\n"
PINGS = 1500
# a soft limit never below rekey_packets / 2 gives at most one rekey per 2,000 packets an SA counts
# (1,500 pings: none or one per side; collisions add their redundant ones); 20 leaves room for both
MOST_REKEYS = 20


@pytest.fixture
def topo() -> Iterator[TwoHosts]:
    with TwoHosts(ipv6=False) as t:
        yield t


def test_a_packet_soft_limit_under_its_default_random_part_does_not_rekey_at_every_packet(topo: TwoHosts) -> None:
    a, b = tunsec_pair(topo, LIMITS)
    # one echo request and one reply per ping: every SA of both sides counts PINGS packets
    r = topo.run(topo.a, ["ping", "-q", "-n", "-i", "0.002", "-c", str(PINGS), "-I", topo.a.inner4,
                          topo.b.inner4], check=False, timeout=120)
    received = re.search(r"(\d+) received", r.stdout)
    assert received is not None and int(received.group(1)) > 0, r.stdout
    rekeys = {"a": len(children_up(a)) - 1, "b": len(children_up(b)) - 1}
    soft = len(re.findall(r"reached its soft limit; rekeying", a.log_text() + b.log_text()))
    print(f"\n{PINGS} pings: Child SA rekeys {rekeys}, soft limits reached {soft}, ping: {r.stdout.strip()[-120:]}")
    assert rekeys["a"] <= MOST_REKEYS and rekeys["b"] <= MOST_REKEYS, (rekeys, soft)
