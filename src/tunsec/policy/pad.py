"""The Peer Authorization Database (RFC 4301 §4.4.3): who may use which connection.

One entry per IKE connection: the peer must come from one of the connection's
remote addresses, prove its identity with the connection's auth method, be the
connection's remote identity, and may then claim only traffic selectors inside
what the connection's children allow for the remote side.

Every authorization decision of the IKE engine is taken here; the engine calls
the module's functions with the connection's IkeConfig values:
- which connections a new IKE_SA_INIT from an address may be for
  (IkeEndpoint._default_selector -> address_match; only those become the
  IKE SA's candidates, so a later switch never leaves them),
- whether an authenticated identity may use a connection, and which connection
  a responder switches to for an IDi/IDr (exchanges/ike_auth.py -> identity_allowed),
- whether a peer EAP-RADIUS authenticated is a member of a group the connection requires
  (``remote.groups``), and so which connection it ends in (exchanges/ike_auth.py -> group_member),
- whether the AUTH payload's method is one the connection accepts
  (exchanges/ike_auth.py -> check_auth_method),
- whether a responder refuses a second IKE SA of an identity (``unique = keep``;
  exchanges/ike_auth.py via IkeEndpoint -> check_unique_keep),
- which traffic selectors a peer may claim: the narrowing of its proposal to the
  allowed ones (exchanges/child.py via ike/ts.py's narrow -> narrow here).

PadEntry bundles the same checks for one connection (PadEntry.of(IkeConfig);
tests/test_pad.py); the engine does not hold PadEntry objects.

Pure logic: no sockets, no clocks; the engine (sans-I/O) calls it with what it parsed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING

from tunsec.ike.constants import AuthMethod
from tunsec.ike.identity import Identity
from tunsec.policy.selector import TooManySelectors, Ts, selectors_text

if TYPE_CHECKING:
    from tunsec.ike.config import IkeConfig

# "anyone": no remote address configured, or a wildcard
ANY_ADDRESS = (None, "%any", "0.0.0.0", "::")

# the AUTH payload methods that prove each configured method (swanctl remote.auth)
AUTH_METHODS: dict[str, frozenset[AuthMethod]] = {
    "psk": frozenset({AuthMethod.PSK}),
    "pubkey": frozenset({AuthMethod.RSA_SIG, AuthMethod.DIGITAL_SIGNATURE, AuthMethod.ECDSA_SHA256_P256,
                         AuthMethod.ECDSA_SHA384_P384, AuthMethod.ECDSA_SHA512_P521}),
}
_EXPECTED = {"psk": "a shared key", "pubkey": "a signature"}


class AddressMatch(IntEnum):
    """How a peer's address fits an entry; an exact match is preferred to a wildcard."""

    NONE = 0
    ANY = 1
    EXACT = 2


class Refused(Exception):
    """The PAD does not let this peer use this connection; the message says why."""


def same_ip(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a == b


def address_match(remote_addr: str | None, peer: str) -> AddressMatch:
    """A connection's configured remote address against the address a datagram came from."""
    if remote_addr in ANY_ADDRESS:
        return AddressMatch.ANY
    assert remote_addr is not None
    return AddressMatch.EXACT if same_ip(remote_addr, peer) else AddressMatch.NONE


def identity_allowed(allowed: Identity, peer: Identity) -> bool:
    """The configured remote identity (possibly %any) accepts the identity the peer asserted."""
    return allowed.matches(peer)


def group_member(required: Sequence[Identity], groups: Sequence[str]) -> bool:
    """A connection's ``remote.groups`` (none: anyone) accepts a peer that is a member of one of
    them by ``groups``, the names its AAA backend gave, read as identities as strongSwan reads
    them (``staff`` matches ``Staff``; a name that is no identity, such as ``a=b``, matches nothing)."""
    if not required:
        return True
    for name in groups:
        try:
            held = Identity.parse(name)
        except ValueError:   # IdentityError, and a DN attribute cryptography refuses
            continue
        if not held.is_any and any(r.matches(held) for r in required):
            return True
    return False


def auth_allowed(method: str, received: int) -> bool:
    """The peer's AUTH payload method proves the configured method ("psk" or "pubkey")."""
    return received in AUTH_METHODS.get(method, frozenset())


def check_auth_method(method: str, received: int) -> None:
    """auth_allowed, or Refused naming what was expected."""
    if not auth_allowed(method, received):
        raise Refused(f"peer used AUTH method {received}, expected {_EXPECTED.get(method, method)}")


def check_unique_keep(peer_id: Identity, peer_addr: str,
                      established: Iterable[tuple[Identity | None, str]]) -> None:
    """``unique = keep`` (strongSwan's UNIQUE_KEEP for IKEv2): Refused if the connection already
    has an established IKE SA (identity, peer address) with this identity in the same address
    family, from whatever address.  strongSwan lets a duplicate from the same address and port
    through only for IKEv1 (ike_sa_manager.c is_ikev1_reauth); for IKEv2 a make-before-break
    reauthentication is refused too, a break-before-make one deleted its old IKE SA first.  The
    caller does not ask when the peer sent INITIAL_CONTACT (it rebooted: its old SAs are replaced)."""
    for other_id, other_addr in established:
        if is_duplicate(peer_id, peer_addr, other_id, other_addr):
            raise Refused(f"peer identity {peer_id} already has an IKE SA from {other_addr} (unique = keep)")


def is_duplicate(peer_id: Identity, peer_addr: str, other_id: Identity | None, other_addr: str) -> bool:
    """Whether an IKE SA of the same connection with peer (other_id, other_addr) is a duplicate of
    a new one with (peer_id, peer_addr) for ``unique`` (keep and replace alike): the same identity
    in the same address family, from whatever address.  strongSwan's check_uniqueness
    (ike_sa_manager.c) only looks among the SAs of the new one's family (create_id_enumerator with
    it), so a dual-stack peer's IPv4 and IPv6 IKE SAs are no duplicates of each other."""
    return other_id == peer_id and _family(other_addr) == _family(peer_addr)


def _family(addr: str) -> int:
    """4 or 6; 0 for what is no IP address (never the same family as an address)."""
    try:
        return ipaddress.ip_address(addr).version
    except ValueError:
        return 0


def narrow(proposed: Sequence[Ts], allowed: Sequence[Ts], most: int | None = None) -> tuple[Ts, ...]:
    """The traffic selectors a peer may claim: every non-empty intersection of a proposed
    selector with an allowed one, deduplicated (RFC 7296 §2.9).  Empty: none of it is allowed.

    ``most``: raises :class:`TooManySelectors` as soon as more than that many are kept (a peer may
    propose 255, each a piece of what is allowed, far more than an SA holds).  Deduplicated in a
    dict: against the list of those kept it was quadratic in them.  One of each (a road warrior's
    usual) needs no dedup: not hashed (an address's hash makes a hex text of it, twice a selector)."""
    if len(proposed) == 1 and len(allowed) == 1 and (most is None or most >= 1):
        common = proposed[0].intersect(allowed[0])
        return () if common is None else (common,)
    result: dict[Ts, None] = {}
    for want in proposed:
        for have in allowed:
            common = want.intersect(have)
            if common is not None:
                result[common] = None
                if most is not None and len(result) > most:
                    raise TooManySelectors(f"{len(proposed)} proposed selectors narrow to more than {most} "
                                           f"(allowed: {selectors_text(allowed)})")
    return tuple(result)


@dataclass(frozen=True)
class PadEntry:
    """Who may use one connection, and as what."""

    name: str                          # the connection
    remote_id: Identity                # the identity the peer must assert (%any: any authenticated one)
    auth: str                          # how it must prove it: "psk" | "pubkey"
    remote_addr: str | None = None     # where it may come from (None / %any: anywhere)

    @classmethod
    def of(cls, cfg: IkeConfig) -> PadEntry:
        """The entry a configured connection (swanctl remote {} and remote_addrs) makes."""
        return cls(cfg.name, cfg.remote.id, cfg.remote.method, cfg.remote_addr)

    def address_match(self, peer: str) -> AddressMatch:
        return address_match(self.remote_addr, peer)

    def authorize(self, peer_id: Identity, method: int, addr: str) -> None:
        """Refused unless an authenticated peer (identity, AUTH method, address) may use this connection."""
        if self.address_match(addr) is AddressMatch.NONE:
            raise Refused(f"connection {self.name}: peer address {addr} is not its remote address {self.remote_addr}")
        if not identity_allowed(self.remote_id, peer_id):
            raise Refused(f"peer identity {peer_id} is not the configured {self.remote_id}")
        check_auth_method(self.auth, method)

    def selectors(self, proposed: Sequence[Ts], allowed: Sequence[Ts]) -> tuple[Ts, ...]:
        """Of what the peer proposed, what it may claim (allowed: this connection's child's
        remote selectors, dynamic ones resolved to the peer's address)."""
        return narrow(proposed, allowed)


def candidates(entries: Sequence[PadEntry], peer: str) -> list[str]:
    """Connections a peer at this address may be using: exact address matches first, then wildcards."""
    exact = [e.name for e in entries if e.address_match(peer) is AddressMatch.EXACT]
    anyone = [e.name for e in entries if e.address_match(peer) is AddressMatch.ANY]
    return exact + anyone
