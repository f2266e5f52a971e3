"""The configured claims leave out a pool's leases only toward the local side its clients reach.

Review revlate3's remark (in docs/issue9-coverage.md "What remains"): the pool exception of the
configured claims (h/fixtrap2, review revtrap F5: a named child's remote selector that meets an address
pool is not claimed while down, so the road warriors leased from it keep their Child SAs) took any pool
of the configuration, also one whose clients reach another local network than the named child's.  Those
clients' Child SAs never meet the named child's claim (the local selectors differ), so the exception
bought them nothing, and it left the named network to any %any spoke toward the named child's local
side.  Now (conf/named_claims.py PoolSide) only the pools of connections whose local_ts meets the named
child's count.

The service is built as the daemon builds it (its claims from construction): a named connection "site"
(10.1.0.0/16 <-> 10.3.0.0/16), a road-warrior connection "rw" leasing from pool 10.3.200.0/24 toward
the local side given, and a hub spoke of %any asking for 10.3.5.0/24 toward 10.1.0.0/24.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from test_ikeservice_peers import GW, InProcessWorker, psk_ike, site_ip

from tunsec.conf.connections import Child, Connection
from tunsec.ike.config import RemoteAuth
from tunsec.ike.identity import Identity
from tunsec.policy.claims import Peer
from tunsec.policy.ids import IdSpace
from tunsec.policy.pools import PoolConfig
from tunsec.policy.selector import Ts
from tunsec.services.ike import IkeService

POOL = PoolConfig.parse_addrs("rw", "10.3.200.0/24")


def claimed_for_a_spoke(rw_local: str) -> bool:
    """Whether the service's claims refuse a %any spoke 10.3.5.0/24 toward 10.1.0.0/24 (the site down)."""
    async def body() -> bool:
        named = psk_ike("site", "gw.example", RemoteAuth("psk", Identity.parse("site.example")), GW, site_ip(1),
                        "10.1.0.0/16", "10.3.0.0/16")
        rw = dataclasses.replace(psk_ike("rw", "gw.example", RemoteAuth("psk"), GW, None, rw_local, "dynamic"),
                                 pools=(POOL.name,))
        conns = [Connection("site", named, (Child("net", named.child("net"), start_action="trap"),)),
                 Connection("rw", rw)]
        worker = InProcessWorker(asyncio.get_running_loop(), lambda msg: None)
        service = IkeService(conns, lambda: worker, {4: GW}, IdSpace(), pools=[POOL])  # type: ignore[arg-type,return-value]
        spoke = Peer(Identity.parse("spoke.example"), "psk hub")
        return bool(service.ts_claims.overlaps(spoke, [Ts.parse("10.3.5.0/24")], [Ts.parse("10.1.0.0/24")]))

    return asyncio.run(body())


def test_a_pool_whose_clients_reach_another_local_network_leaves_the_named_network_claimed() -> None:
    """The road warriors reach 10.9.0.0/16 only: the named site's 10.3.0.0/16 toward 10.1.0.0/16 is
    claimed (before: left out for the pool, and a spoke could take 10.3.5.0/24 while the site was down)."""
    assert claimed_for_a_spoke("10.9.0.0/16")


@pytest.mark.parametrize("rw_local", ["10.1.0.0/16", "dynamic"])
def test_a_pool_whose_clients_reach_the_named_childs_local_network_is_left_out(rw_local: str) -> None:
    """Guard (review revtrap F5 as fixed, passes before and after): the road warriors reach the named
    child's local side (or an unknown one, ``dynamic``): the selector meeting their pool is not claimed
    while down."""
    assert not claimed_for_a_spoke(rw_local)
