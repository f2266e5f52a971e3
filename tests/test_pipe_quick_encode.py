"""encode's one-struct ways for a client's set-up's messages (and the worker's IKE events and answers):
exactly the general encode's bytes, or its error."""

import struct
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pipe_codec_data import (
    A1,
    A2,
    LOCAL4,
    LOCAL6,
    REALISTIC,
    REMOTE4,
    REMOTE6,
    SEL4,
    SEL6_TCP,
    SETUP_REQUESTS,
    U16,
    U32,
    U64,
    ike_args,
    in_sa,
    out_sa,
    policies,
    replies,
    req_ids,
    sa_specs,
    spi_ranges,
)

from tunsec.dataplane.pipe import (
    MAX_IKE_DATA,
    MAX_SELECTORS,
    Action,
    Add,
    Alg,
    Endpoint,
    Errno,
    Ext,
    GetSpi,
    Ike,
    Lifetime,
    Message,
    MsgType,
    Policy,
    Reply,
    Selector,
    SendIke,
    SpdAdd,
    Update,
    decode,
    encode,
    encode_ok,
    encode_spi,
)


def test_folded_extension_structs_pack_what_ext_of_the_body_packs() -> None:
    """The request encoders' one-struct extensions are byte for byte _ext(type, body)."""
    from tunsec.dataplane.pipe import encoding as enc

    class _V4(IPv4Address):
        pass

    class _V6(IPv6Address):
        pass

    for addr in (A1, ip_address("255.255.255.255"), ip_address("::"), ip_address("ffff::1"), _V4(7), _V6(2**127 + 5)):
        # what the 16-byte field ("16s") holds: the address, an IPv4 one zero-padded after
        assert struct.pack("16s", enc._pack_addr(addr)) == addr.packed.ljust(16, b"\0")
    for ep in (LOCAL4, REMOTE6):
        assert enc._endpoint_ext(Ext.ADDR_LOCAL, ep) == enc._ext(Ext.ADDR_LOCAL, enc._pack_endpoint(ep))
    for sel in (SEL4, SEL6_TCP, Selector(A1, A2, A1, A1, 17, (53, 53), (0, U16))):
        assert enc._selector_ext(sel) == enc._ext(Ext.SELECTOR, enc._pack_selector(sel))
    for lt in (Lifetime(), Lifetime(U64, 6, 7)):
        assert enc._lifetime_ext(Ext.LIFETIME_HARD, lt) == enc._ext(Ext.LIFETIME_HARD, enc._pack_lifetime(lt))
    sa = out_sa(seq_start=5, replay_window=64, esn=True)
    body = struct.pack("!IBBBBIIQ", sa.spi, sa.direction, sa.alg, 1, 0, 64, sa.reqid, 5)
    assert enc._sa_exts(sa)[0] == enc._ext(Ext.SA, body)


# encode packs the messages of a client's set-up (and the worker's IKE events and answers) header
# and all in one struct each: exactly the general way's bytes, or its error.
_WHOLE_STRATEGIES = st.one_of(
    spi_ranges(),
    st.builds(Update, req_ids, sa_specs()),
    st.builds(Add, req_ids, sa_specs()),
    st.builds(SpdAdd, req_ids, policies()),
    st.tuples(req_ids, ike_args()).map(lambda t: SendIke(t[0], *t[1])),
    ike_args().map(lambda a: Ike(data=a[0], remote=a[1], local=a[2])),
    replies(),
)


def _encoded_both_ways(msg: Message) -> tuple[object, object]:
    from tunsec.dataplane.pipe import encoding as enc

    def outcome(fn: Callable[[Message], bytes]) -> object:
        try:
            return fn(msg)
        except ValueError as err:
            return repr(err)

    assert type(msg) in enc._WHOLE
    return outcome(enc.encode), outcome(enc._encode_general)


@given(_WHOLE_STRATEGIES)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_whole_datagram_encode_is_the_general_encode(msg: Message) -> None:
    whole, general = _encoded_both_ways(msg)
    assert whole == general


class _SubV4(IPv4Address):
    pass


class _SubV6(IPv6Address):
    pass


_SUB_SEL = Selector(_SubV4("10.0.0.1"), _SubV4("10.0.0.2"), _SubV4("10.0.0.1"), _SubV4("10.0.0.9"))
_WHOLE_EXAMPLES = [
    # addresses of subclasses (packed through int(), not their slot)
    Ike(data=b"abc", remote=Endpoint(_SubV6("2001:db8::1"), 500), local=Endpoint(_SubV6("2001:db8::2"), 4500)),
    Update(2, out_sa(local=Endpoint(_SubV4("192.0.2.1"), 500), remote=Endpoint(_SubV4("192.0.2.2"), 4500),
                     selectors=(_SUB_SEL,))),
    SpdAdd(3, Policy(1, 100, Action.PROTECT, 1, _SUB_SEL)),
    *[m for m in REALISTIC if isinstance(m, (GetSpi, Update, Add, SpdAdd, SendIke, Ike, Reply))],
    *SETUP_REQUESTS,
    *[Ike(data=b"\x01" * n, remote=REMOTE4) for n in range(1, 9)],
    SendIke(1, b"\xab" * MAX_IKE_DATA, REMOTE6, LOCAL6),   # the largest
    Update(3, in_sa(seq_limit=1000, seq_notify=900)), Add(4, out_sa(selectors=())),
    Reply(5, MsgType.DUMP, Errno.OK), Reply(5, MsgType.DUMP, Errno.ENOENT), Reply(6, MsgType.UPDATE, Errno.EEXIST),
]


@pytest.mark.parametrize("msg", _WHOLE_EXAMPLES, ids=lambda m: f"{type(m).__name__}-{len(encode(m))}")
def test_whole_datagram_encode_of_examples(msg: Message) -> None:
    whole, general = _encoded_both_ways(msg)
    assert whole == general and decode(whole) == msg   # type: ignore[arg-type]


def test_whole_datagram_sa_structs_are_few() -> None:
    """One struct per (key length, selector count, reservation or not): bounded by the algorithms."""
    from tunsec.dataplane.pipe import encoding as enc

    for alg in Alg:
        for n in range(MAX_SELECTORS + 1):
            for limit in (0, 1000):
                sa = out_sa(alg=alg, key=bytes(alg.key_len), selectors=(SEL4,) * n, seq_limit=limit)
                assert encode(Update(1, sa)) == enc._encode_general(Update(1, sa))
    assert len(enc._SA_WHOLE) <= len({alg.key_len for alg in Alg}) * (MAX_SELECTORS + 1) * 2


def _outcome_of(build: Callable[[], object]) -> object:
    try:
        return build()
    except (TypeError, ValueError) as err:
        return type(err), str(err)


def test_encode_spi_is_the_getspi_answer() -> None:
    """The worker's shortcut for a GETSPI's success encodes what Reply would, and refuses what
    Reply refuses (with the same error)."""
    for req_id in (1, 7, U32):
        for spi in (256, 0xC0000001, U32):
            reply = Reply(req_id, MsgType.GETSPI, Errno.OK, spi=spi)
            assert encode_spi(req_id, spi) == encode(reply) and decode(encode_spi(req_id, spi)) == reply
    for req_id, spi in ((0, 256), (U32 + 1, 256), (True, 256), (1.0, 256), (1, 255), (1, U32 + 1), (1, True),
                        (1, None), (1, 256.0)):
        shortcut = _outcome_of(lambda: encode_spi(req_id, spi))   # type: ignore[arg-type]  # noqa: B023
        checked = _outcome_of(lambda: Reply(req_id, MsgType.GETSPI, Errno.OK, spi=spi))  # type: ignore[arg-type]  # noqa: B023
        assert isinstance(shortcut, tuple) and shortcut == checked
    for req_id in (True, 1.0, "1"):
        shortcut = _outcome_of(lambda: encode_ok(req_id, MsgType.UPDATE))   # type: ignore[arg-type]  # noqa: B023
        checked = _outcome_of(lambda: Reply(req_id, MsgType.UPDATE, Errno.OK))   # type: ignore[arg-type]  # noqa: B023
        assert isinstance(shortcut, tuple) and shortcut == checked
