"""The IKE sockets: one per family, bound address and UDP port (port 4500 goes through the worker).

On a custom port, IKE from a peer port other than 500 carries the non-ESP marker both ways, as
strongSwan's sender and receiver have it (``constants.has_marker``); on port 4500 the worker marks
it.  An IKE_SA_INIT response goes back unmarked where its request came so (``ike/unmarked.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import Any

from tunsec import pktinfo
from tunsec.conf.connections import Connection, unserved_sources
from tunsec.dataplane import pipe
from tunsec.dataplane.client import REQUEST_TIMEOUT, WorkerClient, WorkerError
from tunsec.dataplane.pipe import Endpoint, Errno
from tunsec.ike.constants import (
    IKE_HEADER_LEN,
    IKE_PORT,
    IKE_VERSION,
    NATT_PORT,
    NON_ESP_MARKER,
    has_marker,
    is_ike_sa_init,
)
from tunsec.ike.endpoint import Datagram
from tunsec.loglimit import LogLimiter, suffix
from tunsec.policy.selector import parse_ip
from tunsec.services.base import StartupError, bind_udp
from tunsec.services.ike.exclude_gate import ExcludeGate

log = logging.getLogger("tunsec.ike")

IkeSocketKey = tuple[int, str, int]   # family, bound address, UDP port
# SEND_IKEs waiting for the worker's answer: beyond this many the oldest is given up (_give_up_natt).
# A healthy worker answers within milliseconds, so only a hung or confused one gets near it; a burst
# of a few thousand clients stays below.  Each costs ~0.5 KiB while it waits.
NATT_SENDS_MAX = 8192


def _ports(connections: Iterable[Connection]) -> set[int]:
    return {c.local_port for c in connections} or {IKE_PORT}


class IkeSockets:
    """The IKE sockets this service reads and sends on, by (family, bound address, port): one per
    local_port in use (open, close_unused); port 4500 is the worker's (send goes through it)."""

    def __init__(self, connections: Iterable[Connection], local_addrs: dict[int, str],
                 worker: Callable[[], WorkerClient], spawn: Callable[[Coroutine[Any, Any, None]], object]) -> None:
        self.by_key: dict[IkeSocketKey, socket.socket] = {}
        self.ports = _ports(connections)   # what open binds, per family
        self.draining: set[int] = set()    # ports only IKE SAs still use, closed when they are gone (close_unused)
        self.local_addrs = local_addrs     # family -> our outer address
        self.worker = worker
        self._spawn = spawn                # SEND_IKE round trips, awaited at shutdown
        # SEND_IKEs in flight -> the time their answer is given up on (REQUEST_TIMEOUT, as answered's):
        # oldest first, as they were sent
        self.natt_sends: dict[asyncio.Future[list[pipe.Reply]], float] = {}
        self.natt_unanswered = 0   # SEND_IKEs given up on unanswered (status: ike_sends_unanswered)
        # IKE events from the worker naming a local port not its 4500: answered from 4500 (natt_local.py)
        self.natt_other_port = 0
        self.clock = time.monotonic
        self._natt_timer: asyncio.TimerHandle | None = None   # the next deadline's sweep (one for all)
        # IKE that could not be sent: SEND_IKEs that failed (a worker that goes fails all those in flight
        # at once, a full pipe every one after it), answers for a port we have no socket of (a line
        # each, per datagram a peer sends, without this)
        self._send_log = LogLimiter()
        self.esp_on_ike_port = 0   # ESP in UDP dropped on a custom IKE port (unmark)
        self._esp_log = LogLimiter()
        self.gate: ExcludeGate | None = None   # IKE to an address the TUN's routes capture waits for its exclude route

    def open(self, connections: Iterable[Connection]) -> None:
        """UDP 500 (or the configured ports) per family, before the event loop starts."""
        connections = list(connections)
        self.ports = _ports(connections)
        keys = [(fam, addr, port) for fam, addr in self.local_addrs.items() for port in sorted(self.ports)]
        # each initiator's IKE_SA_INIT leaves from its local_addrs and local_port (socket)
        unserved = unserved_sources(connections, keys)
        if unserved:
            raise StartupError("IKE: " + "; ".join(unserved))
        for key in keys:
            if key not in self.by_key:
                # a 4 MiB receive buffer, as the ESP sockets have: a burst of IKE_SA_INITs (a thousand
                # road warriors after an outage) overflowed the default ~208 KiB, and each datagram the
                # kernel dropped (UDP RcvbufErrors) cost its client a retransmission, 4 s later.
                # bind_udp asks with SO_RCVBUFFORCE first: that needs CAP_NET_ADMIN (in the initial user
                # namespace; root in a rootless container lacks it) and ignores net.core.rmem_max; this
                # runs in prepare(), before the daemon drops privileges, and the size stays after the
                # drop.  Without the capability it falls back to SO_RCVBUF, which the kernel caps at
                # net.core.rmem_max (default 208 KiB: raise that sysctl there).  Linux doubles either
                # (bookkeeping), so getsockopt reads back 8 MiB.
                self.by_key[key] = bind_udp(*key, purpose="IKE", big_buffers=True, mark=True)
                pktinfo.enable(self.by_key[key])   # which of our addresses a peer talked to (recv)

    def close(self) -> None:
        for key in list(self.by_key):
            self._close_socket(key)
        if self._natt_timer is not None:
            self._natt_timer.cancel()
            self._natt_timer = None

    def _close_socket(self, key: IkeSocketKey) -> None:
        s = self.by_key.pop(key)
        with contextlib.suppress(Exception):
            asyncio.get_event_loop().remove_reader(s.fileno())
        s.close()

    def close_unused(self, connections: Iterable[Connection], in_use: Iterable[int] = ()) -> None:
        """After a reload, and as IKE SAs go: the ports neither a connection nor an IKE SA uses any more
        are closed (a new port needs a restart, see check_reload, so none is opened here).  ``in_use``:
        the ports of the IKE SAs still there; a removed connection's, its DELETE under way (retransmitted,
        answered there), keeps its port open until it is gone (``draining``; review revreload F4)."""
        connections = list(connections)
        configured = _ports(connections)
        want = configured | (set(in_use) & self.ports)
        for key in [k for k in self.by_key if k[2] not in want]:
            self._close_socket(key)
        self.ports = want & self.ports
        self.draining = self.ports - configured

    def read(self, on_readable: Callable[[socket.socket, IkeSocketKey], None]) -> None:
        """Each socket calls ``on_readable`` when datagrams are in (see recv)."""
        loop = asyncio.get_running_loop()
        for key, s in self.by_key.items():
            loop.add_reader(s.fileno(), on_readable, s, key)

    def send(self, datagram: Datagram) -> None:
        data, addr, local_port, source, unmarked = datagram
        ip = parse_ip(addr[0])
        oif = 0   # the interface it leaves by: an unauthenticated address a TUN route captures
        if self.gate is not None:
            verdict = self.gate.check(ip, datagram)
            if verdict is None:
                return   # held for its exclude route, or dropped (exclude_gate.py)
            oif = verdict
        if local_port == NATT_PORT:
            # the worker's socket, by the uplink's interface as on port 500 (SEND_IKE's OIF): an EAP
            # client's IKE_AUTH rounds before its SA is up (review revfull3 F1)
            # counted by the gate as the worker answers (_natt_answered, _natt_failed); marked by the
            # worker, but an IKE_SA_INIT answer to a request that came unmarked (ike/unmarked.py)
            self._send_natt(data, Endpoint(ip, addr[1]), source, oif, unmarked)
            return
        s = self.socket(ip.version, local_port)
        if s is None:   # limited: otherwise a line per datagram the engine answers from that port
            if (held := self._send_log.admit()) is not None:
                log.warning("no IPv%d IKE socket on port %d to send to %s%s", ip.version, local_port, addr[0],
                            suffix(held))
            return
        # a custom port at both ends: the peer may take ESP there too, unless it sent its
        # IKE_SA_INIT request to us unmarked and this is the answer (see unmark)
        if has_marker(local_port, addr[1]) and not unmarked:
            data = NON_ESP_MARKER + data
        # on a wildcard socket from the address the peer talked to (a bound one has only its own)
        wildcard = False
        for k, v in self.by_key.items():   # (a loop, not any(genexpr): no generator per datagram)
            if v is s and k[1] in pktinfo.WILDCARDS:
                wildcard = True
                break
        try:   # not contextlib.suppress: an object and two method calls per datagram
            pktinfo.sendto(s, data, addr, source if wildcard else None, oif)
        except OSError as err:
            if oif and self.gate is not None:
                self.gate.sent(err.errno or 0)   # by the uplink, refused: counted (review revfull4 F1)
            return
        if oif and self.gate is not None:
            self.gate.sent(None)

    def socket(self, family: int, port: int) -> socket.socket | None:
        """The socket bound to ``port``: where a request came in, or an initiator's local_port
        (open made sure each has one)."""
        for k, s in self.by_key.items():   # (a loop: an unfinished generator is closed with a GeneratorExit)
            if k[0] == family and k[2] == port:
                return s
        return None

    def unmark(self, data: bytes, addr: tuple[str, int], port: int) -> tuple[bytes | None, bool]:
        """A datagram on an IKE socket: where one end is port 500, IKE as it came.  On a custom IKE
        port from a port other than 500: as strongSwan's receiver, IKE
        with the non-ESP marker (stripped), a NAT keepalive (dropped) or ESP in UDP, which only the
        worker's port 4500 carries here: dropped, counted (status: ike_drops.esp_on_ike_port) and said.
        Unlike strongSwan's, an unmarked datagram that is an IKE message is taken as IKE, and answered
        unmarked: a client that sent from port 500 through a NAT that changed its port (it floats to
        4500 after IKE_SA_INIT) marks nothing and would not understand a marked answer.  The IKE and
        whether it came unmarked (only an IKE_SA_INIT request's answer goes back so: that client floats
        to 4500 after it, ike/unmarked.py says why no more), or None."""
        if not has_marker(port, addr[1]):
            return data, False
        if data[:4] == NON_ESP_MARKER and len(data) > 4:
            return data[4:], False
        if data == b"\xff":
            return None, False
        if _is_ike(data):
            return data, True
        self.esp_on_ike_port += 1
        held = self._esp_log.admit()
        if held is not None:
            log.warning("ESP in UDP from %s port %d arrived on IKE port %d and is dropped: tunsec carries ESP "
                        "only on port %d. A peer whose own IKE port is not 500 keeps IKE, and ESP, on the port it "
                        "started on (RFC 7296 2.23, as strongSwan floats); give that peer local_port 500 or point "
                        "its remote_port at %d%s", addr[0], addr[1], port, NATT_PORT, NATT_PORT, suffix(held))
        return None, False

    def _send_natt(self, data: bytes, remote: Endpoint, source: str | None = None, oif: int = 0,
                   unmarked: bool = False) -> None:
        """SEND_IKE without a task per datagram (see WorkerClient.request_soon), from ``source`` if it
        is an address of the peer's family (ADDR_LOCAL: the worker's sockets may be on the wildcard),
        without the non-ESP marker if ``unmarked``."""
        local = None
        # the family as the class attribute _version: .version is a property, a Python call each
        if source is not None and (ip := parse_ip(source))._version == remote.addr._version:  # type: ignore[union-attr]
            local = Endpoint(ip, NATT_PORT)
        # the answer is seen by request_soon's then and failed, in the turn it comes (no done
        # callback per datagram: one is scheduled and run a turn later, ~6k instructions)
        try:
            sent = self.worker().request_soon(lambda r: pipe.SendIke(r, data, remote, local, oif, unmarked),
                                              lambda replies: self._natt_answered(remote, sent, replies, oif),
                                              lambda err: self._natt_failed(remote, sent, err, oif))
        except WorkerError as err:
            self._send_failed(remote, str(err), oif)
            return
        now = self.clock()
        self._give_up_natt(now, NATT_SENDS_MAX - 1)
        self.natt_sends[sent] = now + REQUEST_TIMEOUT   # shutdown waits for them as for tasks
        if self._natt_timer is None:
            self._natt_timer = asyncio.get_running_loop().call_later(REQUEST_TIMEOUT, self._natt_sweep)

    def _give_up_natt(self, now: float, keep: int) -> None:
        """Give up the SEND_IKEs whose answer is overdue, and the oldest beyond ``keep``: a worker that
        hangs or never answers would otherwise have them (here and in the client's pending requests)
        pile up with every datagram.  Cancelling forgets the request in the client (request_soon), which
        counts a late answer; here each is counted (status: ike_sends_unanswered).  The
        datagram itself may still go out: only waiting for its answer ends."""
        sends = self.natt_sends
        while sends:
            oldest, deadline = next(iter(sends.items()))
            if deadline > now and len(sends) <= keep:
                return
            del sends[oldest]
            oldest.cancel()
            self.natt_unanswered += 1

    def _natt_sweep(self) -> None:
        """The one timer for overdue SEND_IKEs (none per datagram): sweep, and come back for the oldest,
        no sooner than a second (sends sweep too: a stream of them to a hung worker, each due a
        millisecond after the last, would otherwise have it fire every millisecond)."""
        self._natt_timer = None
        self._give_up_natt(self.clock(), NATT_SENDS_MAX)
        if self.natt_sends:
            delay = max(1.0, next(iter(self.natt_sends.values())) - self.clock())
            self._natt_timer = asyncio.get_running_loop().call_later(delay, self._natt_sweep)

    # (a SEND_IKE given up, _give_up_natt, is counted there and gets neither: cancelled)
    def _natt_answered(self, remote: Endpoint, sent: asyncio.Future[list[pipe.Reply]],
                       replies: list[pipe.Reply], oif: int = 0) -> None:
        self.natt_sends.pop(sent, None)
        if (bad := next((r.errno for r in replies if r.errno is not Errno.OK), None)) is not None:
            self._send_failed(remote, bad.name, oif)
        elif oif and self.gate is not None:
            self.gate.sent(None)

    def _natt_failed(self, remote: Endpoint, sent: asyncio.Future[list[pipe.Reply]], err: WorkerError,
                     oif: int = 0) -> None:
        self.natt_sends.pop(sent, None)
        self._send_failed(remote, str(err), oif)

    def _send_failed(self, remote: Endpoint, why: str, oif: int = 0) -> None:
        if oif and self.gate is not None:
            self.gate.sent(0)   # the worker's errno says less than the kernel's: the paths listed again
        if (held := self._send_log.admit()) is not None:
            log.warning("sending IKE to %s failed: %s%s", remote.addr, why, suffix(held))


# datagrams read from an IKE socket per event-loop turn (the loop comes back while it is readable),
# answered together at the end of the turn. Few, because each may cost a DH: with 64 the worker's
# pipe (IKE_AUTHs via port 4500, GETSPI and install answers) waited unread for a whole batch, and
# the gateway's RSS after a burst was higher (bench/scale.py --clients 100, 4
# alternating runs: 18.5-21.3 KiB per client with 64, 15.0-17.4 with 8). Sending after each
# datagram instead of each turn cost ~25% more CPU per client (5 runs: median 4.4 vs 3.9 ms).
RECV_BATCH = 8


def recv(s: socket.socket, key: IkeSocketKey) -> Iterator[tuple[bytes, tuple[str, int], tuple[str, int]]]:
    """What a readable socket holds (at most RECV_BATCH datagrams a turn; the loop comes back while
    it is readable): data, remote, local (the address it was sent to if the socket says, IP_PKTINFO,
    else the bound one; the port it came in on is the one the answer leaves from)."""
    for _ in range(RECV_BATCH):
        try:
            data, addr, dest = pktinfo.recv(s, 65535)
        except (BlockingIOError, InterruptedError):
            break
        except OSError as err:
            log.debug("IKE socket: %s", err)
            break
        yield data, addr, (dest or key[1], key[2])


def _is_ike(data: bytes) -> bool:
    """An IKEv2 header whose length is the datagram's: ESP (encrypted from its 9th byte on) has
    the version byte and this length by chance about once in 2**40 datagrams."""
    return (len(data) >= IKE_HEADER_LEN and data[17] == IKE_VERSION
            and int.from_bytes(data[24:28], "big") == len(data))


_is_init = is_ike_sa_init   # the one model of an IKE_SA_INIT header (ike/constants.py)
