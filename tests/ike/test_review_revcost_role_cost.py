"""Review revcost (2026-12-05) F3: what an authenticated peer's move costs the control process when
it holds address ranges of odd bounds.

A peer's new address (a MOBIKE UPDATE_SA_ADDRESSES, a NAT float: mobike._unacceptable ->
address_role.refused_address) is given its role first (address_role.address_role): the claims that
hold it (TsClaims.containing), each with every selector its peer holds, and whether those are a full
tunnel (policy/full_tunnel.default_routes).  A selector is turned into its CIDR networks
(Ts.networks: an IPv6 range such as 2000::1-3fff:...:fffe is 248 of them, with 124 prefix lengths),
and default_routes collapses the networks up to each prefix length in turn: (lengths x networks)
per call, and address_role calls it once for every claim found, over all of that peer's networks.
A range of odd bounds is what narrowing keeps of a peer's proposal within a wide remote_ts (``::/0``:
a site that carries everything, or a gateway seen from its client).  One Child SA of one such range
cost ~0.4 s per move; of 8 (the fast path's pairs) ~2 s; 8 Child SAs of 8 each ~76 s; 64 (the
default max_child_sas) of 8, minutes: the control process's one thread, every peer's IKE and the
worker's pipe waiting behind it.

No timing here: the work is counted as the networks made of selectors (Ts.networks) and handed to
ipaddress.collapse_addresses, against the networks the peer's selectors are (what one pass over them
would look at)."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable, Iterator

import pytest
from test_engine_mobike_own_network import UPLINK1, _hub_cfg, _spoke_cfg
from test_engine_mobike_tunnel_address import _move
from test_engine_vips import GW

from tunsec.ike.address_role import address_role
from tunsec.ike.by_address import EstablishedByAddress
from tunsec.ike.config import child_config
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.testing import Network
from tunsec.policy.claims import Peer, TsClaims
from tunsec.policy.pad import narrow
from tunsec.policy.selector import IPNetwork, Ts, parse_ts

LOCAL = [parse_ts("fd00::/64")]
SITE = Peer("site.example", "psk sites")
MOVED_TO = ipaddress.ip_address("2001:db8::7")   # a global address: inside what the site holds
MOVED_TO_4 = ipaddress.ip_address("12.0.0.7")


def _odd(i: int, version: int = 6) -> Ts:
    """A range of odd bounds: what a peer may propose within a remote_ts of ::/0 (or 0.0.0.0/0)."""
    if version == 4:
        return Ts(ipaddress.ip_address(f"11.0.0.{i + 1}"), ipaddress.ip_address(f"126.255.255.{254 - i}"), 0, 0, 65535)
    return Ts(ipaddress.ip_address(f"2000::{i + 1:x}"),
              ipaddress.ip_address(f"3fff:ffff:ffff:ffff:ffff:ffff:ffff:{0xfffe - i:x}"), 0, 0, 65535)


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """How many networks were made of selectors (Ts.networks) and handed to
    ipaddress.collapse_addresses, in all."""
    count = [0]
    collapse = ipaddress.collapse_addresses
    networks = Ts.networks

    def counted_collapse(nets: Iterable[IPNetwork]) -> Iterator[IPNetwork]:
        nets = list(nets)
        count[0] += len(nets)
        return collapse(nets)   # type: ignore[type-var]

    def counted_networks(ts: Ts) -> list[IPNetwork]:
        nets = networks(ts)
        count[0] += len(nets)
        return nets

    monkeypatch.setattr(ipaddress, "collapse_addresses", counted_collapse)
    monkeypatch.setattr(Ts, "networks", counted_networks)
    yield count


def test_narrowing_keeps_a_range_of_odd_bounds_within_a_wide_remote_ts() -> None:
    """What makes the claims below: the responder keeps such a proposal as it is (RFC 7296 §2.9)."""
    assert narrow([_odd(0)], [parse_ts("::/0")]) == (_odd(0),)
    assert narrow([_odd(0, 4)], [parse_ts("0.0.0.0/0")]) == (_odd(0, 4),)
    assert (len(_odd(0).networks()), len(_odd(0, 4).networks())) == (248, 56)


@pytest.mark.parametrize("version, children, ranges", [(6, 1, 1), (6, 1, 8), (4, 4, 4)])
def test_a_peers_move_costs_no_more_than_a_few_passes_over_its_networks(
        made: list[int], version: int, children: int, ranges: int) -> None:
    """The site holds ``children`` Child SAs of ``ranges`` odd ranges each (booked as the IKE service
    books them) and moves to an address inside them: its role is found with the networks of its
    selectors made and looked at a few times, not once per prefix length per claim found (on main:
    IPv6 (1, 1) counts 129 times the site's 248 networks, (1, 8) 74 times its 1,960; IPv4 (4, 4),
    16 claims found, 71 times its 864: each claim found makes all the site's networks again)."""
    claims = TsClaims()
    for handle in range(children):
        claims.add(handle, "sites", SITE, [_odd(k, version) for k in range(ranges)], LOCAL)
    networks = sum(len(_odd(k, version).networks()) for k in range(ranges)) * children
    made[0] = 0
    role = address_role([], EstablishedByAddress(), None, MOVED_TO if version == 6 else MOVED_TO_4, claims)
    assert role is not None and role.kind == "tunnel" and role.connection == "sites"
    assert made[0] <= 8 * networks, (
        f"{made[0]} networks made and collapsed for a peer whose {children * ranges} selectors are {networks}")


# ------------------------------------------------------------------ the same through the engine (MOBIKE)

ODD_RANGES = ["11.0.0.1-126.255.255.254", "11.0.0.2-126.255.255.253", "11.0.0.3-126.255.255.252",
              "11.0.0.4-126.255.255.251"]
MOVED_INSIDE = "12.0.0.7"   # a host of what the spoke holds: where it moves


def test_a_spokes_mobike_update_costs_no_more_than_a_few_passes_over_its_networks(made: list[int]) -> None:
    """End to end in the engine: a hub's connection of remote_ts 0.0.0.0/0 (a site that carries
    everything behind it), a spoke whose Child SA holds four odd ranges (negotiated, then booked as
    the IKE service books them), and the spoke's MOBIKE UPDATE_SA_ADDRESSES from an address inside
    them.  The hub's work on that one request (~200 bytes) is counted as above (on main: 4,812
    networks, 22 times the spoke's 216; with 64 such Child SAs, each claim found repeats it all)."""
    hub_cfg = dataclasses.replace(_hub_cfg(), children=(
        child_config("lan", "10.9.0.0/16", "0.0.0.0/0", "aes128gcm16"),))
    spoke_cfg = dataclasses.replace(_spoke_cfg(UPLINK1, True), children=(
        child_config("lan", ODD_RANGES, "10.9.0.0/16", "aes128gcm16"),))
    booked = TsClaims()
    net = Network()
    hub = net.add(GW, IkeEndpoint([hub_cfg], ts_claims=booked))
    spoke = net.add(UPLINK1, IkeEndpoint([spoke_cfg]))
    spoke.initiate("hub", "lan", net.now)
    net.run(until=net.now + 5)
    (s_sa,), (h_sa,) = spoke.sas, hub.sas
    (child,) = h_sa._st.children.values()
    assert [str(ts) for ts in child.remote_ts] == ODD_RANGES   # narrowing kept them as proposed
    booked.add(1, "spoke", Peer(h_sa._st.peer_id, hub_cfg.lease_proof), child.remote_ts, child.local_ts,
               by_name=hub_cfg.names_its_peer)
    networks = sum(len(ts.networks()) for ts in child.remote_ts)
    made[0] = 0
    _move(net, UPLINK1, MOVED_INSIDE)
    assert s_sa.update_addresses((MOVED_INSIDE, 4500))
    net.run(until=net.now + 1)
    assert made[0] <= 8 * networks, (
        f"{made[0]} networks made and collapsed for one MOBIKE update of a peer whose selectors are {networks}")
