"""Authenticated IKE SAs by (connection, peer identity), so INITIAL_CONTACT (and ``peer_sas``) find a
peer's IKE SAs without a pass over every SA: a thousand clients connecting made that O(N^2).  The
endpoint keeps it up to date as its SAs change (IkeEndpoint._collect_one: up, a rekey's successor,
closed).  Entries are our SPIs of the IKE SAs; the endpoint maps them to the SAs."""

from __future__ import annotations

PeerKey = tuple[str, object]   # (connection name, the peer's authenticated identity)


class SpisByPeer:
    def __init__(self) -> None:
        # one SPI as itself, more as a set: a set is 216 bytes, and nearly every peer has one IKE SA
        self._by_peer: dict[PeerKey, bytes | set[bytes]] = {}
        self._peer_key: dict[bytes, PeerKey] = {}

    def add(self, spi: bytes, key: PeerKey) -> None:
        """Note the IKE SA whose SPI is ``spi`` under ``key`` (nothing if it is noted already)."""
        if spi in self._peer_key:
            return
        self._peer_key[spi] = key
        spis = self._by_peer.get(key)
        if spis is None:
            self._by_peer[key] = spi
        elif isinstance(spis, bytes):
            self._by_peer[key] = {spis, spi}
        else:
            spis.add(spi)

    def spis(self, key: PeerKey) -> list[bytes]:
        spis = self._by_peer.get(key, ())
        return [spis] if isinstance(spis, bytes) else list(spis)

    def remove(self, spi: bytes) -> None:
        """Forget ``spi`` (nothing if it was never noted)."""
        key = self._peer_key.pop(spi, None)
        if key is None:
            return
        spis = self._by_peer.get(key)
        if isinstance(spis, set):
            spis.discard(spi)
            if len(spis) == 1:
                self._by_peer[key] = spis.pop()
        elif spis == spi:
            del self._by_peer[key]
