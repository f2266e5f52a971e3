"""The pool of ready key pairs (tunsec.ike.dh_pool): handed out once, aged out, only configured groups;
and two engines negotiating with keys from it at IKE_SA_INIT, and with keys generated on the spot for
their rekeys (CREATE_CHILD_SA with PFS, IKE rekey), which leave the pool to new clients."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tunsec.ike import dh
from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.constants import DhGroup
from tunsec.ike.dh import KeyExchange
from tunsec.ike.dh_pool import MODP_MAX, STEP_COST, KeyPairPool, group_target
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaUp, IkeSaRekeyed, IkeSaUp
from tunsec.ike.identity import Identity
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.secret import Secret
from tunsec.ike.testing import Network

X25519, ECP256 = DhGroup.CURVE25519, DhGroup.ECP_256


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Recording:
    """generate_key_exchange, remembering every key pair it made."""

    def __init__(self) -> None:
        self.made: list[KeyExchange] = []

    def __call__(self, group: int) -> KeyExchange:
        ke = dh.generate_key_exchange(group)
        self.made.append(ke)
        return ke


def filled(targets: dict[int, int], clock: Clock | None = None) -> tuple[KeyPairPool, Recording, Clock]:
    gen, clock = Recording(), clock or Clock()
    pool = KeyPairPool(gen, clock)
    pool.configure(targets)
    pool.refill(clock())
    return pool, gen, clock


def test_each_key_pair_is_handed_out_once() -> None:
    pool, gen, _ = filled({X25519: 16})
    assert pool.size(X25519) == 16 and len(gen.made) == 16
    taken = []
    for i in range(16):
        ke = pool.take(X25519)
        assert ke is not None
        taken.append(ke)
        assert pool.size(X25519) == 15 - i   # popped, not copied
    assert len({ke.public for ke in taken}) == 16            # 16 distinct public values
    assert len({id(ke) for ke in taken}) == 16
    assert {id(ke) for ke in taken} == {id(ke) for ke in gen.made}
    assert pool.take(X25519) is None                         # empty: the caller generates one
    assert (pool.stats.hits, pool.stats.misses) == (16, 1)
    # a refill makes new key pairs, never hands one out again
    pool.refill(pool.now())
    again = [pool.take(X25519) for _ in range(16)]
    assert not {id(ke) for ke in again} & {id(ke) for ke in taken}
    assert not {ke.public for ke in again if ke is not None} & {ke.public for ke in taken}


def test_key_pairs_expire_unused() -> None:
    clock = Clock()
    pool, gen, _ = filled({X25519: 4}, clock)
    clock.t += 100
    pool.refill(clock())   # full: nothing to do
    assert len(gen.made) == 4
    clock.t += pool.max_age - 100           # the first four reach max_age
    assert pool.missing(clock()) == 4
    assert pool.take(X25519) is None         # too old: dropped, not handed out
    assert (pool.stats.hits, pool.stats.misses, pool.stats.expired) == (0, 1, 4)
    assert pool.size(X25519) == 0
    # refill drops the aged ones as well and replaces them
    pool.refill(clock())
    clock.t += pool.max_age
    assert pool.next_expiry() == clock()
    pool.refill(clock())
    assert pool.stats.expired == 8 and pool.size(X25519) == 4 and len(gen.made) == 12
    assert all(ke not in gen.made[:8] for ke in (pool.take(X25519) for _ in range(4)))


def test_missing_counts_only_the_aged_ones_as_gone() -> None:
    """Key pairs of several ages: those at max_age are missing, the younger ones are not, the
    empty places are (missing looks at the oldest, in front, without walking the pool)."""
    clock = Clock()
    pool, _, _ = filled({X25519: 6}, clock)   # six born at t
    for _ in range(2):
        pool.take(X25519)
    clock.t += 50
    pool.refill(clock())                      # two more born at t + 50, behind the four older
    assert pool.size(X25519) == 6 and pool.missing(clock()) == 0
    clock.t += pool.max_age - 50              # the four born at t reach max_age, the two do not
    assert pool.missing(clock()) == 4
    pool.take(X25519)                         # drops the four aged ones, hands out a young one
    assert pool.size(X25519) == 1 and pool.missing(clock()) == 5
    clock.t += 50                             # the last one ages too
    assert pool.missing(clock()) == 6


def test_the_oldest_key_pair_goes_first() -> None:
    clock = Clock()
    pool, gen, _ = filled({X25519: 2}, clock)
    first = pool.take(X25519)
    clock.t += 10
    pool.refill(clock())
    assert first is gen.made[0]
    assert pool.take(X25519) is gen.made[1] and pool.take(X25519) is gen.made[2]


def test_configure_keeps_only_configured_groups() -> None:
    pool, gen, _ = filled({X25519: 4, ECP256: 3})
    assert pool.sizes() == {X25519: 4, ECP256: 3}
    pool.configure({ECP256: 2})
    assert pool.sizes() == {ECP256: 2}
    assert pool.take(X25519) is None and pool.stats.unpooled == 1
    assert pool.take(ECP256) is gen.made[4]     # trimmed the youngest
    pool.configure({})
    assert pool.sizes() == {} and pool.take(ECP256) is None
    assert pool.stats.unpooled == 1              # an unconfigured pool counts nothing


def test_refill_steps_are_bounded_and_calm_follows_takes() -> None:
    clock = Clock()
    pool = KeyPairPool(Recording(), clock)
    pool.configure({X25519: 20, DhGroup.MODP_2048: 2})
    assert pool.refill(clock(), STEP_COST) == STEP_COST          # X25519 costs 1
    assert pool.refill(clock(), STEP_COST) == STEP_COST
    assert pool.refill(clock(), STEP_COST) == 4 + 0               # MODP 2048 costs 7: not with 4 X25519
    assert pool.refill(clock(), STEP_COST) == 1                   # at least one per step
    assert pool.refill(clock(), STEP_COST) == 1
    assert pool.refill(clock(), STEP_COST) == 0 and pool.missing(clock()) == 0
    assert pool.is_calm(clock())
    pool.take(X25519)
    assert not pool.is_calm(clock()) and pool.calm_at() == clock() + pool.calm
    clock.t += pool.calm
    assert pool.is_calm(clock())


def test_modp_pool_is_capped() -> None:
    assert group_target(DhGroup.MODP_4096, 256) == MODP_MAX and group_target(X25519, 256) == 256
    assert group_target(DhGroup.MODP_2048, 8) == 8


def test_init_key_exchange_takes_from_the_process_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    pool, gen, _ = filled({X25519: 2})
    monkeypatch.setattr(dh, "POOL", pool)
    a, b, c = (dh.init_key_exchange(X25519) for _ in range(3))
    assert (a, b) == (gen.made[0], gen.made[1]) and c not in gen.made    # the third generated on the spot
    d = dh.init_key_exchange(ECP256)
    assert d.group == ECP256 and (pool.stats.hits, pool.stats.misses, pool.stats.unpooled) == (2, 1, 1)
    assert len({k.public for k in (a, b, c)}) == 3


# ----------------------------------------------------------------- two engines with pooled keys

A, B = "192.0.2.1", "192.0.2.2"
PSK = Secret(b"a shared secret of some length")


def _cfg(initiator: bool) -> IkeConfig:
    local_ts, remote_ts = ("10.1.0.0/16", "10.2.0.0/16") if initiator else ("10.2.0.0/16", "10.1.0.0/16")
    ids = ("moon.example", "sun.example") if initiator else ("sun.example", "moon.example")
    return IkeConfig("conn", LocalAuth("psk", Identity.parse(ids[0])), RemoteAuth("psk", Identity.parse(ids[1])),
                     parse_proposals("aes256gcm16-prfsha384-curve25519"),
                     (child_config("net", local_ts, remote_ts, "aes128gcm16-ecp256"),),
                     psk=PSK, local_addr=A if initiator else B, remote_addr=B if initiator else None)


@pytest.fixture
def process_pool(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[KeyPairPool, Recording]]:
    pool, gen, _ = filled({X25519: 8, ECP256: 8})
    monkeypatch.setattr(dh, "POOL", pool)
    yield pool, gen


def _established(pool: KeyPairPool) -> tuple[Network, IkeEndpoint, IkeEndpoint]:
    net = Network()
    a = net.add(A, IkeEndpoint([_cfg(True)]))
    b = net.add(B, IkeEndpoint([_cfg(False)]))
    a.initiate("conn", "net", net.now)
    net.run()
    assert [type(e) for e in net.take(A)] == [IkeSaUp, ChildSaUp]
    return net, a, b


def _rekey_both(net: Network, a: IkeEndpoint, b: IkeEndpoint) -> None:
    """A's Child SA rekeyed with PFS (ECP 256), then B's IKE SA rekeyed (X25519): their keys agree."""
    a.sas[0].rekey_child(a.sas[0].children[-1].unique_id)
    net.run()
    (up_a,), (up_b,) = ([e for e in net.take(ip) if isinstance(e, ChildSaUp)] for ip in (A, B))
    assert up_b.key_in == up_a.key_out and up_a.key_in == up_b.key_out
    b.sas[0].rekey()
    net.run()
    assert [type(e) for e in net.take(A)] == [IkeSaRekeyed] and [type(e) for e in net.take(B)] == [IkeSaRekeyed]


def test_negotiation_with_pooled_key_pairs_and_rekeys_with_their_own(
        process_pool: tuple[KeyPairPool, Recording]) -> None:
    """Both IKE_SA_INIT messages carry pooled public values (different ones); the Child SA rekey with
    PFS and the IKE rekey generate theirs (review revpeerdos R2: only IKE_SA_INIT takes from the pool),
    and their keys agree on both sides, also in the rekeyed IKE SA."""
    pool, gen = process_pool
    publics = {ke.public for ke in gen.made}
    net, a, b = _established(pool)
    (up_b,) = [e for e in net.take(B) if isinstance(e, ChildSaUp)]
    init_req, init_resp = net.log[0].data, net.log[1].data
    ours = [p for p in publics if p in init_req]
    theirs = [p for p in publics if p in init_resp]
    assert len(ours) == 1 and len(theirs) == 1 and ours != theirs
    assert (pool.stats.hits, pool.stats.misses) == (2, 0) and pool.sizes() == {X25519: 6, ECP256: 8}
    taken_at = pool.last_take
    _rekey_both(net, a, b)
    assert pool.sizes() == {X25519: 6, ECP256: 8} and (pool.stats.hits, pool.stats.misses) == (2, 0)
    assert pool.last_take == taken_at   # nothing asked of the pool: its refill's calm is not put off
    assert not any(p in m.data for m in net.log[2:] for p in publics)   # no pooled value in a rekey
    # the rekeyed IKE SA carries a Child SA rekey: its keys agree on both sides
    b.sas[0].rekey_child(b.sas[0].children[0].unique_id)
    net.run()
    (ua,), (ub,) = ([e for e in net.take(ip) if isinstance(e, ChildSaUp)] for ip in (A, B))
    assert ua.key_in == ub.key_out and ua.key_out == ub.key_in and ub.key_in != up_b.key_in


def test_one_peers_rekeys_leave_the_pools_key_pairs_for_new_clients(
        process_pool: tuple[KeyPairPool, Recording]) -> None:
    """Review revpeerdos R2: an authenticated peer that rekeys its Child SA (with PFS) and its IKE
    SA again and again, faster than the pool's calm (so no refill in between), took a pooled key
    pair each time and left the pool empty: a new client's IKE_SA_INIT then paid the generation.
    Its rekeys now take none, and the next IKE_SA_INITs are served ready key pairs."""
    pool, _ = process_pool
    net, a, b = _established(pool)
    net.take(B)
    ready = pool.sizes()
    for _ in range(8):   # as many rekeys of each kind as the pool holds key pairs of its group
        _rekey_both(net, a, b)
    assert pool.sizes() == ready
    hits = pool.stats.hits
    a.initiate("conn", "net", net.now)   # a new IKE SA: both IKE_SA_INITs take a ready key pair
    net.run()
    assert [type(e) for e in net.take(A)] == [IkeSaUp, ChildSaUp]
    assert (pool.stats.hits - hits, pool.stats.misses) == (2, 0)
