"""Two strongSwan clients of one tunsec gateway connection whose remote_ts (10.3.0.0/23) is wider
than its pool (10.3.0.0/24): client A asks for no virtual IP and proposes all of 10.3.0.0/23,
before B connects and leases 10.3.0.1.  A holds B's address on its own loopback too, so it would
answer the pings meant for B: they must go through B's SA, none through A's (before the fix A's
older policy for 10.3.0.0/23 took them all, and A answered).

StarHosts: the gateway G (10.1.0.0/24 behind it), A and B on their own links; charon with
kernel-libipsec on each (B puts its virtual IP on its TUN and answers pings there)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from ike_peers import Charon, Conn, TunsecIke, requires_strongswan
from roadwarrior import GatewayConn, Pool, RoadWarriorConn
from test_gateway_two_sites import children, counters

from tunsec.bench.netns import StarHosts, wait_until

pytestmark = [
    pytest.mark.interop,
    pytest.mark.netns,
    requires_strongswan,
]

POOL = Pool("rw4", "10.3.0.0/24")


@pytest.fixture
def star() -> Iterator[StarHosts]:
    with StarHosts() as t:
        yield t


def test_a_client_claiming_the_pool_does_not_get_another_clients_pings(star: StarHosts) -> None:
    g, a, b = star.g, star.a, star.b
    gw = TunsecIke(star, GatewayConn(g, a, fixed_address=False, any_peer=True, pools=(POOL,),
                                     remote_ts="10.3.0.0/23"))
    attacker = Charon(star, Conn(a, star.gateway_for(a), local_ts="10.3.0.0/23"))
    honest = Charon(star, RoadWarriorConn(b, star.gateway_for(b), vips=("0.0.0.0",), remote_ts=g.inner_net4))
    for c in (attacker, honest):
        c.start()
    gw.start()
    # A's route to the gateway's network takes a source address in what A holds (strongSwan)
    star.run(a, ["ip", "addr", "add", "10.3.1.1/32", "dev", "lo"], check=True)
    for c in (attacker, honest):    # A first: its policies would come first
        r = c.initiate()
        assert r.returncode == 0, f"swanctl --initiate in {c.host.ns}: {r.stdout[-1500:]}\n{gw.log_tail()}"
    assert wait_until(lambda: len(children(gw)) == 2, 15), gw.log_tail()
    kids = children(gw)
    ca, cb = kids[a.outer4], kids[b.outer4]
    (vip,) = [x["address"] for x in gw.status()["leases"]]
    star.run(a, ["ip", "addr", "add", f"{vip}/32", "dev", "lo"], check=True)   # A would answer as B
    assert cb["remote_ts"] == [f"{vip}/32"]
    assert ca["remote_ts"] == ["10.3.1.0/24"]     # 10.3.0.0/23 without the pool
    before_a, before_b = counters(gw, ca), counters(gw, cb)
    assert star.wait_ping(g, vip, src=g.inner4, timeout=10), f"B's virtual IP unreachable\n{gw.log_tail()}"
    assert star.ping(g, vip, count=5, src=g.inner4), "pings to B's virtual IP lost"
    after_a, after_b = counters(gw, ca), counters(gw, cb)
    assert after_a == before_a                                 # nothing to or from A
    assert after_b["out"] - before_b["out"] >= 6 and after_b["in"] - before_b["in"] >= 6
