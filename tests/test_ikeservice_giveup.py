"""GiveUp: requests sent together (an SPI batch, a Child SA's install) are cancelled when they are
still unanswered the timeout after the turn after their send; the groups of one turn share one timer,
and a group that ended is left alone."""

from __future__ import annotations

import asyncio
import dataclasses

from tunsec.dataplane import pipe
from tunsec.dataplane.client import Sent
from tunsec.services.ike import installs
from tunsec.services.ike.giveup import GiveUp


@dataclasses.dataclass(eq=False)
class _Group:
    sent: list[Sent]


def _group(n: int) -> _Group:
    loop = asyncio.get_running_loop()
    futs: list[asyncio.Future[list[pipe.Reply]]] = [loop.create_future() for _ in range(n)]
    return _Group([("GetSpi", f) for f in futs])


def test_unanswered_requests_are_cancelled_after_the_timeout_ended_groups_are_not() -> None:
    async def body() -> None:
        timeouts = [0.02]
        give_up = GiveUp(lambda: timeouts[0])
        answered, waiting, ended = _group(2), _group(2), _group(1)
        turns = [give_up.watch(g) for g in (answered, waiting, ended)]
        assert turns[0] is turns[1] is turns[2]      # one turn: one timer for all
        turn = turns[0]
        answered.sent[0][1].set_result([])
        answered.sent[1][1].set_result([])
        turn.end(answered)
        turn.end(ended)                               # ended with its request unanswered (its owner's choice)
        timeouts[0] = 0.01                            # read when the timer is armed: the next turn
        await asyncio.sleep(0)
        assert turn.timer is not None and not any(f.done() for _, f in waiting.sent)
        later = _group(1)
        assert give_up.watch(later) is not turn       # a later turn: a timer of its own
        await asyncio.sleep(0.05)
        assert [f.cancelled() for _, f in waiting.sent] == [True, True]
        assert not ended.sent[0][1].done()            # left alone
        assert later.sent[0][1].cancelled()
        assert turn.timer is None
    asyncio.run(body())


def test_a_turn_whose_groups_all_ended_stops_its_timer() -> None:
    async def body() -> None:
        give_up = GiveUp(lambda: 0.01)
        group = _group(1)
        turn = give_up.watch(group)
        await asyncio.sleep(0)
        timer = turn.timer
        assert timer is not None
        turn.end(group)
        assert turn.timer is None and timer.cancelled()
        await asyncio.sleep(0.03)
        assert not group.sent[0][1].done()
        # all ended before the next turn: no timer is armed at all
        early = _group(1)
        turn = give_up.watch(early)
        turn.end(early)
        await asyncio.sleep(0)
        assert turn.timer is None
    asyncio.run(body())


def _reply(errno: pipe.Errno) -> list[pipe.Reply]:
    return [pipe.Reply(req_id=1, type=pipe.MsgType.UPDATE, errno=errno)]


def test_an_install_is_all_ok_only_when_every_request_it_sent_was_answered_ok() -> None:
    """_install_ended books an install without looking at its futures when _AllOk saw every answer OK:
    not when one is unanswered, refused, or was sent without being expected."""
    released: list[int] = []
    ok = installs._AllOk(lambda: released.append(1))
    answers = [ok.expect() for _ in range(3)]
    answers[0](_reply(pipe.Errno.OK))
    answers[1](_reply(pipe.Errno.OK))
    assert not ok.all_ok(3) and not released        # one unanswered
    answers[2](_reply(pipe.Errno.OK))
    assert ok.all_ok(3) and released == [1]
    assert not ok.all_ok(4)                         # a fourth request it was not asked to expect
    refused = installs._AllOk(lambda: released.append(2))
    first, second = refused.expect(), refused.expect()
    first(_reply(pipe.Errno.EEXIST))
    second(_reply(pipe.Errno.OK))
    assert not refused.all_ok(2) and released == [1]
