"""Review revrekey6 F2: an honest worker's EXPIRE of a rekeyed Child SA's SA is counted unowned.

A rekey ends with the old Child SA's outbound SA deleted from the worker and its inbound SA lingering
INBOUND_LINGER seconds (installs._linger); the service forgets the old Child SA in its child index at
once.  A packet that takes either SA past its soft limit just before (the outbound SA: sent before the
DELETE reached the worker; the inbound: a packet in flight on the lingering SA) makes the worker raise an
EXPIRE that reaches the service after it forgot the Child SA: IkeService.on_event does not claim it, and
the daemon counts it as an event "naming no SA or policy a service installed" (worker_distrust.
UnownedEvents: `unowned_events` in tunsec status, tunsec_worker_unowned_events_total, which
docs/operations.md says may, when many, mean a worker taken over) with a WARNING "SA in|out ... reached
its soft packets limit".  The SA was tunsec's and the worker honest: the counter meant for a lying worker
counts tunsec's own rekeys (a sum of 4 to 84 in this test's 8,000 flood pings on main).

Real parts: two tunsec daemons, soft limits of 8 packets on every SA (no random part, so that both sides
rekey on the same packets and races are many), a ping flood through the tunnel.  The test asserts that
no event of the honest worker is counted as unowned.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from ike_peers import children_up, tunsec_pair

from tunsec.bench.netns import TwoHosts

# a soft limit every few packets on every SA (no random part), the hard one far away, no time rekeys
LIMITS = ("        rekey_time = 0\n        rekey_packets = 8\n        rand_packets = 0\n"
          "        life_packets = 1000000\n        life_time = 1h\n")
PINGS = 8000


@pytest.fixture
def topo() -> Iterator[TwoHosts]:
    with TwoHosts(ipv6=False) as t:
        yield t


def test_an_honest_workers_expires_of_rekeyed_child_sas_are_not_counted_unowned(topo: TwoHosts) -> None:
    a, b = tunsec_pair(topo, LIMITS)
    r = topo.run(topo.a, ["ping", "-q", "-n", "-f", "-c", str(PINGS), "-I", topo.a.inner4, topo.b.inner4],
                 check=False, timeout=120)
    assert re.search(r"\d+ received", r.stdout), r.stdout
    rekeys = {"a": len(children_up(a)) - 1, "b": len(children_up(b)) - 1}
    unowned = {"a": a.status()["worker"]["unowned_events"], "b": b.status()["worker"]["unowned_events"]}
    warned = [line for side in (a, b) for line in side.log_text().splitlines()
              if re.search(r"tunsec\[\d+\] WARNING SA (in|out) [0-9a-f]{8} reached its", line)]
    print(f"\nChild SA rekeys {rekeys}, unowned events {unowned}, WARNING lines {len(warned)}")
    assert rekeys["a"] > 10, rekeys   # the soft limits did rekey (the race needs rekeys)
    assert unowned == {"a": 0, "b": 0}, (unowned, warned[:5])
