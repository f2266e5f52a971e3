"""Established IKE SAs by our identity and the identity their peer sent, for an initiator's
INITIAL_CONTACT (IkeEndpoint._has_contact, strongSwan's has_contact): another IKE SA with the same
identities is up, so the peer must not be told we have none left.

Each initiator's IKE_AUTH asks it.  A pass over every established IKE SA of our identity compared
the peer's identity with the connection's remote id per SA (a DN parsed each time: 143 ms at
10,000 road warriors with certificates on a gateway that also initiates, review revperf R2); the
endpoint keeps this index as its SAs change (IkeEndpoint._collect_one, as EstablishedByAddress),
and a question costs the IKE SAs that answer it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tunsec.ike.identity import Identity
from tunsec.policy.selector import parse_ip

from .sa import IkeSa, State

# (our identity, the peer's address family) -> its SAs by the peer's identity (Identity.match_key)
_Family = tuple[Identity, int]


@dataclass(slots=True)
class _Entry:
    local: Identity   # what it was indexed under, as the SA had it: a change is seen without a parse
    sent: Identity
    address: str
    family: _Family
    peer: object


class EstablishedByIdentity:
    """IKE SAs that were established when last collected, whose peer's identity is known."""

    def __init__(self) -> None:
        self._of: dict[bytes, _Entry] = {}   # local SPI -> where it is indexed
        # a peer's IKE SA as itself, more as a dict by local SPI (nearly every peer has one: a dict is ~200 bytes)
        self._by: dict[_Family, dict[object, IkeSa | dict[bytes, IkeSa]]] = {}

    def __len__(self) -> int:
        return len(self._of)

    def follow(self, sa: IkeSa) -> None:
        """``sa`` changed: indexed while it is established, under its identities and its peer's family."""
        spi = sa.local_spi
        old = self._of.get(spi)
        sent = sa.peer_sent_id if sa.state is State.ESTABLISHED else None
        if old is not None and sent is old.sent and sa.config.local.id is old.local \
                and sa.remote_addr[0] == old.address:
            return
        if old is not None:
            self._remove(spi, old)
        if sent is None:
            return
        try:
            version = parse_ip(sa.remote_addr[0]).version
        except ValueError:
            return   # not an address: no family to compare
        entry = _Entry(sa.config.local.id, sent, sa.remote_addr[0], (sa.config.local.id, version), sent.match_key())
        self._of[spi] = entry
        peers = self._by.setdefault(entry.family, {})
        there = peers.get(entry.peer)
        if there is None:
            peers[entry.peer] = sa
        elif isinstance(there, dict):
            there[spi] = sa
        else:
            peers[entry.peer] = {there.local_spi: there, spi: sa}

    def forget(self, spi: bytes) -> None:
        """The IKE SA closed."""
        if (old := self._of.get(spi)) is not None:
            self._remove(spi, old)

    def _remove(self, spi: bytes, entry: _Entry) -> None:
        del self._of[spi]
        peers = self._by[entry.family]
        there = peers[entry.peer]
        if isinstance(there, dict):
            del there[spi]
            if len(there) == 1:
                peers[entry.peer] = next(iter(there.values()))
            return
        del peers[entry.peer]
        if not peers:
            del self._by[entry.family]

    def any_up(self, local: Identity, remote: Identity, version: int) -> bool:
        """Whether an IKE SA of our identity ``local`` is established with a peer that ``remote`` (a
        connection's remote id, %any too) accepts, in the IP ``version`` family."""
        peers = self._by.get((local, version))
        if peers is None:
            return False
        groups = peers.values() if remote.is_any else [peers.get(remote.match_key())]
        # live: one may have begun its delete since it was collected
        return any(sa.state is State.ESTABLISHED for there in groups for sa in _sas(there))


def _sas(there: IkeSa | dict[bytes, IkeSa] | None) -> Iterable[IkeSa]:
    return () if there is None else there.values() if isinstance(there, dict) else (there,)
