"""Review revlan F2: a trap connection's network is no one's until its Child SA is up.

A gateway has a site-to-site connection "trap" that names its peer (198.51.100.9, `peer.example`)
and gives it 10.2.1.0/24 (`start_action = trap`), beside a hub connection "gw" of %any whose
spokes choose their part of 10.2.0.0/16.  The selector claims (policy/claims.py) hold what up
Child SAs hold, and manual tunnels' networks for as long as the configuration names them; a trap
child's configured selectors are not claimed.  So a spoke of "gw" (anyone with the hub's PSK or a
certificate of its CA) that asks for 10.2.1.0/24 while the named peer's child is down gets it: its
Child SA's policies sit in a band before the trap policy, and what the LAN sends to the named
peer's network is sealed to the spoke.  The named peer's own initiation then proposes its remote_ts
without the spoke's claim (nothing is left) and is refused: the spoke holds the network until it
goes.

The real IkeService with the in-process worker and C fast path (test_ikeservice_peers.Gateway);
the LAN packet goes through the real fast path (Dataplane.outbound).
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
from tunsec.services.ike import IkeService

NAMED_PEER = site_ip(1)   # 198.51.100.2: site 1 of the wiring, the named peer
NAMED_NET = "10.2.1.0/24"   # site 0's site_net: what the spoke asks for


def trap_connection(remote_ts: str = NAMED_NET) -> Connection:
    """The trap connection "trap" naming peer.example (NAMED_PEER), 10.1.0.0/16 <-> ``remote_ts``."""
    named = psk_ike("trap", "gw.example", RemoteAuth("psk", Identity.parse("peer.example")), GW, NAMED_PEER,
                    "10.1.0.0/16", remote_ts)
    return Connection(named.name, named, (Child("net", named.child("net"), start_action="trap"),))


@dataclasses.dataclass
class TrapAndHub(Gateway):
    """Gateway's hub connection "gw" (%any, 10.1.0.0/16 <-> 10.2.0.0/16) and a trap connection to a
    named peer for 10.2.1.0/24; site 0 is a spoke of the hub that asks for 10.2.1.0/24.  ``trap_ts``:
    the trap's remote_ts instead; ``hub_id``: the hub names its peer (its spoke a named peer)."""

    trap_ts: str = NAMED_NET
    hub_id: str | None = None

    async def start(self) -> None:
        remote = RemoteAuth("psk", Identity.parse(self.hub_id)) if self.hub_id else RemoteAuth("psk")
        hub = psk_ike("gw", "gw.example", remote, GW, None, "10.1.0.0/16", "10.2.0.0/16")
        self.worker = InProcessWorker(asyncio.get_running_loop(), self._natt_out)
        self.service = IkeService([Connection(hub.name, hub), trap_connection(self.trap_ts)], lambda: self.worker,  # type: ignore[arg-type,return-value]
                                  {4: GW}, IdSpace())
        await self.service.start()
        self.service.sockets.by_key = {(4, GW, 500): FakeSocket(self.wire)}  # type: ignore[dict-item]
        spoke = psk_ike("site0", "site0.example", RemoteAuth("psk", Identity.parse("gw.example")),
                        site_ip(0), GW, NAMED_NET, "10.1.0.0/16")
        spoke = dataclasses.replace(spoke, mobike=self.mobike, force_encap=self.encap)
        self.sites.append(IkeEndpoint([spoke], spi_allocator=functools.partial(next, itertools.count(SHARED_SPI))))
        self.site_events.append([])
        peer = psk_ike("gw", "peer.example", RemoteAuth("psk", Identity.parse("gw.example")),
                       NAMED_PEER, GW, NAMED_NET, "10.1.0.0/16")
        self.sites.append(IkeEndpoint([peer]))   # answers only: the gateway's trap initiates
        self.site_events.append([])


def test_a_hub_spoke_cannot_take_a_trap_peers_network_while_its_child_is_down() -> None:
    async def body() -> None:
        gw = TrapAndHub(2)
        await gw.start()
        assert gw.service.trap_policies                  # the named peer's trap is in
        gw.connect(0)                                    # the spoke asks for 10.2.1.0/24
        await gw.settle()
        _esp, dst, drop, _ = gw.worker.dp.outbound(ipv4_udp("10.1.0.5", "10.2.1.7", b"for the named peer"))
        spoke_children = gw.children_of(0)
        # what the LAN sends to the named peer's network goes to the named peer or waits for it
        # (the trap's ACQUIRE), never to another peer
        assert dst is None or str(dst.addr) == NAMED_PEER, f"sealed ({drop.name}) to {dst}, the spoke"
        assert drop is Drop.NO_SA
        assert not spoke_children, f"spoke holds {[c.remote_ts for c in spoke_children]}"

    asyncio.run(body())


def test_the_named_peer_comes_up_for_its_network_after_a_spoke_asked_for_it() -> None:
    """The other half: with the spoke up, LAN traffic to the named peer's network (its trap's
    ACQUIRE) does not bring the named peer's Child SA up: our proposal leaves out what the spoke
    holds, nothing is left, and the peer's answer is refused."""
    async def body() -> None:
        gw = TrapAndHub(2)
        await gw.start()
        (pid,) = gw.service.trap_policies
        gw.connect(0)
        await gw.settle()
        gw.service.acquire(pid)                          # the LAN's packet to 10.2.1.7 hit the trap
        await gw.settle()
        named = [c for c in gw.service.children.values() if c.conn == "trap"]
        assert named, "the named peer got no Child SA for its own network"
        _esp, dst, drop, _ = gw.worker.dp.outbound(ipv4_udp("10.1.0.5", "10.2.1.7", b"for the named peer"))
        assert drop is Drop.NONE and dst is not None and str(dst.addr) == NAMED_PEER, (drop, dst)

    asyncio.run(body())
