"""Pinging one address from many source addresses in a namespace (IP_PKTINFO on one raw socket):
the scale benchmark's check that every client's virtual IP reaches the gateway through its tunnel."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Sequence

from tunsec.bench.netns import Host, netns_socket

IP_PKTINFO = 8                   # <linux/in.h>; the socket module does not export it


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _echo(ident: int, seq: int) -> bytes:
    body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"tunsec-scale"
    return body[:2] + struct.pack("!H", _checksum(body)) + body[4:]


def ping_from(host: Host, sources: Sequence[str], dst: str, timeout: float, batch: int = 64) -> set[str]:
    """Ping ``dst`` from ``host`` once with each of ``sources`` as the source address (IP_PKTINFO on one
    raw socket), at most ``batch`` requests in flight, resending the unanswered ones each round;
    the sources that got an echo reply within ``timeout`` seconds."""
    by_ident = {(i + 1) & 0xFFFF: src for i, src in enumerate(sources)}
    if len(by_ident) != len(sources):
        raise ValueError("at most 65535 sources")
    answered: set[str] = set()
    deadline = time.monotonic() + timeout
    with netns_socket(host, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        sock.setblocking(False)
        seq = 0
        while len(answered) < len(sources) and time.monotonic() < deadline:
            seq = (seq + 1) & 0xFFFF
            pending = [(i, s) for i, s in by_ident.items() if s not in answered]
            for start in range(0, len(pending), batch):
                for ident, src in pending[start:start + batch]:
                    info = struct.pack("=I4s4s", 0, socket.inet_aton(src), bytes(4))
                    try:
                        sock.sendmsg([_echo(ident, seq)], [(socket.IPPROTO_IP, IP_PKTINFO, info)], 0, (dst, 0))
                    except OSError:
                        continue      # no route yet for this source: the next round tries again
                _collect(sock, by_ident, dst, answered, min(deadline, time.monotonic() + 0.05))
            _collect(sock, by_ident, dst, answered, min(deadline, time.monotonic() + 0.5))
    return answered


def _collect(sock: socket.socket, by_ident: dict[int, str], dst: str, answered: set[str], until: float) -> None:
    """Echo replies from ``dst`` to one of the sources, until ``until`` or all are answered."""
    import select

    while len(answered) < len(by_ident):
        left = until - time.monotonic()
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            return
        while True:
            try:
                pkt = sock.recv(2048)
            except BlockingIOError:
                break
            ihl = (pkt[0] & 0x0F) * 4
            if len(pkt) < ihl + 8 or pkt[ihl] != 0 or socket.inet_ntoa(pkt[12:16]) != dst:
                continue
            ident = struct.unpack("!H", pkt[ihl + 4:ihl + 6])[0]
            src = by_ident.get(ident)
            if src is not None and socket.inet_ntoa(pkt[16:20]) == src:
                answered.add(src)
