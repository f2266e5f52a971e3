"""Review revtrap F1: a reload that starts naming a connection leaves a %any spoke holding its network.

h/fixtrap (services/ike/configured_claims.py) claims a named connection's configured selectors "from
the service's construction (before anyone is answered) until a reload stops naming it".  A reload
that ADDS a named connection (or gives an existing one a remote.id, or a child, or a wider remote_ts)
adds the claim at once (reload.py: configured_claims.follow), but nothing looks at the Child SAs that
hold that network already: a spoke of the %any hub that took 10.2.1.0/24 before the reload keeps it
(a rekey keeps its selectors and checks no claims: exchanges/child.py rekey_select), the LAN's traffic
to the named peer's network stays sealed to the spoke, and the named peer's own Child SA is refused
(the spoke's Child SA claim, not a configured one, binds named peers too) for as long as the spoke
stays up.  The same spoke started after the reload is refused (test_review_revlan_trap_claims.py).

The gateway of test_review_revlan_trap_claims.py (real IkeService, in-process worker with the real C
fast path): the service starts with the named connection "trap" removed by a reload, the spoke comes
up for 10.2.1.0/24, a reload adds "trap" back as it was.
"""

from __future__ import annotations

import asyncio

from test_ikeservice_peers import ipv4_udp
from test_review_revlan_trap_claims import NAMED_NET, NAMED_PEER, TrapAndHub

from tunsec.conf.config import Config
from tunsec.dataplane.fastpath import Drop


async def spoke_up_before_the_named_connection() -> TrapAndHub:
    """The gateway without "trap" (a reload took it out), site 0 (the hub's spoke) up for NAMED_NET,
    then a reload that adds "trap" (start_action = trap, naming peer.example) as configured at start."""
    gw = TrapAndHub(2)
    await gw.start()
    hub, trap = gw.service.connections["gw"], gw.service.connections["trap"]
    await gw.service.reload(Config(path="x.conf", connections=(hub,)))
    gw.connect(0)
    await gw.settle()
    assert [str(t) for c in gw.children_of(0) for t in c.remote_ts] == [NAMED_NET]   # nobody's then: the spoke's
    await gw.service.reload(Config(path="x.conf", connections=(hub, trap)))
    await gw.settle()
    assert len(gw.service.configured_claims) == 1 and gw.service.trap_policies
    return gw


def test_a_reload_that_names_a_connection_takes_its_network_from_a_spoke_that_holds_it() -> None:
    """After the reload the network is the named peer's: the LAN's traffic to it is not sealed to the
    spoke (on main it is: the spoke's Child SA and policies stay)."""
    async def body() -> None:
        gw = await spoke_up_before_the_named_connection()
        _esp, dst, drop, _ = gw.worker.dp.outbound(ipv4_udp("10.1.0.5", "10.2.1.7", b"for the named peer"))
        assert dst is None or str(dst.addr) == NAMED_PEER, f"sealed ({drop.name}) to {dst}, the spoke, after the reload"
        assert not gw.children_of(0), f"spoke still holds {[c.remote_ts for c in gw.children_of(0)]}"

    asyncio.run(body())


def test_after_a_reload_that_names_a_connection_its_peer_comes_up_for_its_network() -> None:
    """The trap's ACQUIRE after the reload brings the named peer's Child SA up (on main it is refused:
    our proposal without the spoke's claim leaves nothing), and the LAN's traffic goes to it."""
    async def body() -> None:
        gw = await spoke_up_before_the_named_connection()
        (pid,) = gw.service.trap_policies
        gw.service.acquire(pid)
        await gw.settle()
        named = [c for c in gw.service.children.values() if c.conn == "trap"]
        assert named, "the named peer got no Child SA for its own network: the spoke kept it through the reload"
        _esp, dst, drop, _ = gw.worker.dp.outbound(ipv4_udp("10.1.0.5", "10.2.1.7", b"for the named peer"))
        assert drop is Drop.NONE and dst is not None and str(dst.addr) == NAMED_PEER, (drop, dst)

    asyncio.run(body())
