"""The IKE sockets: one per family, bound address and UDP port (port 4500 goes through the worker).

On a custom port, IKE from a peer port other than 500 carries the non-ESP marker both ways, as
strongSwan's sender and receiver have it (``constants.has_marker``)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING

from tunsec.conf.connections import Connection, unserved_sources
from tunsec.dataplane import pipe
from tunsec.dataplane.client import WorkerError
from tunsec.dataplane.pipe import Endpoint
from tunsec.ike.constants import IKE_HEADER_LEN, IKE_PORT, IKE_VERSION, NATT_PORT, NON_ESP_MARKER, has_marker
from tunsec.ike.endpoint import Datagram
from tunsec.loglimit import suffix
from tunsec.services.base import StartupError, bind_udp

if TYPE_CHECKING:
    from tunsec.services.ike.service import IkeService

log = logging.getLogger("tunsec.ike")

IkeSocketKey = tuple[int, str, int]   # family, bound address, UDP port
UNMARKED_PEERS_MAX = 1024   # custom-port peers remembered as sending IKE without the marker (_unmark)


def _ports(connections: Iterable[Connection]) -> set[int]:
    return {c.local_port for c in connections} or {IKE_PORT}


def open_sockets(self: IkeService) -> None:
    """UDP 500 (or the configured ports) per family, before the event loop starts."""
    self.ports = _ports(self.connections.values())
    keys = [(fam, addr, port) for fam, addr in self.local_addrs.items() for port in sorted(self.ports)]
    # each initiator's IKE_SA_INIT leaves from its local_addrs and local_port (_socket)
    unserved = unserved_sources(self.connections.values(), keys)
    if unserved:
        raise StartupError("IKE: " + "; ".join(unserved))
    for key in keys:
        if key not in self.sockets:
            self.sockets[key] = bind_udp(*key, purpose="IKE")


def close_sockets(self: IkeService) -> None:
    for key in list(self.sockets):
        self._close_socket(key)


def _close_socket(self: IkeService, key: IkeSocketKey) -> None:
    s = self.sockets.pop(key)
    with contextlib.suppress(Exception):
        asyncio.get_event_loop().remove_reader(s.fileno())
    s.close()


def _close_unused(self: IkeService) -> None:
    """After a reload: the ports no connection uses any more are closed (a new port needs a
    restart, see check_reload, so none is opened here)."""
    want = _ports(self.connections.values())
    for key in [k for k in self.sockets if k[2] not in want]:
        self._close_socket(key)
    self.ports = want & self.ports


def _readable(self: IkeService, s: socket.socket, key: IkeSocketKey) -> None:
    local = (key[1], key[2])   # the port it came in on is the one the answer leaves from
    for _ in range(64):
        try:
            data, addr = s.recvfrom(65535)
        except (BlockingIOError, InterruptedError):
            break
        except OSError as err:
            log.debug("IKE socket: %s", err)
            break
        ike = self._unmark(data, (addr[0], addr[1]), key[2]) if has_marker(key[2], addr[1]) else data
        if ike is not None:
            self.receive(ike, (addr[0], addr[1]), local)
    self._pump()


def _unmark(self: IkeService, data: bytes, addr: tuple[str, int], port: int) -> bytes | None:
    """A datagram on a custom IKE port from a port other than 500: as strongSwan's receiver, IKE
    with the non-ESP marker (stripped), a NAT keepalive (dropped) or ESP in UDP, which only the
    worker's port 4500 carries here: dropped, counted (status: ike_drops.esp_on_ike_port) and said.
    Unlike strongSwan's, an unmarked datagram that is an IKE message is taken as IKE, and answered
    unmarked: a client that sent from port 500 through a NAT that changed its port (it floats to
    4500 after IKE_SA_INIT) marks nothing and would not understand a marked answer."""
    if data[:4] == NON_ESP_MARKER and len(data) > 4:
        self._unmarked_peers.pop((port, *addr), None)
        return data[4:]
    if data == b"\xff":
        return None
    if _is_ike(data):
        self._unmarked_peers[(port, *addr)] = True
        self._unmarked_peers.move_to_end((port, *addr))
        if len(self._unmarked_peers) > UNMARKED_PEERS_MAX:
            self._unmarked_peers.popitem(last=False)
        return data
    self.esp_on_ike_port += 1
    held = self._esp_log.admit()
    if held is not None:
        log.warning("ESP in UDP from %s port %d arrived on IKE port %d and is dropped: tunsec carries ESP "
                    "only on port %d. A peer whose own IKE port is not 500 keeps IKE, and ESP, on the port it "
                    "started on (RFC 7296 2.23, as strongSwan floats); give that peer local_port 500 or point "
                    "its remote_port at %d%s", addr[0], addr[1], port, NATT_PORT, NATT_PORT, suffix(held))
    return None


def _is_ike(data: bytes) -> bool:
    """An IKEv2 header whose length is the datagram's: ESP (encrypted from its 9th byte on) has
    the version byte and this length by chance about once in 2**40 datagrams."""
    return (len(data) >= IKE_HEADER_LEN and data[17] == IKE_VERSION
            and int.from_bytes(data[24:28], "big") == len(data))


def receive_natt(self: IkeService, msg: pipe.Ike) -> None:
    """IKE that arrived on port 4500 via the worker."""
    local = (str(msg.local.addr), msg.local.port) if msg.local else None
    self.receive(msg.data, (str(msg.remote.addr), msg.remote.port), local)
    self._pump()


def _send(self: IkeService, datagram: Datagram) -> None:
    data, addr, local_port = datagram
    ip = ipaddress.ip_address(addr[0])
    if local_port == NATT_PORT:
        remote = Endpoint(ip, addr[1])
        self._spawn(self._send_natt(data, remote))
        return
    s = self._socket(ip.version, local_port)
    if s is None:
        log.warning("no IPv%d IKE socket on port %d to send to %s", ip.version, local_port, addr[0])
        return
    # a custom port at both ends: the peer may take ESP there too, unless it sent to us unmarked
    if has_marker(local_port, addr[1]) and (local_port, *addr) not in self._unmarked_peers:
        data = NON_ESP_MARKER + data
    with contextlib.suppress(OSError):
        s.sendto(data, addr)


def _socket(self: IkeService, family: int, port: int) -> socket.socket | None:
    """The socket bound to ``port``: where a request came in, or an initiator's local_port
    (open_sockets made sure each has one)."""
    return next((s for k, s in self.sockets.items() if k[0] == family and k[2] == port), None)


async def _send_natt(self: IkeService, data: bytes, remote: Endpoint) -> None:
    try:
        await self.worker().request(lambda r: pipe.SendIke(r, data, remote))
    except WorkerError as err:
        log.warning("sending IKE to %s failed: %s", remote.addr, err)
