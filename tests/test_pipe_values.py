"""The pipe's value types and messages: what they refuse to build, and their quick test of the
common case, which admits only what their one-by-one checks admit."""

import dataclasses
from collections.abc import Callable
from ipaddress import ip_address, ip_network

import pytest
from pipe_codec_data import (
    A1,
    A2,
    LOCAL4,
    LOCAL6,
    REMOTE4,
    REMOTE6,
    SECRET128,
    SECRET256,
    SEL4,
    SEL6_TCP,
    U16,
    U32,
    U64,
    in_sa,
    out_sa,
    sa_info,
)

from tunsec.dataplane.pipe import (
    Action,
    Add,
    Alg,
    Delete,
    Direction,
    Dump,
    Endpoint,
    Errno,
    Expire,
    ExpireReason,
    FirstUse,
    Flush,
    GetSpi,
    Ike,
    Lifetime,
    Migrate,
    MsgType,
    Policy,
    PolicyInfo,
    Reply,
    SaInfo,
    Selector,
    SendIke,
    SpdAdd,
    Update,
    decode,
    encode,
)

# ----------------------------------------------------------------- constructors


NET8, ANY4 = ip_network("10.0.0.0/8"), ip_network("0.0.0.0/0")
TIME = ExpireReason.TIME

INVALID: list[tuple[str, Callable[[], object]]] = [
    ("port 65536", lambda: Endpoint(ip_address("10.0.0.1"), 65536)),
    ("port bool", lambda: Endpoint(ip_address("10.0.0.1"), True)),
    ("addr str", lambda: Endpoint("10.0.0.1", 500)),  # type: ignore[arg-type]
    ("selector families", lambda: Selector(A1, A2, ip_address("::1"), ip_address("::2"))),
    ("selector reversed", lambda: Selector(A2, A1, A1, A2)),
    ("networks of two families", lambda: Selector.from_networks(NET8, ip_network("::/0"))),
    ("selector proto", lambda: Selector.from_networks(NET8, ANY4, 256)),
    ("sport reversed", lambda: Selector.from_networks(NET8, ANY4, 6, (2, 1))),
    ("dport list", lambda: Selector.from_networks(NET8, ANY4, 6, dport=[1, 2])),  # type: ignore[arg-type]
    ("dport triple", lambda: Selector(A1, A2, A1, A2, 6, dport=(1, 2, 3))),  # type: ignore[arg-type]
    ("lifetime negative", lambda: Lifetime(bytes=-1)),
    ("lifetime 2**64", lambda: Lifetime(seconds=2**64)),
    ("soft above hard", lambda: out_sa(soft=Lifetime(packets=11), hard=Lifetime(packets=10))),
    ("spi 255", lambda: out_sa(spi=255)),
    ("spi 2**32", lambda: out_sa(spi=2**32)),
    ("direction int", lambda: out_sa(direction=1)),
    ("nine selectors", lambda: out_sa(selectors=(SEL4,) * 9)),
    ("endpoint families", lambda: out_sa(remote=REMOTE6)),
    ("reqid", lambda: out_sa(reqid=-1)),
    ("policy protect reqid 0", lambda: Policy(1, 1, Action.PROTECT, 0, SEL4)),
    ("policy action int", lambda: Policy(1, 1, 2, 1, SEL4)),  # type: ignore[arg-type]
    ("request id 0", lambda: Flush(0)),
    ("request id 2**32", lambda: Dump(2**32)),
    ("getspi reversed", lambda: GetSpi(1, 0x2000, 0x1000)),
    ("getspi low", lambda: GetSpi(1, 0, 0x1000)),
    ("event id", lambda: Expire(req_id=1, spi=300, direction=Direction.IN, hard=True, reason=TIME)),
    ("expire hard int", lambda: Expire(spi=300, direction=Direction.IN, hard=1, reason=TIME)),  # type: ignore[arg-type]
    ("expire out without peer", lambda: Expire(spi=300, direction=Direction.OUT, hard=True, reason=TIME)),
    ("expire in with peer", lambda: Expire(spi=300, direction=Direction.IN, hard=True, reason=TIME, remote=REMOTE4)),
    ("delete out without peer", lambda: Delete(1, 300, Direction.OUT)),
    ("migrate out without old peer", lambda: Migrate(1, 300, Direction.OUT, REMOTE4)),
    ("migrate in with peer", lambda: Migrate(1, 300, Direction.IN, REMOTE4, REMOTE4)),
    ("migrate across families", lambda: Migrate(1, 300, Direction.OUT, REMOTE6, REMOTE4)),
    ("migrate new_remote str", lambda: Migrate(1, 300, Direction.IN, "192.0.2.9")),  # type: ignore[arg-type]
    ("migrate new_local across families", lambda: Migrate(1, 300, Direction.IN, REMOTE4, new_local=LOCAL6)),
    ("migrate new_local str", lambda: Migrate(1, 300, Direction.IN, REMOTE4, new_local="192.0.2.9")),  # type: ignore[arg-type]
    ("delete in with peer", lambda: Delete(1, 300, Direction.IN, REMOTE4)),
    ("ike empty", lambda: Ike(data=b"", remote=REMOTE4)),
    ("ike families", lambda: Ike(data=b"x", remote=REMOTE4, local=LOCAL6)),
    ("send_ike bytearray", lambda: SendIke(1, bytearray(b"x"), REMOTE4)),  # type: ignore[arg-type]
    ("reply to event", lambda: Reply(1, MsgType.ACQUIRE, Errno.OK)),
    ("getspi reply without spi", lambda: Reply(1, MsgType.GETSPI, Errno.OK)),
    ("add reply with spi", lambda: Reply(1, MsgType.ADD, Errno.OK, spi=300)),
    ("more on flush", lambda: Reply(1, MsgType.FLUSH, Errno.OK, more=True)),
    ("current on an add reply", lambda: Reply(1, MsgType.ADD, Errno.OK, current=Lifetime(1, 2, 3))),
    ("current on a failed delete", lambda: Reply(1, MsgType.DELETE, Errno.ENOENT, current=Lifetime(1, 2, 3))),
    ("current not a lifetime", lambda: Reply(1, MsgType.DELETE, Errno.OK, current=(1, 2, 3))),  # type: ignore[arg-type]
    ("sas on failed dump", lambda: Reply(1, MsgType.DUMP, Errno.EIO, sas=(sa_info(1),))),
    ("drop name", lambda: Reply(1, MsgType.DUMP, Errno.OK, drops=(("Auth", 1),))),
    ("drop count", lambda: Reply(1, MsgType.DUMP, Errno.OK, drops=(("auth", -1),))),
    ("drops list", lambda: Reply(1, MsgType.DUMP, Errno.OK, drops=[("auth", 1)])),  # type: ignore[arg-type]
    ("errno int", lambda: Reply(1, MsgType.FLUSH, 0)),  # type: ignore[arg-type]
    ("sa_info state", lambda: SaInfo(**(vars(sa_info(1)) | {"state": "alive"}))),
    ("mature without alg", lambda: SaInfo(**(vars(sa_info(1)) | {"alg": None}))),
    ("sa_info window", lambda: SaInfo(**(vars(sa_info(1)) | {"replay_window": 31}))),
    ("sa_info counter name", lambda: SaInfo(**(vars(sa_info(1)) | {"counters": {"Packets": 1}}))),
    ("sa_info counter name with a comma", lambda: SaInfo(**(vars(sa_info(1)) | {"counters": {"a,b": 1}}))),
    ("sa_info counter negative", lambda: SaInfo(**(vars(sa_info(1)) | {"counters": {"packets": -1}}))),
    ("sa_info counters list", lambda: SaInfo(**(vars(sa_info(1)) | {"counters": [("packets", 1)]}))),
    ("sa_info 65 counters", lambda: SaInfo(**(vars(sa_info(1)) | {"counters": {f"c{i}": 0 for i in range(65)}}))),
    ("dump sas with other counters", lambda: Reply(1, MsgType.DUMP, Errno.OK, sas=(
        sa_info(1), SaInfo(**(vars(sa_info(2)) | {"counters": {"packets": 1}}))))),
    ("policy_info out_spi", lambda: PolicyInfo(1, 1, Action.PROTECT, 1, 255, 0, SEL4)),
    ("first use on an outbound SA", lambda: out_sa(report_first_use=True)),
    ("first use int", lambda: in_sa(report_first_use=1)),
    ("first_use spi 255", lambda: FirstUse(spi=255)),
    ("first_use with an id", lambda: FirstUse(req_id=1, spi=300)),
]


@pytest.mark.parametrize(("name", "build"), INVALID, ids=[i[0] for i in INVALID])
def test_invalid_values_cannot_be_built(name: str, build: Callable[[], object]) -> None:
    with pytest.raises((ValueError, TypeError)):
        build()


def test_value_helpers() -> None:
    assert SEL4.family == 4 and SEL6_TCP.family == 6
    assert (SEL4.src_lo, SEL4.src_hi) == (ip_address("10.1.0.0"), ip_address("10.1.255.255"))
    assert SEL6_TCP.dport == (443, 443) and SEL6_TCP.sport == (0, 65535)
    assert LOCAL6.family == 6
    assert Alg.AES128GCM16.key_len == 20 and Alg.AES256GCM16.key_len == 36
    larval = SaInfo(**(vars(sa_info(1)) | {"state": "larval", "alg": None, "local": None, "remote": None}))
    # the codec carries whichever counters the worker names, none included
    for counters in ({"fragments": 3, "packets": 1}, {}):
        sa = SaInfo(**(vars(sa_info(1)) | {"counters": counters}))
        reply = Reply(1, MsgType.DUMP, Errno.OK, sas=(sa,))
        assert decode(encode(reply)) == reply
    assert decode(encode(Reply(1, MsgType.DUMP, Errno.OK, sas=(larval,)))) == Reply(
        1, MsgType.DUMP, Errno.OK, sas=(larval,)
    )


# ------------------------------------------------------ the quick test of the hot constructors
# Endpoint, Selector, Lifetime, SaSpec, Policy and the messages of a client's set-up accept the
# common case with one expression (_plain) before their one-by-one checks.  It must admit nothing
# those checks refuse: every field of every base value below, set to every odd value below in
# turn, builds (or fails with the same exception) with the quick test as with the checks alone.


class _Port(int):
    """An int subclass: what an exact type test and isinstance tell apart."""

ODD_VALUES: list[object] = [
    -1, 0, 1, 2, 20, 31, 32, 36, 255, 256, 257, U16, U16 + 1, 65536, 65537, U32 - 1, U32, U32 + 1, U64, U64 + 1,
    -(2**70), True, False, None, "10.0.0.1", "", b"", b"x", SECRET128, SECRET256, bytearray(SECRET128),
    _Port(500), 1.0, (), (0, U16), (1, 0), (0, U16 + 1), (-1, 5), (True, 5), (5, 5), (0, 1, 2), [0, U16],
    ip_address("10.0.0.3"), ip_address("10.0.0.0"), ip_address("255.255.255.255"), ip_address("2001:db8::1"),
    ip_address("::"), LOCAL4, REMOTE4, LOCAL6, REMOTE6, Lifetime(), Lifetime(bytes=5), Lifetime(packets=1, seconds=9),
    SEL4, SEL6_TCP, (SEL4,), (SEL4, SEL6_TCP), (SEL4,) * 8, (SEL4,) * 9, (SEL4, "x"), [SEL4],
    Direction.IN, Direction.OUT, Alg.AES128GCM16, Alg.AES256GCM16, Action.PROTECT, Action.BYPASS, Action.DISCARD,
    MsgType.GETSPI, MsgType.DUMP, MsgType.UPDATE, MsgType.ACQUIRE, Errno.OK, Errno.ENOENT,
    (("auth", 1),), out_sa(), Policy(1, 1, Action.PROTECT, 1, SEL4),
]
BASE_VALUES: list[object] = [
    LOCAL4, REMOTE6, SEL4, SEL6_TCP, Selector(A1, A2, A1, A1, 17, (53, 53), (0, U16)), Lifetime(),
    Lifetime(5, 6, 7), out_sa(), in_sa(esn=False), in_sa(esn=True, seq_start=U32 + 5, report_first_use=True),
    out_sa(esn=False, seq_limit=900, seq_notify=800, seq_start=10, soft=Lifetime(seconds=5), hard=Lifetime(seconds=9)),
    out_sa(local=LOCAL6, remote=REMOTE6, selectors=(SEL6_TCP, SEL6_TCP)), Policy(3, 9, Action.PROTECT, 4, SEL4),
    Policy(3, 9, Action.BYPASS, 0, SEL6_TCP), GetSpi(1, 256, U32), GetSpi(9, 0x1000, 0x2000, 30),
    Update(2, in_sa()), Add(3, out_sa()), SpdAdd(4, Policy(3, 9, Action.PROTECT, 4, SEL4)), SendIke(5, b"x", REMOTE4),
    SendIke(6, b"y" * 50, REMOTE6, LOCAL6), Ike(data=b"z", remote=REMOTE4),
    Ike(data=b"z", remote=REMOTE4, local=LOCAL4), Reply(1, MsgType.GETSPI, Errno.OK, spi=300),
    Reply(2, MsgType.GETSPI, Errno.ENOENT), Reply(3, MsgType.UPDATE, Errno.OK),
    Reply(4, MsgType.SEND_IKE, Errno.EIO), Reply(5, MsgType.DUMP, Errno.OK, more=True, drops=(("auth", 1),)),
]


def _outcome(build: Callable[[], object]) -> str:
    try:
        build()
    except (TypeError, ValueError) as exc:
        return type(exc).__name__
    return "ok"


def _both_ways(cls: type, fields: dict[str, object]) -> tuple[str, str]:
    quick = _outcome(lambda: cls(**fields))
    plain = vars(cls)["_plain"]
    cls._plain = lambda self: False  # type: ignore[attr-defined]
    try:
        return quick, _outcome(lambda: cls(**fields))
    finally:
        cls._plain = plain  # type: ignore[attr-defined]


@pytest.mark.parametrize("base", BASE_VALUES, ids=lambda v: type(v).__name__)
def test_the_quick_test_admits_only_what_the_checks_admit(base: object) -> None:
    cls = type(base)
    assert "_plain" in vars(cls)
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}  # type: ignore[arg-type]
    assert _both_ways(cls, fields) == ("ok", "ok")
    differ, refused = [], 0
    for name in fields:
        for odd in ODD_VALUES:
            quick, checked = _both_ways(cls, fields | {name: odd})
            refused += checked != "ok"
            if quick != checked:
                differ.append((name, odd, quick, checked))
    assert differ == []
    assert refused > len(fields) * len(ODD_VALUES) // 2   # the odd values do break things


def test_quick_init_keeps_the_dataclass_contract() -> None:
    """quick_init's __init__ takes what the generated one took and the values stay frozen."""
    assert Reply(3, MsgType.UPDATE, Errno.OK) == Reply(req_id=3, type=MsgType.UPDATE, errno=Errno.OK, spi=None)
    assert hash(LOCAL4) == hash(Endpoint(ip_address("192.0.2.10"), 4500))
    with pytest.raises(dataclasses.FrozenInstanceError):
        LOCAL4.port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        Ike(b"x", REMOTE4)  # type: ignore[misc]   # events stay keyword-only
    with pytest.raises(TypeError):
        Flush()  # type: ignore[call-arg]
    assert dataclasses.replace(out_sa(), spi=300).spi == 300
    with pytest.raises(ValueError):
        dataclasses.replace(out_sa(), spi=255)   # replace builds through the checks too
