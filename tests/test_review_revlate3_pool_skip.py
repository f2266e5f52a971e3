"""Review revlate3 F1: the pool skip of the configured claims (h/fixtrap2, review revtrap F5) drops a
named child's whole claim when any one of its remote selectors meets any address pool.

configured_claims.configured_selectors leaves a child out entirely if one of its remote_ts overlaps a
pool (any pool of the configuration, whatever connection uses it and whatever its local side).  A
named partner whose child lists its office LAN 10.2.1.0/24 beside a second range 10.3.0.0/16 that
meets the road warriors' pool 10.3.200.0/24 thus loses the claim on 10.2.1.0/24 too, a network no pool
touches: a spoke of the hub's %any connection may take it while the partner's child is down (review
revlan F2 again, the protection h/fixtrap gave), and the LAN's traffic to the partner is sealed to the
spoke.  Before h/fixtrap2 (73b2643d^1) this test passes; on main it fails.

The gateway of test_review_revlan_trap_claims.py (a real IkeService, the in-process worker and C fast
path), the named trap child's remote_ts widened by the second range and the service given the pool.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools

from test_ikeservice_peers import GW, SHARED_SPI, FakeSocket, Gateway, InProcessWorker, ipv4_udp, psk_ike, site_ip

from tunsec.conf.connections import Child, Connection
from tunsec.dataplane.fastpath import Drop
from tunsec.ike.config import RemoteAuth
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.identity import Identity
from tunsec.policy.ids import IdSpace
from tunsec.policy.pools import PoolConfig
from tunsec.services.ike import IkeService

NAMED_PEER = site_ip(1)
NAMED_NET = "10.2.1.0/24"       # the partner's office LAN: no pool meets it
NAMED_OTHER = "10.3.0.0/16"     # the partner's second range, which the pool below meets
POOL = PoolConfig.parse_addrs("rw", "10.3.200.0/24")


@dataclasses.dataclass
class TrapHubAndPool(Gateway):
    """Hub "gw" (%any, 10.1.0.0/16 <-> 10.2.0.0/16), a trap connection naming its peer for
    10.2.1.0/24 and 10.3.0.0/16, and an address pool 10.3.200.0/24; site 0 is a hub spoke asking for
    10.2.1.0/24."""

    pool: PoolConfig = POOL

    async def start(self) -> None:
        hub = psk_ike("gw", "gw.example", RemoteAuth("psk"), GW, None, "10.1.0.0/16", "10.2.0.0/16")
        named = psk_ike("trap", "gw.example", RemoteAuth("psk", Identity.parse("peer.example")), GW, NAMED_PEER,
                        "10.1.0.0/16", f"{NAMED_NET},{NAMED_OTHER}")
        trap = Connection(named.name, named, (Child("net", named.child("net"), start_action="trap"),))
        self.worker = InProcessWorker(asyncio.get_running_loop(), self._natt_out)
        self.service = IkeService([Connection(hub.name, hub), trap], lambda: self.worker, {4: GW},  # type: ignore[arg-type,return-value]
                                  IdSpace(), pools=[self.pool])
        await self.service.start()
        self.service.sockets.by_key = {(4, GW, 500): FakeSocket(self.wire)}  # type: ignore[dict-item]
        spoke = psk_ike("site0", "site0.example", RemoteAuth("psk", Identity.parse("gw.example")),
                        site_ip(0), GW, NAMED_NET, "10.1.0.0/16")
        self.sites.append(IkeEndpoint([spoke], spi_allocator=functools.partial(next, itertools.count(SHARED_SPI))))
        self.site_events.append([])
        peer = psk_ike("gw", "peer.example", RemoteAuth("psk", Identity.parse("gw.example")),
                       NAMED_PEER, GW, f"{NAMED_NET},{NAMED_OTHER}", "10.1.0.0/16")
        self.sites.append(IkeEndpoint([peer]))
        self.site_events.append([])


def test_a_pool_meeting_one_remote_ts_leaves_the_named_childs_other_networks_claimed() -> None:
    async def body() -> None:
        gw = TrapHubAndPool(2)
        await gw.start()
        assert gw.service.trap_policies
        gw.connect(0)                                    # the spoke asks for the partner's 10.2.1.0/24
        await gw.settle()
        _esp, dst, drop, _ = gw.worker.dp.outbound(ipv4_udp("10.1.0.5", "10.2.1.7", b"for the named peer"))
        spoke_children = gw.children_of(0)
        assert dst is None or str(dst.addr) == NAMED_PEER, f"sealed ({drop.name}) to {dst}, the spoke"
        assert not spoke_children, f"spoke holds {[c.remote_ts for c in spoke_children]}"

    asyncio.run(body())


def test_without_the_pool_the_named_childs_networks_are_claimed() -> None:
    """Guard: the same configuration without an address pool refuses the spoke (passes on both)."""
    async def body() -> None:
        gw = TrapHubAndPool(2, pool=PoolConfig.parse_addrs("rw", "192.168.200.0/24"))
        await gw.start()
        gw.connect(0)
        await gw.settle()
        _esp, _dst, drop, _ = gw.worker.dp.outbound(ipv4_udp("10.1.0.5", "10.2.1.7", b"for the named peer"))
        assert drop is Drop.NO_SA and not gw.children_of(0)

    asyncio.run(body())
