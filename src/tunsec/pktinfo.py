"""IP_PKTINFO / IPV6_PKTINFO on UDP sockets: which of our addresses a datagram was sent to, and
which one an answer leaves from.

A socket bound to the wildcard (0.0.0.0, ::) serves every address of the host, but ``recvfrom``
does not say which one a peer talked to, and ``sendto`` leaves from whichever address the route
prefers.  A gateway with several addresses must answer from the one the peer used (RFC 7296
§2.11; a NAT or the peer drops anything else) and hash that one for NAT detection.  strongSwan's
socket-default plugin does the same.  The worker's C loop does this for port 4500 (csrc/cmsg.c);
this is the control process's port 500 and the worker's SEND_IKE.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct

IP_PKTINFO = 8   # <linux/in.h>; the socket module does not export it
_IN_PKTINFO = struct.Struct("=i4s4s")     # ifindex, spec_dst, addr
_IN6_PKTINFO = struct.Struct("=16sI")     # addr, ifindex
ANCILLARY_SPACE = socket.CMSG_SPACE(_IN6_PKTINFO.size)
WILDCARDS = ("0.0.0.0", "::")


def enable(sock: socket.socket) -> bool:
    """Ask the kernel to tell each datagram's destination address; False if it refused (then
    ``recv`` tells none)."""
    try:
        if sock.family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
    except OSError:
        return False
    return True


def local_of(ancdata: list[tuple[int, int, bytes]]) -> str | None:
    """Our address a datagram was sent to, from recvmsg's ancillary data; None if it does not say
    (or names no unicast address: a broadcast or multicast destination is no source for an answer).
    IPv4 reads ipi_spec_dst, which is the destination for unicast, as the C loop does."""
    for level, kind, data in ancdata:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= _IN_PKTINFO.size:
            addr: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(
                _IN_PKTINFO.unpack_from(data)[1])
        elif level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO and len(data) >= _IN6_PKTINFO.size:
            addr = ipaddress.IPv6Address(_IN6_PKTINFO.unpack_from(data)[0])
        else:
            continue
        if addr.is_multicast or addr.is_unspecified or (addr.version == 4 and addr.packed == b"\xff" * 4):
            return None
        return str(addr)
    return None


def recv(sock: socket.socket, size: int) -> tuple[bytes, tuple[str, int], str | None]:
    """One datagram: data, sender (address, port), our address it came to (None: not told).
    Raises what ``recvmsg`` raises."""
    data, anc, _flags, addr = sock.recvmsg(size, ANCILLARY_SPACE)
    return data, (addr[0], addr[1]), local_of(anc)


Ancillary = tuple[tuple[int, int, bytes], ...]
# source_ancillary's answers by (socket family, source): a gateway sends from a few addresses of its
# own, and each answer built anew parsed the address text (~20k instructions, per IKE answer sent)
_ANCILLARY: dict[tuple[int, str], Ancillary] = {}
_ANCILLARY_MAX = 256   # more sources than that: start over (addresses come and go)


def source_ancillary(family: int, source: str | None) -> Ancillary:
    """The ancillary data that makes a datagram leave from ``source``; none for None or a wildcard
    (the route's choice)."""
    if source is None:
        return ()
    key = (family, source)
    anc = _ANCILLARY.get(key)
    if anc is None:
        if len(_ANCILLARY) >= _ANCILLARY_MAX:
            _ANCILLARY.clear()
        anc = _ANCILLARY[key] = _source_ancillary(family, source)
    return anc


def _source_ancillary(family: int, source: str, oif: int = 0) -> Ancillary:
    if source in WILDCARDS and not oif:
        return ()
    ip = ipaddress.ip_address(source if source not in WILDCARDS else WILDCARDS[family == socket.AF_INET6])
    if family == socket.AF_INET and ip.version == 4:
        return ((socket.IPPROTO_IP, IP_PKTINFO, _IN_PKTINFO.pack(oif, ip.packed, bytes(4))),)
    if family == socket.AF_INET6 and ip.version == 6:
        return ((socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, _IN6_PKTINFO.pack(ip.packed, oif)),)
    return ()


def sendto(sock: socket.socket, data: bytes, addr: tuple[str, int], source: str | None, oif: int = 0) -> None:
    """``sock.sendto`` from ``source`` (None: the route's choice).  If the kernel refuses that
    source (the address is no longer ours) the datagram leaves from the route's choice instead, as
    the C loop's ESP does.  ``oif``: the interface it must leave by (ipi_ifindex, ipi6_ifindex), which
    makes the kernel's route lookup skip every route of another device: IKE to an address a full
    tunnel's TUN routes capture, by the host's own path, without a route for it (exclude_gate.py;
    ``ping -I eth0`` works so).  Raises what ``sendto`` raises.  With ``oif`` it never leaves as
    routed: a source the kernel refuses there is retried once from the wildcard by that interface, and
    an interface that is gone (ENODEV/ENXIO: a recreated uplink's stale ifindex) raises, for the caller
    to count (review revfull4 F1: as routed is into a full tunnel's TUN)."""
    if oif:
        _send_by(sock, data, addr, source, oif)
        return
    anc = source_ancillary(sock.family, source) if source is not None else ()
    if not anc:
        sock.sendto(data, addr)
        return
    try:
        sock.sendmsg([data], anc, 0, addr)
    except (BlockingIOError, InterruptedError):
        raise
    except OSError:
        # the source is not ours (any more; EINVAL or, from some routes, ENETUNREACH): the
        # route's choice then, which fails again if the destination is what is wrong
        sock.sendto(data, addr)


def _send_by(sock: socket.socket, data: bytes, addr: tuple[str, int], source: str | None, oif: int) -> None:
    """sendto by interface ``oif``, from ``source`` if the kernel takes it there, else from the wildcard."""
    wildcard = WILDCARDS[sock.family == socket.AF_INET6]
    try:
        sock.sendmsg([data], _source_ancillary(sock.family, source or wildcard, oif), 0, addr)
    except (BlockingIOError, InterruptedError):
        raise
    except OSError as err:
        if source is None or source in WILDCARDS or err.errno in GONE:
            raise
        sock.sendmsg([data], _source_ancillary(sock.family, wildcard, oif), 0, addr)


GONE = frozenset({errno.ENODEV, errno.ENXIO})   # the interface asked for is not there (any more)
