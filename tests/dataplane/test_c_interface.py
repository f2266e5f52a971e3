"""The Python side of the fast path follows csrc/tunsec_dp.h, and the production
module carries the fast path only (the benchmark entry points are built apart).

Drop reasons and per-SA counters are read from the header at import
(fastpath.Drop, fastpath.SA_COUNTERS), so what can go wrong there is a name the
pipe, `tunsec status` or the metrics cannot carry (tests/dataplane/
test_worker_pipe.py takes each per-SA counter from a real worker's DUMP to
status and metrics).  This test fails for the enums Python code names members of (fastpath.EventType,
whose values come from the header but whose member list is written out for mypy)
and for pipe.ExpireReason, which the control process imports without the C module.
"""

from __future__ import annotations

import re

from tunsec.dataplane._fastpath import ffi, lib

from tunsec.dataplane import pipe
from tunsec.dataplane.fastpath import SA_COUNTERS, Dataplane, Drop, EventType
from tunsec.metrics import SA_COUNTER_HELP
from tunsec.status import SA_FIELDS, render


def test_drop_enum_is_the_header_enum() -> None:
    header = {name: value for name, value in ffi.typeof("enum ts_drop").relements.items()}
    assert {f"TS_DROP_{d.name}": d.value for d in Drop} == {k: v for k, v in header.items() if k != "TS_DROP__COUNT"}
    assert len(Drop) == lib.TS_DROP__COUNT


def test_event_types_are_the_header_enum() -> None:
    header = ffi.typeof("enum ts_event_type").relements
    assert {f"TS_EV_{t.name}": t.value for t in EventType} == header, \
        "an event in enum ts_event_type needs a member of fastpath.EventType and a case in Worker._event_message"


# C names of expire reasons the pipe spells out in full
_EXPIRE_RENAMED = {"SEQ": "SEQ_OVERFLOW"}


def test_expire_reasons_of_the_fast_path_are_pipe_expire_reasons() -> None:
    """Every reason the C path reports is the pipe's reason of that number and name; the pipe's
    others (TIME, LARVAL_TIMEOUT) are the worker's own, and no C reason may take their numbers."""
    members = ffi.typeof("enum ts_expire_reason").relements.items()
    header = {name.removeprefix("TS_EXP_"): value for name, value in members}
    assert {_EXPIRE_RENAMED.get(n, n): v for n, v in header.items()} == \
        {r.name: r.value for r in pipe.ExpireReason if r.value in header.values()}
    assert {pipe.ExpireReason.TIME, pipe.ExpireReason.LARVAL_TIMEOUT}.isdisjoint(header.values())


def test_the_soft_sequence_margin_is_the_pipe_s() -> None:
    """The control process (worker_claims, manual) reads the margin without the C module."""
    assert lib.TS_SEQ_SOFT_MARGIN == pipe.SEQ_SOFT_MARGIN == 2**26


def test_every_drop_reason_crosses_the_pipe_and_reaches_status() -> None:
    drops = Dataplane().drops()
    assert set(drops) == {d.name.lower() for d in Drop if d != lib.TS_DROP_NONE}
    counted = tuple((name, i + 1) for i, name in enumerate(drops))
    replies = [pipe.decode(b) for b in pipe.encode_dump_replies(7, (), (), counted)]
    joined = pipe.join_dump_replies([r for r in replies if isinstance(r, pipe.Reply)])
    assert joined.drops == counted
    doc = {"tun": {"name": "tun0", "mtu": 1400, "offloads": []}, "worker": {"pid": 1, "restarts": 0},
           "uptime_seconds": 0, "udp_offloads": [], "tunnels": [], "policies": [], "drops": dict(joined.drops)}
    text = render(doc)
    for name, count in counted:
        assert f"{name} {count}" in text


def test_per_sa_counters_are_the_header_enum() -> None:
    header = ffi.typeof("enum ts_sa_counter").relements
    assert {f"TS_CTR_{name.upper()}": i for i, name in enumerate(SA_COUNTERS)} == \
        {k: v for k, v in header.items() if k != "TS_CTR__COUNT"}
    assert dict(ffi.typeof("ts_sa_info").fields)["counters"].type.length == lib.TS_CTR__COUNT
    # a name DUMP can carry, that no fixed key of an SA's status shadows
    assert all(re.fullmatch(r"[a-z][a-z0-9_]{0,31}", n) for n in SA_COUNTERS)
    assert SA_FIELDS.isdisjoint(SA_COUNTERS), "a per-SA counter may not take the name of an SA's status key"
    assert set(SA_COUNTER_HELP) <= set(SA_COUNTERS), "metrics.SA_COUNTER_HELP names a counter the header lacks"


def test_benchmark_entry_points_are_not_in_the_production_module() -> None:
    from tunsec.bench import _cbench

    assert [n for n in dir(lib) if n.startswith("ts_bench")] == []
    assert "ts_bench_outbound" in dir(_cbench.lib)


def test_the_fast_path_passes_up_ike_no_longer_than_the_engine_takes() -> None:
    """One limit in two languages: a longer IKE message would only be dropped by the engine."""
    from tunsec.ike.constants import MAX_IKE_MESSAGE

    assert lib.TS_IKE_MAX_MESSAGE == MAX_IKE_MESSAGE
    assert Drop.IKE_TOO_BIG.name.lower() == "ike_too_big"
