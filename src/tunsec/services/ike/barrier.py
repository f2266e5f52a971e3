"""The make-before-break barrier: datagrams to a peer wait (parked) while its Child SAs are being
installed, and all wait while the SPI pool is refilled (see spis)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tunsec.services.ike.service import IkeService


def _flush_datagrams(self: IkeService) -> None:
    """Send what the engine has queued, but not before the peer's pending Child SA installs are
    acknowledged.

    Make-before-break (RFC 7296 §2.8): a rekey responder's CREATE_CHILD_SA response must not
    leave before its new inbound SA is in the worker, nor a rekey initiator's DELETE of the old
    Child SA before its new SAs are; both were queued in the step that reported the ChildSaUp,
    to the IKE SA's peer.  What goes to that peer (address and port) waits in its own queue until
    its installs are answered, so no datagram of an IKE SA overtakes another; other peers'
    datagrams leave (installs take a few pipe round trips, and a burst of clients installs many).
    While the SPI pool is refilled everything waits (see _spi_barrier)."""
    if self._installs:
        if not self._flush_held:
            self._flush_held = True
            self.install_waits += 1
            self._spawn(self._flush_after_installs())
        return
    self._send_datagrams()


async def _flush_after_installs(self: IkeService) -> None:
    try:
        await self._installed.wait()
    finally:
        self._flush_held = False
    self._run_held()


def _install_started(self: IkeService) -> None:
    self._installs += 1
    self._installed.clear()


def _install_done(self: IkeService, _task: Any = None) -> None:
    self._installs -= 1
    if not self._installs:
        self._installed.set()


def _peer_install_done(self: IkeService, peer: tuple[str, int]) -> None:
    self._installing[peer] -= 1
    if self._installing[peer] <= 0:
        del self._installing[peer]
        for datagram in self._parked.pop(peer, []):   # older than anything the engine still holds
            self.sockets.send(datagram)


def _send_datagrams(self: IkeService) -> None:
    for datagram in self.endpoint.datagrams_to_send(time.monotonic()):
        parked = self._parked.get(datagram.addr)
        if parked is None:
            self.sockets.send(datagram)
            continue
        if not parked:
            self.install_waits += 1
        parked.append(datagram)
