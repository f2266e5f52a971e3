"""What the per-source DoS limits count a request under (``cookie_threshold_ip``, ``block_threshold``,
the COOKIE calm-down groups and the half-open table of :mod:`tunsec.ike.endpoint`).

strongSwan counts per address. That holds for IPv4, where an address costs something, but not for
IPv6: every host gets at least a /64 and can send from 2^64 addresses, each with a fresh count.
So an IPv6 source is counted under its prefix (``ipv6_source_prefix`` bits, default 64: the
smallest a site is given); 128 counts per address, as strongSwan.

An IPv4-mapped IPv6 address (``::ffff:a.b.c.d``) is counted as the IPv4 address it stands for:
under its /64 every IPv4 host in the world would share one count, and it is the same host as a
native IPv4 source with that address.
"""

from __future__ import annotations

import ipaddress

DEFAULT_IPV6_SOURCE_PREFIX = 64


def source_key(ip: str, ipv6_prefix: int = DEFAULT_IPV6_SOURCE_PREFIX) -> str:
    """The key the per-source limits count ``ip`` (a source address as the socket gives it) under:
    an IPv4 address itself, an IPv6 address's prefix as ``2001:db8:1:2::/64`` (with ``%scope``
    for a scoped address: fe80::/64 on two links are two networks)."""
    if ":" not in ip:
        return ip   # IPv4, the common case: no parsing
    try:
        addr = ipaddress.IPv6Address(ip)
    except ValueError:
        return ip   # not from a socket (sockets give valid addresses): counted as given
    mapped = addr.ipv4_mapped
    if mapped is not None:
        return str(mapped)
    host_bits = 128 - ipv6_prefix
    key = f"{ipaddress.IPv6Address(int(addr) >> host_bits << host_bits)}/{ipv6_prefix}"
    return f"{key}%{addr.scope_id}" if addr.scope_id else key
