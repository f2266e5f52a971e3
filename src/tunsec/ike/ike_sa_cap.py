"""IKE SAs per authenticated identity: what ``max_ike_sas_per_identity`` counts (IkeEndpoint).

Every Child SA an IKE SA holds costs an SPI, two SAs and policies in the worker, and every IKE SA
an entry in the worker's IKE SPI table and memory here; ``max_child_sas`` bounds the first per IKE
SA, this bounds the IKE SAs of one identity in one connection, so that one authenticated client
cannot take these from the others (strongSwan has no such limit).

- A lineage counts once: an IKE rekey's successor takes its predecessor's place at once (the old
  SA lingers until its DELETE is answered, uncounted); a rekey collision's redundant SA takes none.
- An unproven identity (eap-radius without a User-Name in the Access-Accept, ``Identity.tag``) is
  one IKE SA's alone, so it counts under its name and the source it came from (an IPv4 address, an
  IPv6 /64: dos_source.source_key, as the unproven leases), apart from the proven identity of that
  name: a client that merely says "alice" cannot use up Alice's allowance, nor, from its own
  address, that of an unproven "alice" elsewhere.  As the name is the client's choice, the
  unproven IKE SAs of one source, whatever their names, hold at most UNPROVEN_NAMES_PER_SOURCE
  allowances together (four clients behind one NAT, as the unproven leases allow).
- Either side's IKE SAs count; only a responder refuses.

O(1) per IKE SA up, rekeyed or gone, and per check.
"""

from __future__ import annotations

from .dos_source import DEFAULT_IPV6_SOURCE_PREFIX, source_key
from .identity import Identity

# unproven IKE SAs of one source (any names) hold at most this many max_ike_sas allowances together
UNPROVEN_NAMES_PER_SOURCE = 4

# (connection, identity, None) for a proven identity; (connection, name, source key) for an unproven one
CapKey = tuple[str, Identity, str | None]


def cap_key(name: str, peer: Identity, source: str | None = None) -> CapKey:
    """The count ``peer``'s IKE SAs of connection ``name`` go under (``source``: the address an
    unproven peer's IKE SA came from; without it, an unproven peer counts apart from every source)."""
    if not peer.tag:
        return (name, peer, None)
    return (name, peer.named, "" if source is None else source_key(source, DEFAULT_IPV6_SOURCE_PREFIX))


class IkeSaCounts:
    """The authenticated IKE SAs (local SPIs) of each (connection, identity), one per lineage."""

    def __init__(self) -> None:
        self._held: dict[CapKey, set[bytes]] = {}
        self._key_of: dict[bytes, CapKey] = {}
        self._unproven_of: dict[tuple[str, str], int] = {}   # (connection, source key) -> unproven IKE SAs

    def held(self, name: str, peer: Identity, source: str | None = None) -> int:
        return len(self._held.get(cap_key(name, peer, source), ()))

    def over(self, name: str, peer: Identity, source: str, limit: int) -> tuple[int, int] | None:
        """(held, limit) if another IKE SA of ``peer`` from ``source`` would exceed ``limit`` (the
        identity's) or, for an unproven peer, its source's bound; else None."""
        key = cap_key(name, peer, source)
        if (held := len(self._held.get(key, ()))) >= limit:
            return held, limit
        if key[2] is not None:
            most = limit * UNPROVEN_NAMES_PER_SOURCE
            if (held := self._unproven_of.get((name, key[2]), 0)) >= most:
                return held, most
        return None

    def add(self, spi: bytes, name: str, peer: Identity, source: str | None = None) -> None:
        """The IKE SA with local SPI ``spi`` authenticated ``peer`` (again: nothing changes); ``source``:
        the address its IKE SA came from."""
        if spi in self._key_of:
            return
        key = cap_key(name, peer, source)
        self._key_of[spi] = key
        self._held.setdefault(key, set()).add(spi)
        if key[2] is not None:
            self._unproven_of[(name, key[2])] = self._unproven_of.get((name, key[2]), 0) + 1

    def succeed(self, old: bytes, new: bytes, redundant: bool = False) -> None:
        """``new`` replaces ``old`` (an IKE rekey): the lineage stays one, under ``old``'s key.
        ``redundant``: ``new`` is a rekey collision's loser (RFC 7296 §2.8.2), handed out as the
        survivor ``old``'s successor only so that its SPI is routed until its DELETE: it replaces
        nothing, and ``old`` keeps the place (else the survivor went uncounted once it was deleted)."""
        if redundant:
            return
        key = self._key_of.pop(old, None)
        if key is None or new in self._key_of:
            if key is not None:
                self._drop(key, old)
            return
        spis = self._held[key]
        spis.discard(old)
        spis.add(new)
        self._key_of[new] = key

    def remove(self, spi: bytes) -> None:
        """The IKE SA is gone."""
        key = self._key_of.pop(spi, None)
        if key is not None:
            self._drop(key, spi)

    def _drop(self, key: CapKey, spi: bytes) -> None:
        spis = self._held[key]
        spis.discard(spi)
        if not spis:
            del self._held[key]
        if key[2] is not None:
            where = (key[0], key[2])
            if left := self._unproven_of[where] - 1:
                self._unproven_of[where] = left
            else:
                del self._unproven_of[where]

    def __len__(self) -> int:
        """Identities (per connection) that hold IKE SAs now."""
        return len(self._held)
