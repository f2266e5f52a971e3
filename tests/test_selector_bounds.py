"""Work on a peer's selector lists stays linear in them (review O, F1): a TS payload may hold 255
selectors, and pairing, narrowing and cutting addresses out used to compare every result with the
list of those kept (quadratic: 255 x 255 pieces took about an hour of the event loop).  The work is
counted here (calls of the comparisons), never timed."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest

from tunsec.dataplane.pipe import MAX_SELECTORS
from tunsec.policy import pad, selector
from tunsec.policy.pad import narrow
from tunsec.policy.selector import (
    NoSelectors,
    TooManySelectors,
    Ts,
    check_fast_selectors,
    fast_selectors,
    parse_ts,
    selector_pairs,
    selectors_text,
)

ip = ipaddress.ip_address
LEASE = ip("10.3.0.5")
ANY4 = parse_ts("0.0.0.0/0")


def lease_ports(n: int, proto: int = 6) -> list[Ts]:
    """What a client sends to cut its lease into pieces: one port each."""
    return [Ts(LEASE, LEASE, proto, 1000 + i, 1000 + i) for i in range(n)]


def everywhere_ports(n: int, proto: int = 6) -> list[Ts]:
    return [Ts(ANY4.start, ANY4.end, proto, 2000 + j, 2000 + j) for j in range(n)]


@contextmanager
def counted(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> Iterator[list[int]]:
    """Counts the calls of ``owner.name`` while the block runs."""
    calls = [0]
    real: Callable[..., Any] = getattr(owner, name)

    def wrapper(*args: Any, **kw: Any) -> Any:
        calls[0] += 1
        return real(*args, **kw)
    with monkeypatch.context() as m:
        m.setattr(owner, name, wrapper)
        yield calls


def test_255_by_255_selectors_are_refused_without_building_a_pair(monkeypatch: pytest.MonkeyPatch) -> None:
    """65,025 pairs: counted by family and protocol, refused, and no pair compared or built."""
    with counted(monkeypatch, selector, "_compatible") as compared, \
            counted(monkeypatch, selector, "_selector") as built:
        with pytest.raises(TooManySelectors, match="65025 local/remote selector pairs"):
            check_fast_selectors(everywhere_ports(255), lease_ports(255))
        with pytest.raises(TooManySelectors, match="65025 local/remote selector pairs"):
            fast_selectors(everywhere_ports(255), lease_ports(255))
    assert (compared[0], built[0]) == (0, 0)


def test_the_refusal_quotes_a_few_selectors_and_says_how_many_more() -> None:
    with pytest.raises(TooManySelectors) as exc:
        check_fast_selectors(everywhere_ports(255), lease_ports(255))
    assert str(exc.value).count("10.3.0.5/32[tcp/") == MAX_SELECTORS
    assert "(and 247 more)" in str(exc.value)
    assert selectors_text(lease_ports(2)) == "10.3.0.5/32[tcp/1000], 10.3.0.5/32[tcp/1001]"
    assert selectors_text(()) == "(none)"


def test_selectors_that_pair_with_nothing_cost_no_comparison_each(monkeypatch: pytest.MonkeyPatch) -> None:
    """255 UDP pieces that pair with no TCP selector of the other side, and one that pairs: one pair,
    found by comparing the selectors that pair with something only (not 255 x 255)."""
    local = [*everywhere_ports(255, proto=17), parse_ts("10.2.0.0/16")]
    remote = [*lease_ports(255, proto=6)[:1], *[parse_ts(f"fd00::{i:x}") for i in range(255)]]
    with counted(monkeypatch, selector, "_compatible") as compared:
        pairs = selector_pairs(local, remote)
    assert pairs == [(parse_ts("10.2.0.0/16"), remote[0])]
    assert compared[0] == 1


def test_pairs_are_those_of_every_local_with_every_remote_in_order_once_each() -> None:
    """What the pairing did before, pair for pair: each compatible (local, remote) once, local-major."""
    local = [parse_ts(t) for t in ("10.1.0.0/16[tcp]", "fec1::/64", "10.1.0.0/16[tcp]", "10.9.0.0/16")]
    remote = [parse_ts(t) for t in ("10.2.0.0/16[udp]", "10.3.0.0/16", "fec2::/64[tcp]", "10.3.0.0/16")]
    expected: list[tuple[Ts, Ts]] = []
    for lo in local:
        for re_ in remote:
            if selector._compatible(lo, re_) and (lo, re_) not in expected:
                expected.append((lo, re_))
    assert selector_pairs(local, remote) == expected
    assert [str(a) + " " + str(b) for a, b in expected] == [
        "10.1.0.0/16[tcp] 10.3.0.0/16", "fec1::/64 fec2::/64[tcp]", "10.9.0.0/16 10.2.0.0/16[udp]",
        "10.9.0.0/16 10.3.0.0/16"]
    with pytest.raises(NoSelectors):
        selector_pairs(lease_ports(3, proto=6), everywhere_ports(3, proto=17))


def test_narrowing_stops_as_soon_as_it_keeps_more_than_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """255 pieces of the lease narrowed with at most 8: refused after the 9th intersection kept."""
    with counted(monkeypatch, Ts, "intersect") as intersected, \
            pytest.raises(TooManySelectors, match="255 proposed selectors narrow to more than 8"):
        narrow(lease_ports(255), [Ts.host(LEASE)], MAX_SELECTORS)
    assert intersected[0] == MAX_SELECTORS + 1
    assert narrow(lease_ports(255), [Ts.host(LEASE)]) == tuple(lease_ports(255))   # no limit: all of them


def test_narrowing_keeps_each_intersection_once_in_order() -> None:
    proposed = [parse_ts("10.1.0.0/16"), parse_ts("10.1.0.0/16"), parse_ts("10.1.2.0/24"), parse_ts("10.9.0.0/16")]
    allowed = [parse_ts("10.1.2.0/24"), parse_ts("10.1.0.0/24")]
    assert [str(t) for t in narrow(proposed, allowed)] == ["10.1.2.0/24", "10.1.0.0/24"]
    assert pad.narrow(proposed, allowed, 2) == narrow(proposed, allowed)


def _cut_one_by_one(whole: Ts, cuts: Sequence[Ts]) -> list[Ts]:
    """What without_all did before: each cut applied to every piece left."""
    pieces = [whole]
    for cut in cuts:
        pieces = [p for piece in pieces for p in piece.without_addresses(cut)]
    return pieces


@pytest.mark.parametrize("cuts", [
    [], ["10.0.0.0/8"], ["192.168.0.0/16"], ["10.1.0.0/16", "10.0.0.5", "10.255.255.255", "10.0.0.0"],
    ["10.2.0.0/16", "10.1.0.0/15", "fd00::/8", "9.0.0.0-10.0.0.3", "10.200.0.0-11.0.0.0"],
    ["10.0.0.0/9", "10.128.0.0/9"], ["10.3.0.0/24", "10.3.0.0/24", "10.3.0.7"],
])
def test_cutting_addresses_out_gives_what_cutting_them_one_by_one_did(cuts: list[str]) -> None:
    whole = Ts(ip("10.0.0.0"), ip("10.255.255.255"), 6, 80, 80)
    parsed = [parse_ts(c) for c in cuts]
    assert whole.without_all(parsed) == _cut_one_by_one(whole, parsed)


def test_cutting_thousands_of_hosts_out_builds_each_piece_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """2,000 leases of other clients out of a /16 (a pool connection's _not_others): 2,001 pieces,
    each built once (cutting one by one rebuilt the pieces after each cut for every cut)."""
    whole = parse_ts("10.3.0.0/16")
    hosts = [Ts.host(ip(int(ip("10.3.0.0")) + 2 + 3 * i)) for i in range(2000)]
    with counted(monkeypatch, selector, "_ip") as made:
        pieces = whole.without_all(list(reversed(hosts)))
    assert len(pieces) == 2001 and made[0] == 2 * 2001
    assert pieces[0] == parse_ts("10.3.0.0-10.3.0.1") and pieces[-1] == parse_ts("10.3.23.112-10.3.255.255")
