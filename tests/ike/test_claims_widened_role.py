"""Review revclaims3 (of h/fixclaims2), F2 and F4: policy/claims.py containing widens a Child SA's pieces
across the gaps other claims hold, and hands that widened range to ike/address_role.py as the
claim's own network.

review revclaims3 F2: the widening also applies to a peer that is no full tunnel: its network in the role becomes
less specific (a spoke's 10.0.0.0/24 and 10.0.2.0/24 around another spoke's 10.0.1.0/24 become
10.0.0.0/23 and 10.0.2.0/24), and other_tunnel, which lets an address through when the asking
connection's own remote_ts holds it as specifically, then lets through an address that the host
sends into the spoke's tunnel (its /24 is the only policy there: the claims keep the asking
connection's Child SAs out of it).  Before the merge the role named the /24 and the address was
refused.

review revclaims3 F4: _held_by_others counts a gap as held whatever the holder's protocol and ports: pieces around
another claim's 10.2.2.0/24 *tcp/22 only* are joined to 0.0.0.0/0 and the peer is a full tunnel
(nobody's), though the rest of 10.2.2.0/24 (UDP, ICMP, other TCP ports) is held by no one and
the peer's SA does not carry it."""
from __future__ import annotations

import dataclasses
import ipaddress

from test_engine_vips import client_cfg

from tunsec.ike.address_role import address_role, other_tunnel
from tunsec.ike.config import child_config
from tunsec.ike.identity import Identity
from tunsec.policy.claims import Peer, TsClaims
from tunsec.policy.selector import Ts

SPOKE_A = Peer(Identity.parse("a.example"), "psk spokes")
SPOKE_B = Peer(Identity.parse("b.example"), "psk spokes")
LOCAL = (Ts.parse("10.9.0.0/24"),)


def test_a_spoke_that_is_no_full_tunnel_keeps_its_own_networks_in_the_role() -> None:
    """review revclaims3 F2: spoke A holds 10.0.0.0/24 and 10.0.2.0/24 in one Child SA, spoke B 10.0.1.0/24 between
    them; the connection ``home`` routes 10.0.0.0/23.  10.0.0.5 goes into A's tunnel (its /24 is
    the most specific policy, and the only one: the claims keep home's Child SAs out of it), so a
    REDIRECT target or virtual IP there must be refused for home (other_tunnel).  On main the role
    names the widened 10.0.0.0/23 and other_tunnel lets it through."""
    claims = TsClaims()
    claims.add(1, "spokes", SPOKE_A, (Ts.parse("10.0.0.0/24"), Ts.parse("10.0.2.0/24")), LOCAL)
    claims.add(2, "spokes", SPOKE_B, (Ts.parse("10.0.1.0/24"),), LOCAL)
    ip = ipaddress.ip_address("10.0.0.5")
    role = address_role([], {}, None, ip, claims)   # type: ignore[arg-type]
    assert role is not None and role.kind == "tunnel" and role.connection == "spokes"
    assert role.network == ipaddress.ip_network("10.0.0.0/24")
    home = dataclasses.replace(client_cfg("site.example", "192.0.2.50", ()),
                               children=(child_config("net", "10.1.0.0/24", "10.0.0.0/23", "aes128gcm16"),))
    assert other_tunnel(role, home, ip) == "inside remote_ts 10.0.0.0/24 of connection spokes"


def test_pieces_around_a_ports_only_claim_are_no_full_tunnel() -> None:
    """review revclaims3 F4: the gap 10.2.2.0/24 is held only for tcp/22 by another peer: the rest of it is nobody's,
    so a peer holding everything around it is no full tunnel, and an internet address in its
    pieces is its tunnel's (as with a gap nobody holds, test_pieces_with_a_gap_nobody_holds_are_no_full_tunnel)."""
    claims = TsClaims()
    claims.add(1, "hub", SPOKE_A, (Ts.parse("0.0.0.0-10.2.1.255"), Ts.parse("10.2.3.0-255.255.255.255")), LOCAL)
    claims.add(2, "ssh", SPOKE_B, (Ts.parse("10.2.2.0/24[tcp/22]"),), LOCAL)
    role = address_role([], {}, None, ipaddress.ip_address("203.0.113.9"), claims)   # type: ignore[arg-type]
    assert role is not None and role.kind == "tunnel" and role.connection == "hub"
