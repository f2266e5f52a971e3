"""IKE SAs per authenticated identity: what ``max_ike_sas_per_identity`` counts (IkeEndpoint).

Every Child SA an IKE SA holds costs an SPI, two SAs and policies in the worker, and every IKE SA
an entry in the worker's IKE SPI table and memory here; ``max_child_sas`` bounds the first per IKE
SA, this bounds the IKE SAs of one identity in one connection, so that one authenticated client
cannot take these from the others (strongSwan has no such limit).

- A lineage counts once: an IKE rekey's successor takes its predecessor's place at once (the old
  SA lingers until its DELETE is answered, uncounted).
- An unproven identity (eap-radius without a User-Name in the Access-Accept, ``Identity.tag``) is
  one IKE SA's alone, so it counts under its name, apart from the proven identity of that name: the
  IKE SAs of all who gave that name share one allowance, and a client that merely says "alice"
  cannot use up Alice's.
- Either side's IKE SAs count; only a responder refuses.

O(1) per IKE SA up, rekeyed or gone, and per check.
"""

from __future__ import annotations

from .identity import Identity

CapKey = tuple[str, Identity, bool]


def cap_key(name: str, peer: Identity) -> CapKey:
    """The count ``peer``'s IKE SAs of connection ``name`` go under."""
    return (name, peer.named, bool(peer.tag))


class IkeSaCounts:
    """The authenticated IKE SAs (local SPIs) of each (connection, identity), one per lineage."""

    def __init__(self) -> None:
        self._held: dict[CapKey, set[bytes]] = {}
        self._key_of: dict[bytes, CapKey] = {}

    def held(self, name: str, peer: Identity) -> int:
        return len(self._held.get(cap_key(name, peer), ()))

    def add(self, spi: bytes, name: str, peer: Identity) -> None:
        """The IKE SA with local SPI ``spi`` authenticated ``peer`` (again: nothing changes)."""
        if spi in self._key_of:
            return
        key = cap_key(name, peer)
        self._key_of[spi] = key
        self._held.setdefault(key, set()).add(spi)

    def succeed(self, old: bytes, new: bytes) -> None:
        """``new`` replaces ``old`` (an IKE rekey): the lineage stays one, under ``old``'s key."""
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

    def __len__(self) -> int:
        """Identities (per connection) that hold IKE SAs now."""
        return len(self._held)
