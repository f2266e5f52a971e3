"""Giving up on worker requests sent together without a task (an SPI batch, a Child SA's install):
what is still unanswered REQUEST_TIMEOUT after the turn after it was sent is cancelled, which ends
its group as failed (its owner's done callbacks run as for any other end).

The timeout counts from the turn after the send, as the wait of a task that awaited the answers
did: the rest of the sending turn (a burst's IKE_AUTHs, a second or more under valgrind) is not
the worker's delay.  The groups sent in one turn share one timer (a burst sends an SPI batch and an
install per client, many in a turn: a timer each, and a callback each to arm it, were ~10k
instructions per group); a group that ends leaves its turn, and the last one to leave stops the
timer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol

from tunsec.dataplane.client import Sent


class Group(Protocol):
    """Requests sent together: given up on together."""

    @property
    def sent(self) -> Sequence[Sent]: ...


class Turn:
    """The groups sent in one event-loop turn, and their timer once it is armed (the next turn)."""

    __slots__ = ("groups", "timer")

    def __init__(self) -> None:
        self.groups: set[Group] = set()
        self.timer: asyncio.TimerHandle | None = None

    def end(self, group: Group) -> None:
        """``group`` ended (answered, failed, cancelled): nothing of it is given up on any more."""
        groups = self.groups
        groups.discard(group)
        if not groups and self.timer is not None:
            self.timer.cancel()
            self.timer = None


class GiveUp:
    """Watches groups of requests (watch) and cancels what of them is unanswered after the timeout."""

    def __init__(self, timeout: Callable[[], float]) -> None:
        self._timeout = timeout   # read when a turn's timer is armed (tests shorten it)
        self._turn: Turn | None = None   # this turn's groups, until the next turn arms their timer

    def watch(self, group: Group) -> Turn:
        """Give up on ``group``'s unanswered requests after the timeout; its owner calls the returned
        Turn's end(group) when the group ends."""
        turn = self._turn
        if turn is None:
            turn = self._turn = Turn()
            asyncio.get_running_loop().call_soon(self._arm, turn)
        turn.groups.add(group)
        return turn

    def _arm(self, turn: Turn) -> None:
        if self._turn is turn:
            self._turn = None
        if turn.groups:   # else all ended in the turn they were sent (or the one between)
            turn.timer = asyncio.get_running_loop().call_later(self._timeout(), self._expire, turn)

    @staticmethod
    def _expire(turn: Turn) -> None:
        turn.timer = None
        for group in list(turn.groups):   # each cancel ends its group (a callback later): it leaves then
            for _, fut in group.sent:
                if not fut.done():
                    fut.cancel()
