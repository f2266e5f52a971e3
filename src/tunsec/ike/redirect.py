"""Redirect (RFC 5685): the notify data, and when a gateway redirects.

A gateway with ``redirect_to`` answers the IKE_SA_INIT request of a client that
sent REDIRECT_SUPPORTED with N(REDIRECT) naming the other gateway, statelessly
(like a COOKIE: nothing is kept, see ``endpoint.py``). ``redirect_when`` is the
number of IKE SAs the gateway must already hold before it redirects (0: always).
Clients that did not announce REDIRECT_SUPPORTED are served.

A client announces REDIRECT_SUPPORTED, and on N(REDIRECT) in the IKE_SA_INIT
response starts over at the new gateway with N(REDIRECTED_FROM) naming the one
that redirected it (``exchanges/ike_sa_init.py``), at most ``MAX_REDIRECTS``
times per IKE SA, so two gateways that redirect to each other cannot keep it
looping. Only IPv4 and IPv6 gateway identities are followed: an FQDN would need
a name lookup, which the sans-I/O engine does not do, and is refused.

Data of both notifies (RFC 5685 §9): GW Ident Type (1: IPv4, 2: IPv6, 3: FQDN),
GW Ident Len, the identity, and (REDIRECT in IKE_SA_INIT only) the Nonce Data:
the initiator's nonce, which the client checks so an off-path attacker cannot
redirect it without having seen the request.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

MAX_REDIRECTS = 5  # strongSwan's charon also gives up after 5 redirects within its window

GW_IPV4 = 1
GW_IPV6 = 2
GW_FQDN = 3


class RedirectError(ValueError):
    """A REDIRECT notify we cannot follow (malformed, or an FQDN)."""


@dataclass(frozen=True)
class Redirect:
    gateway: str  # an IPv4 or IPv6 address, as text
    nonce: bytes


def encode_gateway(address: str) -> bytes:
    """GW Ident Type, Len and identity for an IP address (REDIRECTED_FROM, or REDIRECT without nonce)."""
    ip = ipaddress.ip_address(address)
    packed = ip.packed
    return bytes((GW_IPV4 if ip.version == 4 else GW_IPV6, len(packed))) + packed


def encode_redirect(address: str, nonce: bytes) -> bytes:
    return encode_gateway(address) + nonce


def decode_redirect(data: bytes) -> Redirect:
    """Parse N(REDIRECT)'s data; RedirectError says what is wrong with it."""
    if len(data) < 2:
        raise RedirectError(f"REDIRECT data of {len(data)} bytes is shorter than its header")
    kind, length = data[0], data[1]
    ident = data[2 : 2 + length]
    if len(ident) != length:
        raise RedirectError(f"REDIRECT gateway identity of length {length} exceeds the notify's data")
    if kind == GW_FQDN:
        raise RedirectError("REDIRECT to an FQDN is not followed (only IPv4 or IPv6 addresses)")
    expected = {GW_IPV4: 4, GW_IPV6: 16}.get(kind)
    if expected is None:
        raise RedirectError(f"REDIRECT gateway identity type {kind} is unknown")
    if length != expected:
        raise RedirectError(f"REDIRECT gateway identity of type {kind} has length {length}, not {expected}")
    address = ipaddress.ip_address(ident)
    if address.is_unspecified or address.is_multicast:
        raise RedirectError(f"REDIRECT names {address}, which is no gateway")
    return Redirect(str(address), data[2 + length :])
