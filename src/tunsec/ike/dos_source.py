"""What the per-source DoS limits count a request under (``cookie_threshold_ip``, ``block_threshold``,
the COOKIE calm-down groups and the half-open table of :mod:`tunsec.ike.endpoint`).

strongSwan counts per address. That holds for IPv4, where an address costs something, but not for
IPv6: every host gets at least a /64 and can send from 2^64 addresses, each with a fresh count.
So an IPv6 source is counted under its prefix (``ipv6_source_prefix`` bits, default 64: the
smallest a site is given); 128 counts per address, as strongSwan.

An IPv4-mapped IPv6 address (``::ffff:a.b.c.d``) is counted as the IPv4 address it stands for:
under its /64 every IPv4 host in the world would share one count, and it is the same host as a
native IPv4 source with that address.

The worker's per-source limits (unknown and tagged IKE queued, INVALID_SPI: csrc/dp.c source_hash,
dataplane/pipeio.py) count an IPv6 sender under the same prefix (its --ipv6-source-prefix), masked
with ``ipv6_prefix_mask``; its sockets are IPv6-only, so no mapped address reaches it.
"""

from __future__ import annotations

import socket

DEFAULT_IPV6_SOURCE_PREFIX = 64
# the prefix lengths dos.ipv6_source_prefix takes: below /32 is a whole ISP; 128 counts per address
MIN_IPV6_SOURCE_PREFIX = 32
MAX_IPV6_SOURCE_PREFIX = 128
_MAPPED = bytes(10) + b"\xff\xff"   # ::ffff:0:0/96 (RFC 4291 §2.5.5.2)


def source_key(ip: str, ipv6_prefix: int = DEFAULT_IPV6_SOURCE_PREFIX) -> str:
    """The key the per-source limits count ``ip`` (a source address as the socket gives it) under:
    an IPv4 address itself, an IPv6 address's prefix as ``2001:db8:1:2::/64`` (with ``%scope``
    for a scoped address: fe80::/64 on two links are two networks).  inet_pton/inet_ntop, not
    ipaddress: this runs for every IKE_SA_INIT request, and ipaddress takes 20 us for it."""
    if ":" not in ip:
        return ip   # IPv4, the common case: no parsing
    addr, _, scope = ip.partition("%")
    try:
        packed = socket.inet_pton(socket.AF_INET6, addr)
    except OSError:
        return ip   # not from a socket (sockets give valid addresses): counted as given
    if packed[:12] == _MAPPED:
        return socket.inet_ntop(socket.AF_INET, packed[12:])
    network = (int.from_bytes(packed, "big") & ipv6_prefix_mask(ipv6_prefix)).to_bytes(16, "big")
    key = f"{socket.inet_ntop(socket.AF_INET6, network)}/{ipv6_prefix}"
    return f"{key}%{scope}" if scope else key


def ipv6_prefix_mask(bits: int) -> int:
    """The first ``bits`` (0..128) of a 128-bit address set, the rest clear."""
    return ((1 << bits) - 1) << (128 - bits)


def ipv6_source_prefix(text: str) -> int:
    """A prefix length dos.ipv6_source_prefix takes, from text (the worker's --ipv6-source-prefix,
    which argparse refuses with a usage error); ValueError if it is none."""
    bits = int(text)
    if not MIN_IPV6_SOURCE_PREFIX <= bits <= MAX_IPV6_SOURCE_PREFIX:
        raise ValueError(f"an IPv6 prefix length must be {MIN_IPV6_SOURCE_PREFIX}..{MAX_IPV6_SOURCE_PREFIX}")
    return bits
