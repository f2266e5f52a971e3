"""h/fixcost (review revcost F3): a full tunnel decided on address intervals says what collapsing
the networks per prefix length said, and a peer whose Child SAs hold the same selectors has their
networks made about once for a question of an address's role."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st
from test_review_revcost_role_cost import LOCAL, MOVED_TO, SITE, _odd, made  # noqa: F401 (a fixture)

from tunsec.ike.address_role import address_role
from tunsec.ike.by_address import EstablishedByAddress
from tunsec.policy.claims import TsClaims
from tunsec.policy.full_tunnel import EVERYTHING, default_routes
from tunsec.policy.selector import IPNetwork


def _collapsed(nets: list[IPNetwork]) -> set[IPNetwork]:
    """What default_routes answered before h/fixcost: the networks collapsed once per prefix length."""
    found: set[IPNetwork] = set()
    for version, space in EVERYTHING.items():
        mine = [n for n in nets if n.version == version]
        for length in sorted({n.prefixlen for n in mine}):
            wide = [n for n in mine if n.prefixlen <= length]
            if any(space.subnet_of(n) for n in ipaddress.collapse_addresses(wide)):  # type: ignore[type-var, arg-type]
                found.update(wide)
                break
    return found


def _network(version: int, address: int, length: int) -> IPNetwork:
    bits = 32 if version == 4 else 128
    return ipaddress.ip_network((address % (1 << bits), min(length, bits)), strict=False)


# networks near what makes a full tunnel: short prefixes, halves, 2000::/3's parts, odd ranges' networks
_NETS = st.one_of(
    st.builds(_network, st.just(4), st.integers(0, 2**32 - 1), st.integers(0, 6)),
    st.builds(_network, st.just(6), st.integers(0, 2**128 - 1), st.integers(0, 6)),
    st.builds(_network, st.just(6), st.integers(1 << 125, (1 << 126) - 1), st.integers(3, 8)),
    st.builds(_network, st.sampled_from([4, 6]), st.integers(0, 2**128 - 1), st.integers(0, 128)),
)
_RANGES = st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)).map(
    lambda r: list(ipaddress.summarize_address_range(ipaddress.IPv4Address(min(r)), ipaddress.IPv4Address(max(r)))))


@settings(max_examples=400, deadline=None)
@given(st.lists(_NETS, max_size=12), st.lists(_RANGES, max_size=3))
def test_intervals_say_what_the_collapse_said(nets: list[IPNetwork], ranges: list[list[IPNetwork]]) -> None:
    together = nets + [n for r in ranges for n in r]
    assert default_routes(together) == _collapsed(together)


def test_the_known_full_tunnels() -> None:
    net = ipaddress.ip_network
    cases = {
        ("0.0.0.0/0", "10.0.0.0/8"): {"0.0.0.0/0"},
        ("0.0.0.0/1", "128.0.0.0/1", "10.0.0.0/8"): {"0.0.0.0/1", "128.0.0.0/1"},
        ("0.0.0.0/1", "128.0.0.0/2"): set(),
        ("2000::/3", "fc00::/7"): {"2000::/3"},
        ("::/1", "8000::/1"): {"::/1", "8000::/1"},
        ("2000::/4", "3000::/4", "0.0.0.0/0"): {"2000::/4", "3000::/4", "0.0.0.0/0"},
        ("2000::/4", "3000::/5"): set(),
    }
    for given_nets, full in cases.items():
        assert default_routes([net(n) for n in given_nets]) == {net(n) for n in full}, given_nets


def test_child_sas_of_the_same_selectors_have_their_networks_made_about_once(made: list[int]) -> None:  # noqa: F811
    """A site of 16 Child SAs, each of the same four odd IPv6 ranges, moves into them: the networks
    made for its role stay within twice those of its selectors (before h/fixcost: each claim found,
    64 of them, made its selector's networks twice more, and collapsing made them per prefix length)."""
    claims = TsClaims()
    for handle in range(16):
        claims.add(handle, "sites", SITE, [_odd(k) for k in range(4)], LOCAL)
    networks = 16 * sum(len(_odd(k).networks()) for k in range(4))
    made[0] = 0
    role = address_role([], EstablishedByAddress(), None, MOVED_TO, claims)
    assert role is not None and role.kind == "tunnel"
    assert made[0] <= 2 * networks, f"{made[0]} networks made for a peer whose selectors are {networks}"
