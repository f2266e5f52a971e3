"""The control socket's limits as pure logic: who may hold how many connections (Slots), and status
answers shared by the clients that ask at once (Shared).  The running daemon under a flood of
clients: tests/e2e/test_control_socket_abuse.py."""

from __future__ import annotations

import asyncio

from tunsec import ctlsocket
from tunsec.ctlsocket import Answer, Shared, Slots, encode


def test_each_uid_holds_at_most_per_uid_and_all_but_root_at_most_total() -> None:
    slots = Slots(total=6, per_uid=2, root_reserve=2)
    assert [slots.take(1000) for _ in range(3)] == [None, None, "busy: uid 1000 has 2 control connections open; "
                                                                 "try again"]
    assert slots.take(1001) is None and slots.take(1001) is None
    assert slots.take(1002) is None and slots.take(1002) is None
    assert slots.take(1003) == "busy: 6 control connections open; try again"
    # root: no per-uid cap, and its reserve beyond the others' total
    assert [slots.take(0) for _ in range(3)] == [None, None, "busy: 8 control connections open; try again"]
    slots.give(0)
    slots.give(0)
    slots.give(1000)
    assert slots.take(1003) is None        # a freed slot is anyone's
    for uid in (1000, 1001, 1001, 1002, 1002, 1003):
        slots.give(uid)
    assert not slots.held


def test_the_defaults_leave_root_a_reserve() -> None:
    slots = Slots()
    for uid in range(ctlsocket.TOTAL):
        assert slots.take(5000 + uid) is None
    assert slots.take(4999) is not None
    assert all(slots.take(0) is None for _ in range(ctlsocket.ROOT_RESERVE))


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_callers_at_once_share_a_run_and_a_later_one_gets_a_fresh_run() -> None:
    async def body() -> None:
        runs: list[asyncio.Event] = []

        async def run() -> int:
            runs.append(gate := asyncio.Event())
            await gate.wait()
            return len(runs)

        shared = Shared(run)
        first = [asyncio.create_task(shared.get()) for _ in range(5)]
        await settle()
        assert len(runs) == 1
        late = [asyncio.create_task(shared.get()) for _ in range(5)]   # the first run began before they asked
        late[0].cancel()   # one of them leaves (its deadline): the others still get theirs
        await settle()
        assert len(runs) == 1
        runs[0].set()
        assert await asyncio.gather(*first) == [1] * 5
        await settle()
        assert len(runs) == 2
        runs[1].set()
        assert await asyncio.gather(*late[1:]) == [2] * 4
        assert late[0].cancelled()
    asyncio.run(body())


def test_a_failed_run_reaches_every_caller_and_the_next_call_runs_again() -> None:
    async def body() -> None:
        calls = []

        async def run() -> str:
            calls.append(1)
            await asyncio.sleep(0)
            if len(calls) == 1:
                raise OSError("gone")
            return "ok"

        shared = Shared(run)
        got = await asyncio.gather(shared.get(), shared.get(), return_exceptions=True)
        assert [type(g) for g in got] == [OSError, OSError]
        assert await shared.get() == "ok" and len(calls) == 2
    asyncio.run(body())


def test_a_shared_answer_is_encoded_once() -> None:
    answer = Answer({"ok": True, "status": {"sas": []}})
    assert encode(answer) is encode(answer) and encode(answer) == b'{"ok": true, "status": {"sas": []}}\n'
    assert encode({"ok": False, "error": "x"}) == b'{"ok": false, "error": "x"}\n'
