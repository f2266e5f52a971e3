"""DAE replays and clock steps (review revdae F1, F2, F4): every request here is authentic (signed with
the DAE secret by the DAC); the attacker only captures it on the wire and sends the same bytes again.
The DaeServer is the real one; only its wall clock and monotonic clock are the test's."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Hashable, Sequence
from typing import Any

from pyrad import packet as rp

from tunsec.ike.secret import Secret
from tunsec.radius.dae import DaeServer, SessionQuery
from tunsec.radius.messages import DICTIONARY
from tunsec.radius.settings import DaeSettings

SECRET = b"dae-secret-7"
DAC = ("192.0.2.5", 40000)
EAVESDROPPER = ("192.0.2.5", 40001)   # the DAC's address (clients admits it), another port
T = 1_800_000_000.0
SETTINGS = DaeSettings(ipaddress.ip_address("192.0.2.1"), Secret(SECRET),
                       clients=(ipaddress.ip_network("192.0.2.0/28"),))


class Clocks:
    """The gateway's wall clock (settable, steps included) and its monotonic clock."""

    def __init__(self, wall: float, mono: float = 1000.0) -> None:
        self.wall, self.mono = wall, mono

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


class Gateway:
    """One process's listener: alice has a session (handle 1), every start."""

    def __init__(self, clocks: Clocks, settings: DaeSettings = SETTINGS) -> None:
        self.closed: list[Hashable] = []
        self.server = DaeServer(settings, "gw-1", self.find, self.disconnect,
                                clock=lambda: clocks.wall, monotonic=lambda: clocks.mono)

    @staticmethod
    def find(query: SessionQuery) -> list[Hashable]:
        return [1] if "alice" in query.users else []

    def disconnect(self, handles: Sequence[Hashable]) -> None:
        self.closed += handles


def disconnect_request(stamp: int, user: str = "alice", ident: int = 7) -> bytes:
    pkt: Any = rp.CoAPacket(code=rp.DisconnectRequest, id=ident, secret=SECRET, dict=DICTIONARY)
    pkt.AddAttribute("User-Name", user)
    pkt.AddAttribute("Event-Timestamp", stamp)
    raw: bytes = pkt.RequestPacket()
    return raw


def acked(raw: bytes | None) -> bool:
    return raw is not None and rp.CoAPacket(packet=raw, secret=SECRET, dict=DICTIONARY).code == rp.DisconnectACK


def test_a_wall_clock_stepped_forward_after_the_listener_started_does_not_reopen_a_replay() -> None:
    """Review revdae F1: the listener takes its start second from the wall clock once (DaeServer.__init__, in
    prepare()). A gateway that boots (or restarts tunsec) before NTP has set its clock - no RTC, a
    VM restored, the unit has no After=time-sync.target - starts with a clock far behind; NTP then
    steps it forward. The restart guard compares against that wrong start: a Disconnect-Request
    captured in the minutes before the restart passes once more, and closes the user's new session."""
    clocks = Clocks(T)
    old = Gateway(clocks)
    raw = disconnect_request(int(T) + 100)
    clocks.advance(100)
    assert acked(old.server.receive(raw, DAC)) and old.closed == [1]   # the DAC's request, captured

    clocks.advance(10)   # the restart, 10 s later: the clock reads a day behind until NTP steps it
    true_start = clocks.wall
    clocks.wall -= 86400
    new = Gateway(clocks)
    clocks.advance(15)
    clocks.wall = true_start + 15   # NTP's step
    assert new.server.receive(raw, EAVESDROPPER) is None, "a request captured before the restart was taken again"
    assert new.closed == []


def test_a_wall_clock_stepped_back_while_running_does_not_reopen_a_replay() -> None:
    """Review revdae F2 (before h/dae too): an answer is kept window + MAX_AHEAD seconds of the monotonic clock,
    but the Event-Timestamp is judged on the wall clock. After the wall clock steps back by X > MAX_AHEAD
    (a clock that ran fast corrected, an operator's date, a leap smear gone wrong), the cache forgets
    the request X - MAX_AHEAD seconds before its stamp goes stale: a replay in between is acted on."""
    clocks = Clocks(T)
    gw = Gateway(clocks)
    clocks.advance(100)
    raw = disconnect_request(int(clocks.wall))
    assert acked(gw.server.receive(raw, DAC)) and gw.closed == [1]
    clocks.wall -= 60   # the step back
    clocks.advance(SETTINGS.window + 11)   # the cache has forgotten it; the stamp is 251 s old by our clock
    assert gw.server.receive(raw, EAVESDROPPER) is None, "a captured request was acted on twice"
    assert gw.closed == [1]


def test_a_reload_that_widens_the_window_does_not_reopen_replays_the_old_cache_forgot() -> None:
    """Review revdae F4: the old listener (window 60 s) forgot an answer after 70 s; a reload that sets window = 1h
    re-creates the listener (adopt: same secret, the cache and start handed down). The request the
    old one forgot now has a stamp the new window admits, and no cache entry: it passes again."""
    clocks = Clocks(T)
    narrow = dataclasses.replace(SETTINGS, window=60.0)
    old = Gateway(clocks, narrow)
    clocks.advance(100)
    raw = disconnect_request(int(clocks.wall))
    assert acked(old.server.receive(raw, DAC)) and old.closed == [1]
    clocks.advance(75)
    assert old.server.receive(raw, EAVESDROPPER) is None   # still refused (stale): and the cache expired it
    new = Gateway(clocks, dataclasses.replace(SETTINGS, window=3600.0))
    new.server.adopt(old.server)
    clocks.advance(5)
    assert new.server.receive(raw, EAVESDROPPER) is None, "a request the old listener answered was taken again"
    assert new.closed == []
