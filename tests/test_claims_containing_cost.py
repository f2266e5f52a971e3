"""Review revclaims3 (of h/fixclaims2), F1: TsClaims.containing (policy/claims.py), asked by
ike/address_role.py of every MOBIKE target and NAT float of an authenticated peer (exchanges/
mobike.py _unacceptable), now widens each Child SA of the claim's peer (_widened), and every join it
tries (_held_by_others) is a pass over every claim of every peer, sorted.  A peer with 64 Child SAs
(max_child_sas' default) of 16 selectors each (a hub's spoke choosing host selectors within a wide
remote_ts) makes one such question 64 x 15 passes over the hub's claims: at 10,000 claims ~2 s of the
single-threaded control process per request it sends from a new source (35 ms before the merge, the
same machine), every other peer's IKE waiting.

The proof counts the passes, not the time (tests/README.md): how often a Child SA's list of claims
is read while one address's role is asked.  Before the merge it was one pass over the claims (each
Child SA's list once); the bound allows three.  On main it is one per join tried per Child SA of the
peer, each over all of them."""
from __future__ import annotations

import ipaddress

from tunsec.ike.address_role import address_role
from tunsec.ike.identity import Identity
from tunsec.policy.claims import Peer, TsClaims
from tunsec.policy.selector import Ts

LAN = (Ts.parse("10.255.0.0/24"),)
OTHERS, CHILD_SAS, PIECES = 100, 8, 16


class _Counted(list):   # type: ignore[type-arg]
    """A Child SA's claim entries, counting the passes over them."""
    reads = 0

    def __iter__(self):   # type: ignore[no-untyped-def]
        _Counted.reads += 1
        return super().__iter__()


def test_the_role_of_an_address_reads_the_claims_a_bounded_number_of_times() -> None:
    claims = TsClaims()
    nets = list(ipaddress.ip_network("10.0.0.0/8").subnets(new_prefix=24))[:OTHERS]
    for i, net in enumerate(nets):
        claims.add(100 + i, "spokes", Peer(Identity.parse(f"s{i}.example"), "psk spokes"), (Ts.parse(str(net)),), LAN)
    spoke = Peer(Identity.parse("x.example"), "psk spokes")
    hosts = list(ipaddress.ip_network("172.16.0.0/20").hosts())
    for k in range(CHILD_SAS):   # its Child SAs: 16 host selectors each, gaps between them
        claims.add(10_000 + k, "spokes", spoke,
                   tuple(Ts.parse(str(hosts[k * 2 * PIECES + 2 * j])) for j in range(PIECES)), LAN)
    by_handle = claims._by_handle   # the lists containing and _widened read
    for handle in list(by_handle):
        by_handle[handle] = _Counted(by_handle[handle])
    _Counted.reads = 0
    role = address_role([], {}, None, hosts[0], claims)   # type: ignore[arg-type]
    assert role is not None and role.kind == "tunnel" and role.connection == "spokes"
    lists = OTHERS + CHILD_SAS
    assert _Counted.reads <= 3 * lists, f"{_Counted.reads} passes over {lists} Child SAs' claims"
