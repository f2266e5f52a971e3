"""A named connection's configured selectors are its peer's while its Child SA is down (review revlan F1).

services/ike/configured_claims.py claims each child of a connection that names its peer, whatever its
start_action, from load until a reload stops naming it; only peers of connections of %any are bound
by those claims.  The gateway of test_review_revlan_trap_claims.py (a %any hub "gw" for 10.2.0.0/16,
a named connection "trap" for 10.2.1.0/24, site 0 a spoke of the hub asking for 10.2.1.0/24): the
real IkeService with the in-process worker and C fast path; the load's warning from parse_config.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools

import pytest
from test_ikeservice_peers import GW, ipv4_udp, psk_ike
from test_review_revlan_trap_claims import NAMED_NET, NAMED_PEER, TrapAndHub

from tunsec.conf.config import Config, parse_config
from tunsec.conf.connections import Child, Connection
from tunsec.dataplane.fastpath import Drop
from tunsec.ike.config import RemoteAuth
from tunsec.ike.identity import Identity
from tunsec.policy.claims import Peer, TsClaims
from tunsec.policy.selector import Ts
from tunsec.services.ike.configured_claims import ConfiguredClaims


def spoke_refused(gw: TrapAndHub) -> bool:
    return not gw.children_of(0) and gw.service.events.ts_claims_refused[("gw", "net")] > 0


def test_a_none_child_of_a_named_connection_keeps_its_network_through_a_reload_and_a_removal_frees_it() -> None:
    """The named child made start_action = none by a reload (its peer initiates, and is away): its
    network stays its peer's, the spoke is refused.  A reload that removes the named connection frees
    it: the spoke gets it, and the LAN's traffic to it goes to the spoke, as the configuration now says."""
    async def body() -> None:
        gw = TrapAndHub(2)
        await gw.start()
        hub, trap = gw.service.connections["gw"], gw.service.connections["trap"]
        none = dataclasses.replace(trap, children=(Child("net", trap.ike.children[0], start_action="none"),))
        await gw.service.reload(Config(path="x.conf", connections=(hub, none)))
        assert not gw.service.trap_policies
        gw.connect(0)
        await gw.settle()
        assert spoke_refused(gw)
        assert len(gw.service.configured_claims) == 1
        await gw.service.reload(Config(path="x.conf", connections=(hub,)))
        assert len(gw.service.configured_claims) == 0
        gw.connect(0)
        await gw.settle()
        assert [str(t) for c in gw.children_of(0) for t in c.remote_ts] == [NAMED_NET]
        _esp, dst, drop, _ = gw.worker.dp.outbound(ipv4_udp("10.1.0.5", "10.2.1.7", b"to the spoke now"))
        assert drop is Drop.NONE and dst is not None and str(dst.addr) != NAMED_PEER

    asyncio.run(body())


def test_the_named_peer_comes_up_for_its_network_and_the_spoke_stays_refused() -> None:
    """The trap's ACQUIRE brings the named peer's Child SA up for its own network (its configured
    claim binds no named peer), and the spoke is refused before and after."""
    async def body() -> None:
        gw = TrapAndHub(2)
        await gw.start()
        (pid,) = gw.service.trap_policies
        gw.service.acquire(pid)
        await gw.settle()
        named = [c for c in gw.service.children.values() if c.conn == "trap"]
        assert [str(t) for c in named for t in c.remote_ts] == [NAMED_NET]
        gw.connect(0)
        await gw.settle()
        assert spoke_refused(gw)

    asyncio.run(body())


HUB_CONF = """
connections {{
    hub {{
        local {{ auth = psk
                 id = gw.example }}
        remote {{ auth = psk
                  id = {hub_id} }}
        children {{ net {{ local_ts = {hub_local}
                          remote_ts = 10.2.0.0/16 }} }}
    }}
    site {{
        remote_addrs = 198.51.100.2
        local {{ auth = psk
                 id = gw.example }}
        remote {{ auth = psk
                  id = site.example }}
        children {{ net {{ local_ts = 10.1.0.0/16
                          remote_ts = {site_ts}
                          start_action = trap }} }}
    }}
}}
secrets {{ ike {{ secret = "a shared secret of some length" }} }}
"""


@pytest.mark.parametrize(("hub_id", "hub_local", "site_ts", "warned"), [
    ("%any", "10.1.0.0/16", "10.2.1.0/24", True),
    ("%any", "10.1.0.0/16", "10.3.1.0/24", False),        # apart
    ("%any", "10.9.0.0/16", "10.2.1.0/24", False),        # toward another local side
    ("spoke.example", "10.1.0.0/16", "10.2.1.0/24", False),   # a named spoke: the Child SAs decide
    ("%any", "10.1.0.0/16", "0.0.0.0/0", False),          # a full tunnel is claimed by no one
    ("%any", "10.1.0.0/16", "0.0.0.0/0, 10.2.1.0/24", True),   # the network beside it is
])
def test_a_any_connections_remote_ts_over_a_named_ones_is_warned_about(hub_id: str, hub_local: str, site_ts: str,
                                                                        warned: bool) -> None:
    text = HUB_CONF.format(hub_id=hub_id, hub_local=hub_local, site_ts=site_ts)
    warnings = [w for w in parse_config(text, "tunsec.conf").warnings if "names its peer" in w.message]
    assert [w.key for w in warnings] == ["connections.hub.children.net.remote_ts"] * warned
    if warned:
        assert warnings[0].message.startswith("10.2.0.0/16 overlaps 10.2.1.0/24, the remote_ts of connection site's "
                                              "child net, which names its peer (site.example)")
        assert "a peer asking for them is refused" in warnings[0].message and warnings[0].line > 0


def test_a_named_full_tunnel_claims_the_networks_beside_it_only() -> None:
    """0.0.0.0/0 through a named HQ is its default route, no network of its (a road warrior's lease,
    any spoke, would be refused while HQ is down): only 10.9.0.0/16 beside it is claimed."""
    hq = psk_ike("hq", "gw.example", RemoteAuth("psk", Identity.parse("hq.example")), GW, NAMED_PEER,
                 "10.1.0.0/16", "0.0.0.0/0, 10.9.0.0/16")
    claims = TsClaims()
    ConfiguredClaims(claims, itertools.count(1)).follow([Connection("hq", hq)])
    spoke = Peer(Identity.parse("spoke.example"), "psk gw")
    assert claims.overlaps(spoke, [Ts.parse("8.8.8.0/24")], [Ts.parse("10.1.0.0/24")]) == []
    ((claim, common),) = claims.overlaps(spoke, [Ts.parse("10.9.1.0/24")], [Ts.parse("10.1.0.0/24")])
    assert claim.configured and str(claim.ts) == "10.9.0.0/16" and str(common) == "10.9.1.0/24"
