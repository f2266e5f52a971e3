"""The SAD (GETSPI/UPDATE/ADD/DELETE/FLUSH, lifetimes) and the SPD (ordering,
actions, ACQUIRE, binding of outbound SAs), through the C path."""

from __future__ import annotations

import dataclasses
import ipaddress
import threading
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from esp_ref import (
    A_OUTER,
    B_OUTER,
    SEL4,
    SEL6,
    esp_open,
    esp_seal,
    ike_message,
    inner,
    ipv4_udp,
    new_key,
    receiver,
    sender,
    spec,
    total_drops,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from tunsec.dataplane._fastpath import ffi, lib

from tunsec.dataplane.fastpath import Dataplane, DataplaneError, Drop, Event, EventType, _params, sa_wipe_probe
from tunsec.dataplane.pipe import (
    Action,
    Alg,
    Direction,
    Endpoint,
    Errno,
    ExpireReason,
    Lifetime,
    Policy,
    Selector,
)

PKT4 = inner(4)
PKT6 = inner(6)


def errno_of(fn: Callable[[], object]) -> Errno:
    with pytest.raises(DataplaneError) as ei:
        fn()
    return ei.value.errno


def snapshot(dp: Dataplane) -> list[tuple[Any, ...]]:
    """SAD state without the clock (age) so two snapshots compare equal."""
    return sorted(
        (
            s.spi,
            s.direction,
            s.state,
            s.alg,
            s.esn,
            s.reqid,
            s.replay_window,
            s.local,
            s.remote,
            s.counters["packets"],
            s.seq,
        )
        for s in dp.sas()
    )


# ------------------------------------------------------------------- GETSPI


def test_getspi_10k_distinct() -> None:
    dp = Dataplane()
    spis = [dp.getspi() for _ in range(10_000)]
    assert len(set(spis)) == 10_000
    assert all(256 <= s <= 0xFFFF_FFFF for s in spis)
    sas = dp.sas()
    assert len(sas) == 10_000
    assert {s.spi for s in sas} == set(spis)
    assert all(s.state == "larval" and s.direction is Direction.IN for s in sas)


def test_getspi_range_exhaustion() -> None:
    dp = Dataplane()
    lo, hi = 0x4000_0000, 0x4000_00FF
    spis = {dp.getspi(lo, hi) for _ in range(256)}
    assert spis == set(range(lo, hi + 1))
    assert errno_of(lambda: dp.getspi(lo, hi)) is Errno.ENOSPC
    assert len(dp.sas()) == 256
    # freeing one makes exactly that one available again
    dp.delete(lo + 77, Direction.IN)
    assert dp.getspi(lo, hi) == lo + 77
    assert errno_of(lambda: dp.getspi(lo, hi)) is Errno.ENOSPC


def test_getspi_ranges() -> None:
    dp = Dataplane()
    assert dp.getspi(0x1234, 0x1234) == 0x1234
    assert errno_of(lambda: dp.getspi(0x1234, 0x1234)) is Errno.ENOSPC
    # SPIs 0..255 are reserved (RFC 4303 2.1): never handed out
    got = {dp.getspi(0, 300) for _ in range(45)}
    assert got == set(range(256, 301))
    assert errno_of(lambda: dp.getspi(0, 255)) is Errno.EINVAL
    assert errno_of(lambda: dp.getspi(0x2000, 0x1000)) is Errno.EINVAL
    # an outbound SA with the same number does not block an inbound SPI
    dp2 = Dataplane()
    dp2.add(spec(0x5555, Direction.OUT, new_key()))
    assert dp2.getspi(0x5555, 0x5555) == 0x5555


def test_getspi_concurrent_threads_distinct() -> None:
    dp = Dataplane()
    results: list[list[int]] = [[] for _ in range(8)]
    barrier = threading.Barrier(8)

    def work(i: int) -> None:
        barrier.wait()
        results[i].extend(dp.getspi(0x1000_0000, 0x1000_0000 + 20_000) for _ in range(2000))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = [s for r in results for s in r]
    assert len(flat) == 16_000
    assert len(set(flat)) == 16_000
    assert len(dp.sas()) == 16_000


# ------------------------------------------------------------- UPDATE / ADD


def test_update_only_on_larval() -> None:
    key = new_key()
    dp = Dataplane()
    spi = dp.getspi()
    assert dp.get(spi, Direction.IN).state == "larval"
    dp.update(spec(spi, Direction.IN, key))
    assert dp.get(spi, Direction.IN).state == "mature"
    other = new_key()
    assert errno_of(lambda: dp.update(spec(spi, Direction.IN, other))) is Errno.ESTATE
    # the SA still has its first key
    assert dp.inbound(esp_seal(key, spi, 1, PKT4, 4)) == (PKT4, Drop.NONE)
    assert dp.inbound(esp_seal(other, spi, 2, PKT4, 4)) == (b"", Drop.AUTH)


def test_update_unknown_is_enoent() -> None:
    dp = Dataplane()
    assert errno_of(lambda: dp.update(spec(0x9999, Direction.IN, new_key()))) is Errno.ENOENT
    assert dp.sas() == []


def test_add_duplicate_is_eexist_and_keeps_the_first() -> None:
    key = new_key()
    dp = sender(key, 0x1001)
    assert errno_of(lambda: dp.add(spec(0x1001, Direction.OUT, new_key()))) is Errno.EEXIST
    esp, _, drop, _ = dp.outbound(PKT4)
    assert drop is Drop.NONE
    assert esp_open(key, esp).payload == PKT4
    assert len(dp.sas()) == 1


def test_add_and_update_refuse_the_wrong_direction() -> None:
    dp = Dataplane()
    # inbound SAs come only from GETSPI + UPDATE
    assert errno_of(lambda: dp.add(spec(0x1001, Direction.IN, new_key()))) is Errno.EINVAL
    spi = dp.getspi()
    assert errno_of(lambda: dp.update(spec(spi, Direction.OUT, new_key()))) is Errno.EINVAL
    assert [(s.spi, s.state) for s in dp.sas()] == [(spi, "larval")]


@pytest.mark.parametrize("family", [4, 6])
def test_params_carry_every_field_where_c_reads_it(family: int) -> None:
    """_params packs the C struct in one go (struct, offsets taken from cffi): each field read back
    through cffi's own accessors is the SaSpec's, every value distinct so a shifted one shows."""
    ip = ipaddress.ip_address

    def addr(n: int) -> Any:
        return ip(f"10.{n}.0.1") if family == 4 else ip(f"fd00::{n}:1")

    sels = tuple(Selector(addr(10 + 4 * i), addr(11 + 4 * i), addr(12 + 4 * i), addr(13 + 4 * i), proto=17 + i,
                          sport=(100 + i, 200 + i), dport=(300 + i, 400 + i)) for i in range(lib.TS_MAX_SELECTORS))
    key = bytes(range(1, 37))
    sa = dataclasses.replace(
        spec(0x12345678, Direction.IN, key, esn=True, window=4096, reqid=0x0A0B0C0D, seq_start=2**40 + 5),
        alg=Alg.AES256GCM16, local=Endpoint(addr(1), 4500), remote=Endpoint(addr(2), 4501), selectors=sels,
        soft=Lifetime(bytes=2**60 + 1, packets=2**50 + 2, seconds=3), hard=Lifetime(bytes=2**61 + 3, packets=2**51 + 4,
                                                                                seconds=4),
        seq_limit=2**41 + 6, seq_notify=2**41 + 7, report_first_use=True)
    p = _params(sa)
    assert (p.spi, p.dir, p.keylen, bytes(p.key), p.esn, p.replay_window, p.reqid) == (
        0x12345678, 0, 36, key, 1, 4096, 0x0A0B0C0D)
    n = 4 if family == 4 else 16
    for c, ep in ((p.local, sa.local), (p.remote, sa.remote)):
        assert (c.family, bytes(c.addr[0:n]), bytes(c.addr[n:16]), c.port) == (family, ep.addr.packed, bytes(16 - n),
                                                                              ep.port)
    assert (p.soft_bytes, p.soft_packets, p.hard_bytes, p.hard_packets) == (2**60 + 1, 2**50 + 2, 2**61 + 3, 2**51 + 4)
    assert (p.seq_start, p.seq_limit, p.seq_notify, p.report_first_use) == (2**40 + 5, 2**41 + 6, 2**41 + 7, 1)
    assert p.n_sel == len(sels)
    for c, sel in zip(p.sel, sels, strict=True):
        assert (c.family, c.proto, c.sport_lo, c.sport_hi, c.dport_lo, c.dport_hi) == (
            family, sel.proto, *sel.sport, *sel.dport)
        for name in ("src_lo", "src_hi", "dst_lo", "dst_hi"):
            assert bytes(getattr(c, name))[:n] == getattr(sel, name).packed
    # and the C side takes it as it is
    dp = Dataplane()
    spi = dp.getspi(0x12345678, 0x12345678)
    assert spi == 0x12345678
    dp.update(sa)
    got = dp.get(spi, Direction.IN)
    assert (got.state, got.alg, got.esn, got.reqid, got.local, got.remote) == (
        "mature", Alg.AES256GCM16, True, 0x0A0B0C0D, sa.local, sa.remote)


def _bad_params() -> list[tuple[str, Callable[[Any], None]]]:
    def sel_reversed(p: Any) -> None:
        p.n_sel = 1
        p.sel[0].sport_lo, p.sel[0].sport_hi = 10, 5

    def sel_family(p: Any) -> None:
        p.n_sel = 1
        p.sel[0].family = 5

    def sel_addr(p: Any) -> None:
        p.n_sel = 1
        p.sel[0].src_lo[0] = 11  # src_lo 11.x > src_hi 10.x

    def set_(field: str, value: int) -> Callable[[Any], None]:
        def f(p: Any) -> None:
            setattr(p, field, value)

        return f

    def remote(field: str, value: int) -> Callable[[Any], None]:
        def f(p: Any) -> None:
            setattr(p.remote, field, value)

        return f

    return [
        ("spi<256", set_("spi", 255)),
        ("spi0", set_("spi", 0)),
        ("keylen16", set_("keylen", 16)),
        ("keylen32", set_("keylen", 32)),
        ("keylen0", set_("keylen", 0)),
        ("esn2", set_("esn", 2)),
        ("window31", set_("replay_window", 31)),
        ("window-too-big", set_("replay_window", 65537)),
        ("n_sel9", set_("n_sel", 9)),
        ("seq_start>32bit", set_("seq_start", 2**32)),
        ("remote-family0", remote("family", 0)),
        ("remote-family5", remote("family", 5)),
        ("remote-port0", remote("port", 0)),
        ("local-family-mismatch", lambda p: setattr(p.local, "family", 6)),
        ("sel-port-reversed", sel_reversed),
        ("sel-family", sel_family),
        ("sel-addr-reversed", sel_addr),
        ("dir2", set_("dir", 2)),
    ]


@pytest.mark.parametrize(("name", "mangle"), _bad_params(), ids=[n for n, _ in _bad_params()])
def test_invalid_params_refused_without_state_change(name: str, mangle: Callable[[Any], None]) -> None:
    key = new_key()
    dp = Dataplane()
    larval = dp.getspi()
    dp.add(spec(0x7000, Direction.OUT, key))
    before = snapshot(dp)

    p_in = _params(spec(larval, Direction.IN, key))
    mangle(p_in)
    assert lib.ts_sad_update(dp._dp, p_in) == lib.TS_EINVAL
    p_out = _params(spec(0x7001, Direction.OUT, key))
    mangle(p_out)
    assert lib.ts_sad_add(dp._dp, p_out) == lib.TS_EINVAL
    assert snapshot(dp) == before
    # the larval SA can still be completed, and the SPI of the refused ADD is free
    dp.update(spec(larval, Direction.IN, key))
    dp.add(spec(0x7001, Direction.OUT, key))
    assert dp.get(larval, Direction.IN).state == "mature"


def test_spd_add_invalid_refused() -> None:
    dp = Dataplane()
    p = ffi.new("ts_policy *")
    p.id, p.priority, p.action, p.reqid = 1, 1, 3, 1
    p.sel.family = 4
    ffi.memmove(p.sel.src_hi, b"\xff" * 4, 4)
    ffi.memmove(p.sel.dst_hi, b"\xff" * 4, 4)
    p.sel.sport_hi = p.sel.dport_hi = 0xFFFF
    assert lib.ts_spd_add(dp._dp, p) == lib.TS_EINVAL  # action 3
    p.action = 2
    p.sel.family = 0
    assert lib.ts_spd_add(dp._dp, p) == lib.TS_EINVAL  # no family
    p.sel.family = 4
    p.sel.dport_lo = 0xFFFF
    p.sel.dport_hi = 1
    assert lib.ts_spd_add(dp._dp, p) == lib.TS_EINVAL  # reversed ports
    assert dp.policies() == []


# ---------------------------------------------------------------- DELETE / FLUSH


def test_delete() -> None:
    key = new_key()
    rx, spi = receiver(key)
    assert rx.inbound(esp_seal(key, spi, 1, PKT4, 4)) == (PKT4, Drop.NONE)
    assert errno_of(lambda: rx.delete(spi, Direction.OUT, B_OUTER)) is Errno.ENOENT  # wrong direction
    rx.delete(spi, Direction.IN)
    assert errno_of(lambda: rx.delete(spi, Direction.IN)) is Errno.ENOENT
    assert rx.sas() == []
    assert rx.inbound(esp_seal(key, spi, 2, PKT4, 4)) == (b"", Drop.NO_SA)
    assert lib.ts_sad_delete(rx._dp, spi, 2, ffi.NULL) == lib.TS_EINVAL

    tx = sender(key, 0x1001)
    tx.delete(0x1001, Direction.OUT, B_OUTER)
    assert tx.outbound(PKT4)[2] is Drop.NO_SA
    assert all(p.out_spi == 0 for p in tx.policies())


def test_flush() -> None:
    key = new_key()
    dp = sender(key, 0x1001)
    dp.add(spec(0x1002, Direction.OUT, key, reqid=2))
    spis = [dp.getspi() for _ in range(50)]
    dp.update(spec(spis[0], Direction.IN, key))
    assert len(dp.sas()) == 52
    dp.flush()
    assert dp.sas() == []
    pols = dp.policies()
    assert len(pols) == 2 and all(p.out_spi == 0 for p in pols), "policies stay, unbound"
    assert dp.outbound(PKT4)[2] is Drop.NO_SA
    assert dp.inbound(esp_seal(key, spis[0], 1, PKT4, 4)) == (b"", Drop.NO_SA)
    # the SAD works after a flush
    dp.add(spec(0x1001, Direction.OUT, key))
    assert dp.outbound(PKT4)[2] is Drop.NONE
    dp.spd_flush()
    assert dp.policies() == []
    assert dp.outbound(PKT4)[2] is Drop.NO_POLICY


# -------------------------------------------------------------------- the SPD


def _net(s: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(s)


def _to(dst: str) -> bytes:
    return ipv4_udp("10.1.0.1", dst, b"x")


def test_spd_priority_and_insertion_order() -> None:
    key = new_key()
    dp = Dataplane()
    dp.add(spec(0x1001, Direction.OUT, key, reqid=7))
    sel = SEL4
    one = Selector.from_networks(_net("10.1.0.0/24"), _net("10.2.0.7/32"))
    dp.spd_add(Policy(id=1, priority=20, action=Action.PROTECT, reqid=7, selector=sel))
    assert dp.outbound(_to("10.2.0.1"))[2] is Drop.NONE
    dp.spd_add(Policy(id=2, priority=10, action=Action.BYPASS, reqid=0, selector=sel))
    assert dp.outbound(_to("10.2.0.1"))[2] is Drop.BYPASS
    dp.spd_add(Policy(id=3, priority=10, action=Action.DISCARD, reqid=0, selector=sel))
    assert dp.outbound(_to("10.2.0.1"))[2] is Drop.BYPASS, "a tie keeps insertion order"
    dp.spd_add(Policy(id=4, priority=5, action=Action.DISCARD, reqid=0, selector=one))
    assert dp.outbound(_to("10.2.0.7"))[2] is Drop.DISCARD
    assert dp.outbound(_to("10.2.0.8"))[2] is Drop.BYPASS
    assert [p.id for p in dp.policies()] == [4, 2, 3, 1]
    assert (
        errno_of(lambda: dp.spd_add(Policy(id=3, priority=1, action=Action.BYPASS, reqid=0, selector=sel)))
        is Errno.EEXIST
    )
    dp.spd_delete(2)
    assert dp.outbound(_to("10.2.0.1"))[2] is Drop.DISCARD
    dp.spd_delete(3)
    assert dp.outbound(_to("10.2.0.1"))[2] is Drop.NONE
    assert errno_of(lambda: dp.spd_delete(3)) is Errno.ENOENT
    assert dp.outbound(_to("10.3.0.1"))[2] is Drop.NO_POLICY
    assert dp.outbound(PKT6)[2] is Drop.NO_POLICY
    counts = {p.id: p.packets for p in dp.policies()}
    assert counts == {4: 1, 1: 2}
    d = dp.drops()
    assert (d["bypass"], d["discard"], d["no_policy"]) == (3, 2, 2)


_ADDRS = [f"10.0.0.{i}" for i in range(8)]


@st.composite
def _policy_sets(draw: st.DrawFn) -> list[tuple[int, Action, Selector]]:
    out = []
    for _ in range(draw(st.integers(1, 12))):
        s0, s1 = sorted(draw(st.lists(st.integers(0, 7), min_size=2, max_size=2)))
        d0, d1 = sorted(draw(st.lists(st.integers(0, 7), min_size=2, max_size=2)))
        p0, p1 = sorted(draw(st.lists(st.sampled_from([0, 53, 80, 443, 65535]), min_size=2, max_size=2)))
        sel = Selector(
            ipaddress.IPv4Address(_ADDRS[s0]),
            ipaddress.IPv4Address(_ADDRS[s1]),
            ipaddress.IPv4Address(_ADDRS[d0]),
            ipaddress.IPv4Address(_ADDRS[d1]),
            proto=draw(st.sampled_from([0, 6, 17])),
            dport=(p0, p1),
        )
        out.append((draw(st.integers(0, 4)), draw(st.sampled_from([Action.BYPASS, Action.DISCARD])), sel))
    return out


def test_policies_lists_every_policy_and_at_most_max_n() -> None:
    # the list is sized by the SPD's count (not a fixed 65536 entries zeroed per DUMP)
    dp = Dataplane()
    for i in range(100):
        sel = Selector.from_networks(_net("10.1.0.0/24"), _net(f"10.2.{i}.0/24"))
        dp.spd_add(Policy(id=i + 1, priority=10, action=Action.BYPASS, reqid=0, selector=sel))
    assert [p.id for p in dp.policies()] == list(range(1, 101))
    assert [p.id for p in dp.policies(max_n=7)] == list(range(1, 8))
    dp.spd_flush()
    assert dp.policies() == []


def test_spd_add_stores_every_field() -> None:
    """spd_add packs the policy and its selector in one struct call: each reads back as given."""
    dp = Dataplane()
    sel6 = Selector(ipaddress.ip_address("2001:db8::1"), ipaddress.ip_address("2001:db8::ff"),
                    ipaddress.ip_address("fd00::"), ipaddress.ip_address("fd00::1:0"), 17, (53, 54), (1000, 0xFFFF))
    sel4 = Selector.from_networks(_net("10.1.0.0/24"), _net("10.2.3.4/32"), 6, (1, 2), (443, 443))
    dp.spd_add(Policy(id=0xFFFFFFF0, priority=0xFFFFFFFE, action=Action.PROTECT, reqid=0xABCDEF01, selector=sel6))
    dp.spd_add(Policy(id=7, priority=3, action=Action.DISCARD, reqid=0, selector=sel4))
    assert sorted((p.id, p.priority, p.action, p.reqid, p.selector) for p in dp.policies()) == [
        (7, 3, Action.DISCARD, 0, sel4), (0xFFFFFFF0, 0xFFFFFFFE, Action.PROTECT, 0xABCDEF01, sel6)]


@settings(max_examples=200, deadline=None)
@given(
    pols=_policy_sets(),
    pkts=st.lists(
        st.tuples(
            st.integers(0, 7),
            st.integers(0, 7),
            st.sampled_from([17, 6]),
            st.sampled_from([0, 53, 80, 81, 443, 65535]),
        ),
        min_size=1,
        max_size=20,
    ),
)
def test_spd_lookup_matches_model(
    pols: list[tuple[int, Action, Selector]], pkts: list[tuple[int, int, int, int]]
) -> None:
    """First match in (priority, insertion) order, against a sorted list in Python."""
    dp = Dataplane()
    for i, (prio, action, sel) in enumerate(pols):
        dp.spd_add(Policy(id=i, priority=prio, action=action, reqid=0, selector=sel))
    order = sorted(range(len(pols)), key=lambda i: (pols[i][0], i))
    assert [p.id for p in dp.policies()] == order
    for s, d, proto, dport in pkts:
        pkt = bytearray(ipv4_udp(_ADDRS[s], _ADDRS[d], b"x", dport=dport))
        pkt[9] = proto  # TCP or UDP: the ports sit at the same offsets
        want = Drop.NO_POLICY
        for i in order:
            sel = pols[i][2]
            if (
                int(sel.src_lo) <= int(ipaddress.IPv4Address(_ADDRS[s])) <= int(sel.src_hi)
                and int(sel.dst_lo) <= int(ipaddress.IPv4Address(_ADDRS[d])) <= int(sel.dst_hi)
                and sel.proto in (0, proto)
                and sel.dport[0] <= dport <= sel.dport[1]
            ):
                want = Drop.BYPASS if pols[i][1] is Action.BYPASS else Drop.DISCARD
                break
        assert dp.outbound(bytes(pkt))[2] is want


def test_outbound_malformed_inner() -> None:
    dp = sender(new_key())
    for junk in (b"", b"\x45", b"\x45" + b"\0" * 18, b"\x60" + b"\0" * 30, b"\x00" * 40, PKT4[:-1]):
        assert dp.outbound(junk)[2] is Drop.MALFORMED
    assert dp.drops()["malformed"] == 6 and total_drops(dp) == 6


# ------------------------------------------------------ ACQUIRE and INVALID_SPI


def test_protect_without_sa_acquires_once() -> None:
    dp = Dataplane()
    dp.spd_add(Policy(id=42, priority=1, action=Action.PROTECT, reqid=9, selector=SEL4))
    dp.spd_add(Policy(id=43, priority=1, action=Action.PROTECT, reqid=9, selector=SEL6))
    assert dp.outbound(PKT4) == (b"", None, Drop.NO_SA, b"")
    evs = list(dp.events())
    assert len(evs) == 1
    ev = evs[0]
    assert ev.type is EventType.ACQUIRE and ev.policy_id == 42
    a, b = ipaddress.IPv4Address("10.1.0.1"), ipaddress.IPv4Address("10.2.0.1")
    assert ev.selector == Selector(a, a, b, b, proto=17, sport=(1234, 1234), dport=(5678, 5678))
    # rate-limited per policy: the next packet right after gives no second event
    assert dp.outbound(PKT4)[2] is Drop.NO_SA
    assert list(dp.events()) == []
    # another policy has its own limiter
    assert dp.outbound(PKT6)[2] is Drop.NO_SA
    assert [(e.type, e.policy_id) for e in dp.events()] == [(EventType.ACQUIRE, 43)]
    assert dp.drops()["no_sa"] == 3


def _invalid_spi_events(dp: Dataplane) -> list[Event]:
    return [e for e in dp.events() if e.type is EventType.INVALID_SPI]


def test_unknown_spi_reports_invalid_spi_with_sender() -> None:
    key = new_key()
    dp, _spi = receiver(key)
    src = Endpoint(ipaddress.ip_address("198.51.100.9"), 31337)
    assert dp.inbound(esp_seal(key, 0xDEAD_BEEF, 1, PKT4, 4), src) == (b"", Drop.NO_SA)
    evs = list(dp.events())
    assert len(evs) == 1
    assert evs[0].type is EventType.INVALID_SPI
    assert evs[0].spi == 0xDEAD_BEEF and evs[0].remote == src
    assert dp.drops()["no_sa"] == 1


def test_larval_spi_is_as_good_as_unknown() -> None:
    key = new_key()
    dp = Dataplane()
    spi = dp.getspi()
    src = Endpoint(ipaddress.ip_address("2001:db8::9"), 4500)
    assert dp.inbound(esp_seal(key, spi, 1, PKT4, 4), src) == (b"", Drop.NO_SA)
    evs = _invalid_spi_events(dp)
    assert [(e.spi, e.remote) for e in evs] == [(spi, src)]


def test_ike_and_keepalive_on_the_esp_port() -> None:
    dp = Dataplane()
    src = Endpoint(ipaddress.ip_address("192.0.2.9"), 4500)
    assert dp.inbound(b"\xff", src) == (b"", Drop.KEEPALIVE)
    assert dp.inbound(b"\0\0\0\0" + ike_message(b"IKE message"), src) == (b"", Drop.NONE)
    evs = list(dp.events())
    assert [(e.type, e.data, e.remote) for e in evs] == [(EventType.IKE, ike_message(b"IKE message"), src)]
    assert dp.drops()["keepalive"] == 1 and total_drops(dp) == 1


def test_events_read_every_field_as_cffi_does() -> None:
    """events() reads a ts_event in one struct call: each field, set to a value of its own, reads
    back as cffi's attribute read gives it; and a ts_addr as the pipe's address fields decode."""
    from tunsec.dataplane import fastpath

    ev = ffi.new("ts_event *")
    ev.type, ev.dir, ev.hard, ev.reason, ev.spi, ev.policy_id = 250, 251, 252, 253, 0xA1B2C3D4, 0xE5F60718
    ev.known, ev.proven, ev.unmarked, ev.peer = 254, 249, 248, 2**64 - 5
    ev.addr.family, ev.addr.port, ev.local.family, ev.local.port = 4, 0xFEDC, 6, 0x1234
    ffi.memmove(ev.addr.addr, bytes(range(1, 17)), 16)
    ffi.memmove(ev.local.addr, bytes(range(101, 117)), 16)
    ev.data_len, ev.seq = 0x0BADF00D, 2**64 - 3
    ffi.memmove(ev.sel.src_lo, b"\xff" * 16, 16)   # the selector between is not read
    assert fastpath._EVENT.unpack_from(ffi.buffer(ev)) == (
        ev.type, ev.dir, ev.hard, ev.reason, ev.known, ev.proven, ev.unmarked, ev.peer, ev.spi, ev.policy_id,
        ev.addr.family, bytes(ev.addr.addr), ev.addr.port, ev.local.family, bytes(ev.local.addr), ev.local.port,
        ev.data_len, ev.seq)  # fmt: skip
    v4 = ipaddress.ip_address("192.0.2.1")
    assert fastpath._endpoint(4, v4.packed + bytes(12), 500) == Endpoint(v4, 500)
    assert fastpath._endpoint(4, v4.packed + b"\x01" * 12, 500) == Endpoint(v4, 500)   # C never set the rest
    assert fastpath._endpoint(6, bytes(range(16)), 1) == Endpoint(ipaddress.IPv6Address(bytes(range(16))), 1)
    assert fastpath._endpoint(0, bytes(16), 0) is None and fastpath._endpoint(5, bytes(16), 0) is None


def test_event_queue_is_bounded_and_counts_what_it_refuses() -> None:
    """IKE from 1,100 senders (each of a /64 of its own: each sender's share, 32, is far from
    reached): half the queue less the established IKE SAs' reserve and the tagged IKE_AUTHs' (none
    here), then counted drops."""
    dp = Dataplane()
    senders = [Endpoint(ipaddress.ip_address(f"2001:db8:{i:x}::1"), 4500) for i in range(1100)]
    messages = [b"\0\0\0\0" + ike_message(i.to_bytes(2, "big")) for i in range(1100)]
    verdicts = [dp.inbound(m, s)[1] for m, s in zip(messages, senders, strict=True)]
    queued = verdicts.count(Drop.NONE)
    assert queued == 512 - 128 - 128
    assert verdicts == [Drop.NONE] * queued + [Drop.QUEUE_FULL] * (1100 - queued)
    assert dp.drops()["queue_full"] == 1100 - queued and total_drops(dp) == 1100 - queued
    evs = list(dp.events())
    assert [e.data for e in evs] == [m[4:] for m in messages[:queued]], "in order, none lost"
    # drained: room again
    assert dp.inbound(b"\0\0\0\0" + ike_message(b"again"), senders[-1]) == (b"", Drop.NONE)
    assert [e.data for e in dp.events()] == [ike_message(b"again")]


# ------------------------------------------------------------ outbound binding


def _out_spi(dp: Dataplane, key: bytes) -> int:
    esp, _, drop, _ = dp.outbound(PKT4)
    assert drop is Drop.NONE
    return esp_open(key, esp).spi


def test_outbound_rebinding_newest_then_fallback() -> None:
    key = new_key()
    dp = sender(key, 0x1001, reqid=5)
    assert _out_spi(dp, key) == 0x1001
    dp.add(spec(0x1002, Direction.OUT, key, reqid=5))
    assert _out_spi(dp, key) == 0x1002
    assert {p.out_spi for p in dp.policies()} == {0x1002}
    dp.add(spec(0x1003, Direction.OUT, key, reqid=6))  # another reqid: not bound here
    assert _out_spi(dp, key) == 0x1002
    dp.delete(0x1002, Direction.OUT, B_OUTER)
    assert _out_spi(dp, key) == 0x1001
    dp.delete(0x1001, Direction.OUT, B_OUTER)
    assert dp.outbound(PKT4)[2] is Drop.NO_SA
    # a policy added after its SAs binds the newest of them
    dp.add(spec(0x2001, Direction.OUT, key, reqid=8))
    dp.add(spec(0x2002, Direction.OUT, key, reqid=8))
    dp.spd_add(Policy(id=9, priority=1, action=Action.PROTECT, reqid=8, selector=SEL4))
    assert _out_spi(dp, key) == 0x2002


def test_policy_binds_by_its_own_reqid_among_sas_indexed_alike() -> None:
    """Outbound SAs are indexed by reqid (hashed into a fixed number of chains, so 7, 7 + 4096
    and 7 + 8192 share one): a policy binds the newest SA of exactly its reqid, falls back to
    none of the others when that one goes, and a FLUSH leaves nothing of the index behind."""
    key = new_key()
    dp = Dataplane()
    reqids = [7, 7 + 4096, 7 + 8192]
    for i, reqid in enumerate(reqids):
        dp.add(spec(0x3001 + i, Direction.OUT, key, reqid=reqid))
    dp.spd_add(Policy(id=1, priority=1, action=Action.PROTECT, reqid=reqids[1], selector=SEL4))
    assert _out_spi(dp, key) == 0x3002
    dp.add(spec(0x3010, Direction.OUT, key, reqid=reqids[1]))   # newer, same reqid: rebinds
    assert _out_spi(dp, key) == 0x3010
    dp.delete(0x3010, Direction.OUT, B_OUTER)
    assert _out_spi(dp, key) == 0x3002
    dp.delete(0x3002, Direction.OUT, B_OUTER)
    assert dp.outbound(PKT4)[2] is Drop.NO_SA          # never the SAs of 7 or 7 + 8192
    dp.flush()
    assert dp.outbound(PKT4)[2] is Drop.NO_SA
    dp.add(spec(0x3020, Direction.OUT, key, reqid=reqids[1]))
    assert _out_spi(dp, key) == 0x3020


def test_two_peers_choose_the_same_outbound_spi() -> None:
    """Peers choose outbound SPIs: two may pick the same one.  Each SA is (SPI, peer):
    both carry their own traffic to their own peer, and deleting one leaves the other."""
    spi = 0xC0FFEE01
    peers = [Endpoint(ipaddress.ip_address("198.51.100.1"), 4500), Endpoint(ipaddress.ip_address("198.51.100.2"), 4500)]
    nets = ["10.2.1.0/24", "10.2.2.0/24"]
    keys = [new_key(), new_key()]
    dp = Dataplane()
    for i in range(2):
        sel = Selector.from_networks(_net("10.1.0.0/16"), _net(nets[i]))
        dp.add(dataclasses.replace(spec(spi, Direction.OUT, keys[i], reqid=10 + i, selectors=(sel,)), remote=peers[i]))
        dp.spd_add(Policy(id=100 + i, priority=1, action=Action.PROTECT, reqid=10 + i, selector=sel))
    assert errno_of(lambda: dp.add(dataclasses.replace(spec(spi, Direction.OUT, keys[1], reqid=11),
                                                       remote=peers[1]))) is Errno.EEXIST
    assert errno_of(lambda: dp.get(spi, Direction.OUT)) is Errno.EINVAL   # which one? the SPI alone cannot say
    for i in range(2):
        esp, dst, drop, _ = dp.outbound(_to(f"10.2.{i + 1}.7"))
        assert drop is Drop.NONE and dst == peers[i]
        assert esp_open(keys[i], esp).spi == spi
        with pytest.raises(InvalidTag):
            esp_open(keys[1 - i], esp)
    assert {p.id: p.out_spi for p in dp.policies()} == {100: spi, 101: spi}
    dp.delete(spi, Direction.OUT, peers[1])
    assert errno_of(lambda: dp.delete(spi, Direction.OUT, peers[1])) is Errno.ENOENT
    esp, dst, drop, _ = dp.outbound(_to("10.2.1.8"))
    assert drop is Drop.NONE and dst == peers[0] and esp_open(keys[0], esp).seq_lo == 2
    assert dp.outbound(_to("10.2.2.8"))[2] is Drop.NO_SA
    assert dp.get(spi, Direction.OUT, peers[0]).counters["packets"] == 2
    assert [(s.spi, s.remote) for s in dp.sas()] == [(spi, peers[0])]


# --------------------------------------------------------------------- lifetimes


def _expires(dp: Dataplane) -> list[tuple[int, bool, int]]:
    return [(e.spi, e.hard, e.reason) for e in dp.events() if e.type is EventType.EXPIRE]


@pytest.mark.parametrize("kind", ["packets", "bytes"])
def test_outbound_lifetimes(kind: str) -> None:
    key = new_key()
    n = len(PKT4)
    soft, hard = (
        (Lifetime(packets=3), Lifetime(packets=5))
        if kind == "packets"
        else (Lifetime(bytes=3 * n), Lifetime(bytes=5 * n))
    )
    reason = ExpireReason.PACKETS if kind == "packets" else ExpireReason.BYTES
    dp = sender(key, 0x1001, soft=soft, hard=hard)
    verdicts = []
    events = []
    for _ in range(8):
        verdicts.append(dp.outbound(PKT4)[2])
        events.append(_expires(dp))
    assert verdicts == [Drop.NONE] * 5 + [Drop.LIFETIME] * 3
    assert events == [[], [], [(0x1001, False, reason)], [], [], [(0x1001, True, reason)], [], []]
    info = dp.get(0x1001, Direction.OUT, B_OUTER)
    assert info.state == "dead" and info.soft_fired and info.hard_fired
    # the counters show what went through, not the packet that hit the limit
    assert (info.counters["packets"], info.counters["bytes"]) == (5, 5 * n)
    assert dp.drops()["lifetime"] == 3


@pytest.mark.parametrize("kind", ["packets", "bytes"])
def test_inbound_lifetimes(kind: str) -> None:
    key = new_key()
    n = len(PKT6)
    soft, hard = (
        (Lifetime(packets=2), Lifetime(packets=4))
        if kind == "packets"
        else (Lifetime(bytes=2 * n), Lifetime(bytes=4 * n - 1))
    )
    reason = ExpireReason.PACKETS if kind == "packets" else ExpireReason.BYTES
    dp, spi = receiver(key, soft=soft, hard=hard)
    verdicts = []
    events = []
    for seq in range(1, 8):
        verdicts.append(dp.inbound(esp_seal(key, spi, seq, PKT6, 41))[1])
        events.append(_expires(dp))
    passed = 4 if kind == "packets" else 3
    assert verdicts == [Drop.NONE] * passed + [Drop.LIFETIME] * (7 - passed)
    want: list[list[tuple[int, bool, int]]] = [[] for _ in range(7)]
    want[1] = [(spi, False, reason)]
    want[passed] = [(spi, True, reason)]
    assert events == want
    info = dp.get(spi, Direction.IN)
    assert info.state == "dead"
    assert (info.counters["packets"], info.counters["bytes"]) == (passed, passed * n)
    assert dp.drops()["lifetime"] == 7 - passed


def test_soft_only_lifetime_fires_once_and_keeps_going() -> None:
    key = new_key()
    dp = sender(key, 0x1001, soft=Lifetime(packets=1))
    for _ in range(5):
        assert dp.outbound(PKT4)[2] is Drop.NONE
    assert _expires(dp) == [(0x1001, False, ExpireReason.PACKETS)]


def test_aes256_sa_through_add() -> None:
    key = new_key(Alg.AES256GCM16)
    dp = sender(key, 0x1001)
    assert dp.get(0x1001, Direction.OUT, B_OUTER).alg is Alg.AES256GCM16
    esp, peer, drop, _ = dp.outbound(PKT6)
    assert drop is Drop.NONE and peer == spec(1000, Direction.OUT, key).remote
    assert esp_open(key, esp).payload == PKT6
    assert peer != A_OUTER


# ------------------------------------------------------------ inbound selectors


def test_inbound_sa_without_selectors_admits_nothing() -> None:
    """No selector never means "any": every packet is a counted policy drop."""
    key = new_key()
    dp, spi = receiver(key, selectors=())
    before = dp.drops()["policy"]
    for seq, (pkt, nh) in enumerate(((PKT4, 4), (PKT6, 41)), 1):
        out, drop = dp.inbound(esp_seal(key, spi, seq, pkt, nh))
        assert (out, drop) == (b"", Drop.POLICY)
    assert dp.drops()["policy"] == before + 2


def test_inbound_selectors_admit_their_family_only() -> None:
    key = new_key()
    dp, spi = receiver(key, selectors=(SEL4,))
    assert dp.inbound(esp_seal(key, spi, 1, PKT4, 4)) == (PKT4, Drop.NONE)
    assert dp.inbound(esp_seal(key, spi, 2, PKT6, 41))[1] is Drop.POLICY


@pytest.mark.parametrize("alg", [Alg.AES128GCM16, Alg.AES256GCM16])
@pytest.mark.parametrize("direction", [Direction.IN, Direction.OUT])
def test_a_freed_sa_leaves_no_key_behind(alg: Alg, direction: Direction) -> None:
    """The wipe every freed SA goes through (OPENSSL_cleanse, which the compiler
    may not elide), run on an SA keyed inside a buffer we can read afterwards:
    the key was there, and afterwards not one byte of the SA is left."""
    key = new_key(alg)
    seen, after = sa_wipe_probe(spec(0x4242, direction, key))
    assert seen, "the SA held its key before the wipe"
    assert key not in after and key[:16] not in after
    assert after == bytes(len(after))


def test_the_spd_gives_its_slots_back_after_a_peak() -> None:
    """After a peak of clients left, v and the buckets stayed at the peak's size (review revspd):
    a compaction now shrinks them to at most four times what is live; the policies left still win
    their flows, and the SPD grows again."""
    dp = Dataplane()

    def add(i: int, action: Action = Action.BYPASS) -> None:
        sel = Selector.from_networks(_net("10.1.0.0/24"), _net(f"10.{2 + i // 65536}.{i // 256 % 256}.{i % 256}/32"))
        dp.spd_add(Policy(id=i + 1, priority=10, action=action, reqid=0, selector=sel))
    for i in range(5000):
        add(i, Action.DISCARD if i % 1000 == 7 else Action.BYPASS)
    peak = dp.gauges()["spd_slots"]
    assert peak >= 5000
    for i in range(5000):
        if i % 1000 != 7:
            dp.spd_delete(i + 1)
    left = dp.gauges()
    assert left["spd_entries"] == 5
    assert left["spd_slots"] <= 4 * max(left["spd_entries"], 16) < peak
    assert dp.outbound(_to("10.2.3.239"))[2] is Drop.DISCARD   # 1007
    assert dp.outbound(_to("10.2.3.240"))[2] is Drop.NO_POLICY
    assert sorted(p.id for p in dp.policies()) == [i + 1 for i in range(7, 5000, 1000)]
    for i in range(5000, 5100):
        add(i)
    assert dp.gauges()["spd_entries"] == 105 and dp.outbound(_to("10.2.19.200"))[2] is Drop.BYPASS
