"""Review revtrap F5: a named spoke's wide remote_ts, claimed while down, refuses every road warrior.

A hub whose named spokes choose their parts of one wide remote_ts (10.0.0.0/8, each spoke its own
LAN: the setup h/fixtrap keeps working among named peers, TsClaims.overlaps) and whose road warriors
lease from a pool inside that range (10.3.0.0/24).  Before h/fixtrap the spokes' claims were what their
Child SAs held (their /24s), and a road warrior's lease, held by no spoke, was its own.  Now each named
spoke's configured 10.0.0.0/8 is claimed from load, up or down (services/ike/configured_claims.py),
and binds every peer of a connection of %any: the road warrior gets its lease, and its Child SA is
refused (TS_UNACCEPTABLE: exchanges/child.py _not_others narrows its TSi, the lease, to nothing), every
time, whether the spoke is up or not -- and the load says nothing (review revtrap F2: a pool is no
remote_ts).  A regression: this test passes on h/fixtrap's parent (5978ab77^1) and fails on main.

The gateway of test_ikeservice_ts_claims.py (a real IkeService with the in-process worker and C fast
path; clients are IKE engines wired to it): the road-warrior connection "gw" (%any, pool 10.3.0.0/24,
remote_ts dynamic) and a named spoke's connection (spoke.example, remote_ts 10.0.0.0/8, no pool);
the spoke is configured but never connects, as a spoke that is down.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress

import pytest
from test_ikeservice_lease_fence import WatchedWorker
from test_ikeservice_peers import GW, PSK, FakeSocket, site_ip
from test_ikeservice_ts_claims import GW_NET, POOL, PROPOSALS, Client, TsGateway, refusals

from tunsec.conf.connections import Connection
from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.identity import Identity
from tunsec.policy.ids import IdSpace
from tunsec.services.ike import IkeService

SPOKE, ROAD_WARRIOR = 0, 1


@dataclasses.dataclass
class HubWithNamedSpoke(TsGateway):
    """TsGateway's connection "gw" (%any, pool, remote_ts dynamic) and client 0's named connection
    (remote_ts 10.0.0.0/8, no pool), as the daemon builds the service (its claims from construction)."""

    async def start(self) -> None:
        def conn(name: str, remote: RemoteAuth, remote_ts: str, pools: tuple[str, ...]) -> Connection:
            child = child_config("net", GW_NET, remote_ts, "aes128gcm16")
            return Connection(name, IkeConfig(name, LocalAuth("psk", Identity.parse("gw.example")), remote, PROPOSALS,
                                              (child,), psk=PSK, local_addr=GW, pools=pools))
        conns = [conn("gw", RemoteAuth("psk"), "dynamic", (POOL.name,)),
                 conn("spoke", RemoteAuth("psk", Identity.parse("spoke.example")), "10.0.0.0/8", ())]
        self.worker = worker = WatchedWorker(asyncio.get_running_loop(), self._natt_out)
        self.service = IkeService(conns, lambda: worker, {4: GW}, IdSpace(), pools=[POOL])  # type: ignore[arg-type,return-value]
        await self.service.start()
        self.service.sockets.by_key = {(4, GW, 500): FakeSocket(self.wire)}  # type: ignore[dict-item]
        for i, c in enumerate(self.clients):
            cfg = IkeConfig(f"site{i}", LocalAuth("psk", Identity.parse(c.ident)),
                            RemoteAuth("psk", Identity.parse("gw.example")), PROPOSALS,
                            (child_config("net", c.local_ts, c.gw_side, "aes128gcm16"),), psk=PSK,
                            local_addr=site_ip(i), remote_addr=GW, mobike=False,
                            vips=(ipaddress.ip_address("0.0.0.0"),) if c.vips else ())
            self.sites.append(IkeEndpoint([cfg]))
            self.site_events.append([])


@pytest.mark.parametrize("spoke_up", [False, True])
def test_a_road_warrior_leased_inside_a_named_spokes_wide_remote_ts_gets_its_child_sa(spoke_up: bool) -> None:
    """The spoke down, or up with its 10.7.0.0/24 (chosen from 10.0.0.0/8): the lease 10.3.0.x is the
    road warrior's either way (no Child SA holds it)."""
    async def body() -> None:
        clients = (Client("spoke.example", "10.7.0.0/24"), Client("rw.example", "dynamic", vips=True))
        gw = HubWithNamedSpoke(2, mobike=False, clients=clients, remote_ts="dynamic", pools=True)
        await gw.start()
        if spoke_up:
            gw.connect(SPOKE)
            await gw.settle()
            spoke = gw.child_of(SPOKE)
            assert spoke is not None and [str(t) for t in spoke.remote_ts] == ["10.7.0.0/24"]
        gw.connect(ROAD_WARRIOR)
        await gw.settle()
        rw = gw.child_of(ROAD_WARRIOR)
        assert rw is not None, f"the road warrior's Child SA for its lease was refused: " \
            f"{[e.reason for e in refusals(gw, ROAD_WARRIOR)]}, {dict(gw.service.events.ts_claims_refused)}"
        assert str(rw.remote_ts[0].start).startswith("10.3.0.")

    asyncio.run(body())
