"""pipe.direct: a Child SA's UPDATE, ADD and SPDADDs encoded straight from the IKE service's values are
encode()'s bytes of the messages the values make (fast_selectors' Selectors, SaSpec, Policy), and
refused (None) exactly where those values refuse to be built; the IKE service installs a new Child SA
so, and a rekey responder's install (its ADD held back) as messages."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pipe_codec_data import U32, U64, endpoint_pairs, lifetime_pairs
from test_ikeservice_rekey import Pair

from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import (
    MAX_SELECTORS,
    MIN_SPI,
    Action,
    Add,
    Alg,
    Direction,
    Endpoint,
    Lifetime,
    MsgType,
    Policy,
    SaSpec,
    SpdAdd,
    Update,
    direct,
    encode,
)
from tunsec.policy.selector import SelectorError, Ts, fast_selectors, selector_pairs

ip = ip_address
SOME = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def sides(draw: st.DrawFn, family: int, ordered: bool = True) -> Ts:
    """One side of a selector pair: in order (what Selector takes), or anything of that family."""
    top = 2**32 - 1 if family == 4 else 2**128 - 1
    cls = IPv4Address if family == 4 else IPv6Address
    a, b = draw(st.integers(0, top)), draw(st.integers(0, top))
    p, q = draw(st.integers(0, 0xFFFF)), draw(st.integers(0, 0xFFFF))
    if ordered:
        a, b, p, q = min(a, b), max(a, b), min(p, q), max(p, q)
    proto = draw(st.sampled_from([0, 6, 17, 58]) if ordered else st.integers(-1, 300))
    return Ts(cls(a), cls(b), proto, p, q)


@st.composite
def selector_sets(draw: st.DrawFn, ordered: bool = True) -> tuple[tuple[Ts, ...], tuple[Ts, ...]]:
    """Local and remote selectors that make 1..MAX_SELECTORS pairs (_pairs' own limits pass)."""
    family = draw(st.sampled_from([4, 6]))
    local = tuple(draw(st.lists(sides(family, ordered), min_size=1, max_size=2)))
    remote = tuple(draw(st.lists(sides(family, ordered), min_size=1, max_size=4)))
    # a protocol on both sides must agree for a pair (else _pairs leaves it out): make them agree or any
    remote = tuple(Ts(r.start, r.end, 0, r.start_port, r.end_port) for r in remote)
    return local, remote


@given(sels=selector_sets(), alg=st.sampled_from(Alg), esn=st.booleans(), ends=endpoint_pairs(),
       lifetimes=lifetime_pairs(), spis=st.tuples(st.integers(MIN_SPI, U32), st.integers(MIN_SPI, U32)),
       window=st.sampled_from([0, 32, 64, 4096, 65536]), reqid=st.integers(1, U32), first_use=st.booleans(),
       req_id=st.integers(1, U32), pid=st.integers(0, U32), prio=st.integers(0, U32), data=st.data())
@SOME
def test_the_datagrams_are_encodes_of_the_messages(
        sels: tuple[tuple[Ts, ...], tuple[Ts, ...]], alg: Alg, esn: bool, ends: tuple[Endpoint, Endpoint],
        lifetimes: tuple[Lifetime, Lifetime], spis: tuple[int, int], window: int, reqid: int, first_use: bool,
        req_id: int, pid: int, prio: int, data: st.DataObject) -> None:
    local_ts, remote_ts = sels
    fast = fast_selectors(local_ts, remote_ts)
    wire = direct.selectors(selector_pairs(local_ts, remote_ts))
    assert wire is not None
    out_sels, in_sels = wire
    (local, remote), (soft, hard) = ends, lifetimes
    keys = [data.draw(st.binary(min_size=alg.key_len, max_size=alg.key_len)) for _ in "io"]
    limits = [(lt.bytes, lt.packets, lt.seconds) for lt in (soft, hard)]
    for msg_type, spi, d, key, win, sels_, wire_sels, fu in (
            (MsgType.UPDATE, spis[0], Direction.IN, keys[0], window, fast.inbound, in_sels, first_use),
            (MsgType.ADD, spis[1], Direction.OUT, keys[1], 0, fast.outbound, out_sels, False)):
        spec = SaSpec(spi=spi, direction=d, alg=alg, key=key, esn=esn, replay_window=win, reqid=reqid, local=local,
                      remote=remote, soft=soft, hard=hard, selectors=sels_, report_first_use=fu)
        body = direct.sa(spi, d, alg, key, esn, win, reqid, local, remote, limits[0], limits[1], wire_sels, fu)
        assert body is not None
        msg = Update(req_id, spec) if msg_type is MsgType.UPDATE else Add(req_id, spec)
        assert direct.request(msg_type, req_id, body) == encode(msg)
    for sel, sel_ext in zip(fast.outbound, out_sels, strict=True):
        body = direct.spdadd(pid, prio, Action.PROTECT, reqid, sel_ext)
        assert body is not None
        assert direct.request(MsgType.SPDADD, req_id, body) == encode(SpdAdd(req_id, Policy(pid, prio, Action.PROTECT,
                                                                                             reqid, sel)))


def _sa_refused(**fields: object) -> bool:
    try:
        SaSpec(**fields)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return True
    return False


L4, R4 = Endpoint(ip("192.0.2.1"), 4500), Endpoint(ip("198.51.100.1"), 4500)
R6 = Endpoint(ip("2001:db8::1"), 4500)
KEY = bytes(20)


@given(spi=st.integers(0, 2**33), alg=st.sampled_from(Alg), key_len=st.sampled_from([0, 19, 20, 36, 37]),
       esn=st.sampled_from([True, False, 1]), window=st.sampled_from([-1, 0, 1, 31, 32, 65536, 65537]),
       reqid=st.integers(-1, 2**33), remote=st.sampled_from([R4, R6]),
       soft=st.tuples(st.integers(-1, 5), st.integers(0, 5), st.sampled_from([0, 3, U64, U64 + 1])),
       hard=st.tuples(st.integers(0, 5), st.integers(-1, 5), st.sampled_from([0, 3, U64])),
       selectors=st.integers(0, MAX_SELECTORS + 1), direction=st.sampled_from(Direction), first_use=st.booleans())
@SOME
def test_what_saspec_refuses_is_refused(spi: int, alg: Alg, key_len: int, esn: bool, window: int, reqid: int,
                                        remote: Endpoint, soft: tuple[int, int, int], hard: tuple[int, int, int],
                                        selectors: int, direction: Direction, first_use: bool) -> None:
    local_ts, remote_ts = (Ts(ip("10.0.0.0"), ip("10.0.0.255")),), (Ts(ip("10.1.0.1"), ip("10.1.0.1")),)
    sel = fast_selectors(local_ts, remote_ts).outbound[0]
    sel_ext = direct.selectors(selector_pairs(local_ts, remote_ts))[0][0]  # type: ignore[index]
    key = bytes(key_len)
    # a Lifetime cannot hold what is out of range: then the tuple, which SaSpec refuses as well
    soft_lt = Lifetime(*soft) if min(soft) >= 0 and max(soft) <= U64 else soft
    hard_lt = Lifetime(*hard) if min(hard) >= 0 else hard
    refused = _sa_refused(spi=spi, direction=direction, alg=alg, key=key, esn=esn, replay_window=window, reqid=reqid,
                          local=L4, remote=remote, soft=soft_lt, hard=hard_lt, selectors=(sel,) * selectors,
                          report_first_use=first_use)
    body = direct.sa(spi, direction, alg, key, esn, window, reqid, L4, remote, soft, hard, [sel_ext] * selectors,
                     first_use)
    assert (body is None) == refused


@given(sels=selector_sets(ordered=False))
@SOME
def test_what_selector_refuses_is_refused(sels: tuple[tuple[Ts, ...], tuple[Ts, ...]]) -> None:
    local_ts, remote_ts = sels
    try:
        pairs = selector_pairs(local_ts, remote_ts)
    except SelectorError:
        return   # both ways refuse these before any Selector (the same function)
    try:
        fast_selectors(local_ts, remote_ts)
        refused = False
    except SelectorError:
        refused = True
    assert (direct.selectors(pairs) is None) == refused


@pytest.mark.parametrize(("pid", "prio", "action", "reqid"), [
    (0, 0, Action.PROTECT, 1), (U32, U32, Action.PROTECT, U32), (1, 1, Action.BYPASS, 0),   # taken
    (-1, 0, Action.PROTECT, 1), (U32 + 1, 0, Action.PROTECT, 1), (0, U32 + 1, Action.PROTECT, 1),
    (0, 0, Action.PROTECT, 0), (0, 0, Action.PROTECT, U32 + 1), (0, 0, 1, 1),
])
def test_what_policy_refuses_is_refused(pid: int, prio: int, action: Action, reqid: int) -> None:
    local_ts, remote_ts = (Ts(ip("10.0.0.0"), ip("10.0.0.255")),), (Ts(ip("10.1.0.1"), ip("10.1.0.1")),)
    sel = fast_selectors(local_ts, remote_ts).outbound[0]
    try:
        Policy(pid, prio, action, reqid, sel)
        refused = False
    except (TypeError, ValueError):
        refused = True
    sel_ext = direct.selectors(selector_pairs(local_ts, remote_ts))[0][0]  # type: ignore[index]
    assert (direct.spdadd(pid, prio, action, reqid, sel_ext) is None) == refused


def test_the_service_installs_a_new_child_sa_as_datagrams_and_a_rekey_responders_as_messages() -> None:
    async def body() -> None:
        pair = Pair()
        await pair.start()
        sent: dict[str, list[pipe.Message | bytes]] = {"a": [], "b": []}
        for side, worker in pair.workers.items():
            def spying(build, then=None, send=worker.send, seen=sent[side]):  # type: ignore[no-untyped-def]
                def built(req_id: int) -> pipe.Message | bytes:
                    out: pipe.Message | bytes = build(req_id)
                    seen.append(out)
                    return out
                return send(built, then)
            worker.send = spying  # type: ignore[method-assign]
        pair.svc["a"].initiate("tun", "net")
        await pair.settle()
        for side in "ab":
            installs = [m for m in sent[side] if isinstance(m, bytes)]
            # UPDATE, ADD, SPDADD of the one Child SA, each as encode makes it of what the worker read
            assert [type(pipe.decode(m)) for m in installs] == [Update, Add, SpdAdd]
            assert all(encode(pipe.decode(m)) == m for m in installs)
            assert not [m for m in sent[side] if isinstance(m, Update | Add | SpdAdd)]
            sent[side].clear()
        # a rekeys: its new Child SA as datagrams (the lineage's policy is in place: no SPDADD); b answers,
        # its ADD held back for a later request (an SaSpec on standby): b's install as messages
        pair.rekey("a")
        await pair.settle()
        assert pair.child("b").standby is None and pair.child("b").out_installed   # a's DELETE promoted it
        assert [type(pipe.decode(m)) for m in sent["a"] if isinstance(m, bytes)] == [Update, Add]
        assert [type(m) for m in sent["b"] if isinstance(m, Update | Add | SpdAdd)] == [Update, Add]
        assert not [m for m in sent["b"] if isinstance(m, bytes)]
        assert pair.failures == []

    asyncio.run(body())
