"""The make-before-break barrier: datagrams to a peer wait (parked) while its Child SAs are being
installed, and all wait while the SPI pool is refilled (see spis)."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from tunsec.ike.child_refusal import swap
from tunsec.ike.endpoint import Datagram

Peer = tuple[str, int]   # address, port
# an IKE SA's datagrams to its peer: the address and port, and the IKE SPIs (the header's first 16
# bytes).  They are parked by the IKE SPIs alone: many clients behind one address and port (a NAT; one
# charon with many identities) each wait for their own installs only, and an IKE SA's datagrams to
# another port or address of its peer (a resent answer to a copy of the request from a NAT's new
# mapping, a MOBIKE peer's new path) wait too: the answer's refusal (install_failed.refused_answer)
# must find every copy of it still here (review revresp F1)
Flow = tuple[Peer, bytes]


def flow_of(datagram: Datagram) -> Flow:
    return datagram.addr, datagram.data[:16]


def _ike_sa(flow: Flow) -> bytes:
    """What parks a flow's datagrams: its IKE SPIs (see Flow)."""
    return flow[1]


class Barrier:
    """What the engine queued leaves through here (flush): per peer once its installs are answered,
    all once the barrier is down (what waited behind it runs first: ``resume``)."""

    def __init__(self, pending: Callable[[float], Iterable[Datagram]], send: Callable[[Datagram], None],
                 spawn: Callable[[Coroutine[Any, Any, None]], object], resume: Callable[[], None]) -> None:
        self._pending = pending    # the engine's queued datagrams (datagrams_to_send)
        self._send = send
        self._spawn = spawn
        self._resume = resume      # the barrier is down: what waited for it runs (then it flushes again)
        self._installing: collections.Counter[bytes] = collections.Counter()   # IKE SPIs -> installs
        self._parked: dict[bytes, list[Datagram]] = {}   # IKE SPIs -> what waits for its installs
        self._since: dict[bytes, float] = {}   # IKE SPIs -> when its first pending install started
        self._installs = 0
        self._installed = asyncio.Event()
        self._installed.set()
        self._flush_held = False
        self.install_waits = 0     # times outgoing datagrams waited behind the barrier (flush)
        # how long IKE SAs' datagrams were held for their installs (from the ChildSaUp to the last
        # answer, as the answer to the peer sees it: the pipe round trip and the control process's
        # turns until it reads it): it is on every client's critical path (bench/scale.py reports it)
        self.install_holds = 0
        self.install_hold_seconds = 0.0
        self.install_hold_max = 0.0

    @property
    def up(self) -> bool:
        return bool(self._installs)

    def flush(self) -> None:
        """Send what the engine has queued, but not before the peer's pending Child SA installs are
        acknowledged.

        Make-before-break (RFC 7296 §2.8): a rekey responder's CREATE_CHILD_SA response must not
        leave before its new inbound SA is in the worker, nor a rekey initiator's DELETE of the old
        Child SA before its new SAs are; both were queued in the step that reported the ChildSaUp,
        to the IKE SA's peer.  What that IKE SA sends to that peer (to any address and port: parked by
        the IKE SPIs, see Flow) waits in its own queue until its installs are answered, so no datagram of an IKE SA
        overtakes another; other IKE SAs' datagrams leave (installs take a few pipe round trips, and a
        burst of clients installs many, also from one address and port: one of them answered used to
        hold every other's answer back until none of their installs was in flight).
        While the SPI pool is refilled everything waits (see SpiPool.barrier)."""
        if self._installs:
            if not self._flush_held:
                self._flush_held = True
                self.install_waits += 1
                self._spawn(self._flush_after_installs())
            return
        self._send_datagrams()

    async def _flush_after_installs(self) -> None:
        try:
            await self._installed.wait()
        finally:
            self._flush_held = False
        self._resume()

    def install_started(self) -> None:
        """The barrier goes up for every peer (the SPI pool is empty)."""
        self._installs += 1
        self._installed.clear()

    def install_done(self, _task: Any = None) -> None:
        self._installs -= 1
        if not self._installs:
            self._installed.set()

    def peer_install_started(self, flow: Flow) -> None:
        """The datagrams queued with a ChildSaUp go to the IKE SA's peer (then), in that IKE SA
        (``flow``): they wait for the install (peer_install_done)."""
        key = _ike_sa(flow)
        self._installing[key] += 1
        self._parked.setdefault(key, [])
        self._since.setdefault(key, time.monotonic())

    def peer_install(self, flow: Flow) -> Callable[[], None]:
        """peer_install_started(flow), and what calls peer_install_done(flow) once, however often
        it is called (an install releases its datagrams when its answers are in, or when its task ends)."""
        self.peer_install_started(flow)
        done = False

        def release(*_args: Any) -> None:
            nonlocal done
            if not done:
                done = True
                self.peer_install_done(flow)
        return release

    def peer_install_done(self, flow: Flow) -> None:
        key = _ike_sa(flow)
        self._installing[key] -= 1
        if self._installing[key] <= 0:
            del self._installing[key]
            self._held_for(time.monotonic() - self._since.pop(key, time.monotonic()))
            for datagram in self._parked.pop(key, []):   # older than anything the engine still holds
                self._send(datagram)

    def copies(self, flow: Flow, datagrams: tuple[bytes, ...]) -> int:
        """How many copies of ``datagrams`` (an answer: its first) wait parked in ``flow``'s IKE SA (to
        any address and port of its peer), not sent yet."""
        parked = self._parked.get(_ike_sa(flow), ())
        return sum(d.data == datagrams[0] for d in parked) if datagrams else 0

    def replace(self, flow: Flow, old: tuple[bytes, ...], new: tuple[bytes, ...]) -> bool:
        """Put ``new`` in place of each parked copy of ``old`` in ``flow`` (an answer refused after all:
        install_failed.py); whether there was one."""
        parked = self._parked.get(_ike_sa(flow))
        return parked is not None and swap(parked, old, new, lambda d: d.data, lambda d, data: d._replace(data=data))

    def _held_for(self, seconds: float) -> None:
        self.install_holds += 1
        self.install_hold_seconds += seconds
        self.install_hold_max = max(self.install_hold_max, seconds)

    def _send_datagrams(self) -> None:
        for datagram in self._pending(time.monotonic()):
            parked = self._parked.get(_ike_sa(flow_of(datagram))) if self._parked else None
            if parked is None:
                self._send(datagram)
                continue
            if not parked:
                self.install_waits += 1
            parked.append(datagram)
