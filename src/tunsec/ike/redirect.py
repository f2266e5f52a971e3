"""Redirect (RFC 5685): the notify data, and when a gateway redirects.

A gateway with ``redirect_to`` redirects clients that sent REDIRECT_SUPPORTED (or
REDIRECTED_FROM) in their IKE_SA_INIT request; clients that did not are served.
``redirect_when`` is the number of established IKE SAs the gateway must already hold
before it redirects (0: always); half-open ones do not count, so a flood of
IKE_SA_INITs cannot push real clients to another gateway. ``redirect_on`` says when:

- ``init`` (§5): the IKE_SA_INIT request is answered with N(REDIRECT) naming the
  other gateway, statelessly (like a COOKIE: nothing is kept, see ``endpoint.py``).
- ``auth`` (§6): the client authenticates first; the last IKE_AUTH response
  carries our AUTH and N(REDIRECT) instead of the CP and Child SA
  (``exchanges/ike_auth.py``). The client deletes that IKE SA; if it does not,
  the gateway does after the connection's ``half_open_timeout`` (as strongSwan).
  The redirected IKE SA builds no Child SA, leases no address and never counts as up.

A client announces REDIRECT_SUPPORTED. On N(REDIRECT) in the IKE_SA_INIT response
it starts over at the new gateway with N(REDIRECTED_FROM) naming the one that
redirected it (``exchanges/ike_sa_init.py``), at most ``MAX_REDIRECTS`` times per
IKE SA. On N(REDIRECT) in an IKE_AUTH response it follows only once the
gateway's AUTH checked out: it deletes that IKE SA and a new one (with the
Child SA it asked for) starts at the new gateway, at most ``MAX_REDIRECTS`` times
within ``REDIRECT_PERIOD`` seconds (strongSwan's loop detection), ``sa_redirect.py``.

A gateway named by an FQDN (GW Ident Type 3) is looked up by the engine's user:
the IKE SA emits :class:`~tunsec.ike.events.ResolveGateway` and waits (at most
``RESOLVE_TIMEOUT``) for :meth:`IkeSa.gateway_resolved`; the sans-I/O engine
never resolves names itself.

Data of both notifies (RFC 5685 §9): GW Ident Type (1: IPv4, 2: IPv6, 3: FQDN),
GW Ident Len, the identity, and (REDIRECT in IKE_SA_INIT only) the Nonce Data:
the initiator's nonce, which the client checks so an off-path attacker cannot
redirect it without having seen the request.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .address_role import refused_address, unmapped, usable_gateway

if TYPE_CHECKING:
    from .state import IkeSaState

MAX_REDIRECTS = 5  # strongSwan's charon also gives up after 5 redirects within its window
REDIRECT_PERIOD = 300.0  # seconds in which MAX_REDIRECTS IKE_AUTH redirects are allowed (strongSwan's)
RESOLVE_TIMEOUT = 10.0  # seconds an IKE SA waits for the address of an FQDN gateway

GW_IPV4 = 1
GW_IPV6 = 2
GW_FQDN = 3

_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")


class RedirectError(ValueError):
    """A REDIRECT notify we cannot follow (malformed)."""


@dataclass(frozen=True)
class Redirect:
    gateway: str  # an IPv4 or IPv6 address, or an FQDN, as text
    nonce: bytes
    fqdn: bool = False


def is_fqdn(name: str) -> bool:
    """A host name we would hand to a resolver: ASCII letters, digits and hyphens in dot-separated
    labels of at most 63 characters, 253 in all, not all-numeric (that would read as an address)."""
    name = name[:-1] if name.endswith(".") else name
    if not 0 < len(name) <= 253 or not name.isascii():
        return False
    labels = name.split(".")
    return all(_LABEL.match(label) for label in labels) and not labels[-1].isdigit()


def encode_gateway(gateway: str) -> bytes:
    """GW Ident Type, Len and identity for an IP address or an FQDN."""
    try:
        ip = ipaddress.ip_address(gateway)
    except ValueError:
        if not is_fqdn(gateway):
            raise RedirectError(f"{gateway!r} is neither an IP address nor a host name") from None
        data = gateway.encode("ascii")
        return bytes((GW_FQDN, len(data))) + data
    packed = ip.packed
    return bytes((GW_IPV4 if ip.version == 4 else GW_IPV6, len(packed))) + packed


def encode_redirect(gateway: str, nonce: bytes) -> bytes:
    return encode_gateway(gateway) + nonce


def decode_redirect(data: bytes) -> Redirect:
    """Parse N(REDIRECT)'s data; RedirectError says what is wrong with it."""
    if len(data) < 2:
        raise RedirectError(f"REDIRECT data of {len(data)} bytes is shorter than its header")
    kind, length = data[0], data[1]
    ident = data[2 : 2 + length]
    if len(ident) != length:
        raise RedirectError(f"REDIRECT gateway identity of length {length} exceeds the notify's data")
    if kind == GW_FQDN:
        name = ident.decode("ascii", "replace")
        if not is_fqdn(name):
            raise RedirectError(f"REDIRECT names {name[:64]!r}, which is no host name")
        return Redirect(name, data[2 + length :], fqdn=True)
    expected = {GW_IPV4: 4, GW_IPV6: 16}.get(kind)
    if expected is None:
        raise RedirectError(f"REDIRECT gateway identity type {kind} is unknown")
    if length != expected:
        raise RedirectError(f"REDIRECT gateway identity of type {kind} has length {length}, not {expected}")
    address = unmapped(ipaddress.ip_address(ident))
    if not usable_gateway(str(address)):
        raise RedirectError(f"REDIRECT names {address}, which is no gateway")
    return Redirect(str(address), data[2 + length :])


def canonical_gateway(address: str) -> str:
    """A usable gateway address (an FQDN's result) as it is checked and connected to: unmapped."""
    return str(unmapped(ipaddress.ip_address(address)))


def refused_target(st: IkeSaState, address: str, authenticated: bool = False) -> str | None:
    """Why a client does not go to ``address`` (a REDIRECT's, or what its FQDN resolved to), or None:
    address_role.refused_address's reasons for our IKE (review revclient F2); ``authenticated``: the
    REDIRECT came in IKE_AUTH (a target inside the client's own full tunnel is allowed then)."""
    return refused_address(st, address, "IKE", authenticated=authenticated)


def not_followed(st: IkeSaState, redirect: Redirect, authenticated: bool = False) -> str | None:
    """Why a client does not follow ``redirect`` (an FQDN's addresses are checked once resolved);
    ``authenticated``: it came in IKE_AUTH, not IKE_SA_INIT (which anyone on the path can forge)."""
    if not st.config.follow_redirects:
        return f"REDIRECT to {redirect.gateway} not followed: follow_redirects = no"
    why = None if redirect.fqdn else refused_target(st, redirect.gateway, authenticated)
    return f"REDIRECT not followed: {why}" if why is not None else None
