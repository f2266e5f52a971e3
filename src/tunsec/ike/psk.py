"""Which pre-shared key belongs to a pair of identities (RFC 7296 §2.15: the key shared by the two).

strongSwan ranks its ``secrets.ike<suffix>`` entries by how well their ids match the peer's
identity, then ours, then by their order (:func:`best_psk`, used by ``conf/secrets.find_psk`` when a
connection is loaded, and by strongSwan's credential manager for the AUTH it sends).

A connection of ``remote.id = %any`` cannot have its key picked at load: the usual road-warrior
layout gives each user an entry of their own (``ike-carol { id-gw = GW  id-user = carol }``), and
which one applies is known only from the IDi the peer sends.  :func:`psk_for_peer` picks it then,
stricter than strongSwan's verifier, which tries every entry matching either identity (with that
layout, carol's key would prove any IDi): an entry that names some other identity belongs to that
identity, and never proves this one.  What proves any identity is a group key: an entry without
ids, with ``%any``, or naming only our own identity (the README's ``ike-gw { id = GW }``).
Our own identity never selects a peer's entry (a peer claiming the gateway's id gets no user's key).
Nor does a group key prove an identity whose text an entry names under another type (an IDi of
RFC822_ADDR "dave.example" where ``ike-dave`` names the FQDN): logs, status, RADIUS and DAE show
identities as text, where the two are one user.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .constants import IdType
from .identity import Identity, dn_key
from .secret import Secret

__all__ = ["PskEntry", "PskIndex", "best_psk", "is_group_key", "owner_match", "proves_any_name", "psk_for_peer"]

MATCH_NONE, MATCH_ANY, MATCH_PERFECT = 0, 1, 20


@dataclass(frozen=True)
class PskEntry:
    """One ``secrets.ike<suffix>`` entry as the engine sees it: its ids (none: anyone) and key;
    ``name`` (the section's) goes into log lines, the key never does."""

    ids: tuple[Identity, ...]
    secret: Secret = field(repr=False)
    name: str = ""


def owner_match(ids: Sequence[Identity], ident: Identity, mine: Identity | None = None) -> int:
    """How well ``ident`` matches one of ``ids`` (none: anyone); ids equal to ``mine`` are left out."""
    if not ids:
        return MATCH_ANY
    best = MATCH_NONE
    for owner in ids:
        if owner.is_any:
            best = max(best, MATCH_ANY)
        elif mine is not None and owner.matches(mine):
            continue
        elif owner.matches(ident):
            return MATCH_PERFECT
    return best


def best_psk(entries: Sequence[PskEntry], local_id: Identity, remote_id: Identity) -> PskEntry | None:
    """strongSwan's pick (credential_manager get_shared): an entry qualifies if one of its ids
    matches either identity (or it has none); the best match of the remote identity wins, then
    the best match of the local one, then the entry written first.  A remote identity of ``%any``
    matches only entries without ids or with ``%any``."""
    best: PskEntry | None = None
    best_me = best_other = MATCH_NONE
    for entry in entries:
        me, other = owner_match(entry.ids, local_id), owner_match(entry.ids, remote_id)
        if me == MATCH_NONE and other == MATCH_NONE:
            continue
        if other > best_other or (other == best_other and me > best_me):
            best, best_me, best_other = entry, me, other
    return best


def _names_only(entry: PskEntry, local_id: Identity) -> bool:
    """The entry's ids name no identity but ours (or %any): a key of ours for any peer."""
    return all(owner.is_any or owner.matches(local_id) for owner in entry.ids)


def is_group_key(entry: PskEntry, local_id: Identity) -> bool:
    """The entry names no identity but ours (or none, or %any): it proves any peer (the module doc),
    and is the only kind a connection of ``remote.id = %any`` may take as its own key at load."""
    return _names_only(entry, local_id)


def proves_any_name(entry: PskEntry, local_id: Identity) -> bool:
    """The entry proves whatever identity a peer sends (a group key, or one with %any among its
    ids): whoever holds it names itself as it likes, and the name means nothing beyond the key."""
    return any(owner.is_any for owner in entry.ids) or _names_only(entry, local_id)


def _text(ident: Identity) -> str:
    return str(ident.named).casefold()


def _claims_its_text(entry: PskEntry, local_id: Identity, peer_id: Identity, text: str) -> bool:
    """The entry names someone whose text (``text``: the peer's, _text) is the peer's under another
    type ("dave.example" as an FQDN and as an RFC822_ADDR): logs, status and RADIUS show the two alike,
    so no group key proves it."""
    return any(not o.is_any and not o.matches(local_id) and not o.matches(peer_id) and _text(o) == text
               for o in entry.ids)


def psk_for_peer(entries: Sequence[PskEntry], local_id: Identity, peer_id: Identity,
                 text: str | None = None) -> PskEntry | None:
    """The key the peer that sent ``peer_id`` must prove (and we prove ourselves with), or None:
    an entry naming that identity (best_psk's ranking), else a group key (see the module doc), unless
    an entry names the peer's text as another identity type.  ``text``: _text(peer_id), if the
    caller has it (made once, not once per entry)."""
    if not entries:
        return None
    if text is None:
        text = _text(peer_id)
    best: PskEntry | None = None
    best_me = best_other = MATCH_NONE
    claimed = False
    for entry in entries:
        claimed = claimed or _claims_its_text(entry, local_id, peer_id, text)
        other = owner_match(entry.ids, peer_id, mine=local_id)
        me = owner_match(entry.ids, local_id)
        if other == MATCH_NONE and not (me > MATCH_NONE and _names_only(entry, local_id)):
            continue
        if best is None or other > best_other or (other == best_other and me > best_me):
            best, best_me, best_other = entry, me, other
    return None if claimed and best_other < MATCH_PERFECT else best


class PskIndex:
    """``peer_psks`` of one connection, for :func:`psk_for_peer` at each IKE_AUTH without a pass over
    every entry (a gateway of 10,000 users took ~0.1 s per login that way, any peer's IDi could ask):
    the entries that could be a peer's are looked up by its identity, and only they are ranked."""

    def __init__(self, entries: Sequence[PskEntry], local_id: Identity) -> None:
        self._entries = tuple(entries)
        self._local = local_id
        self._by_id: dict[Identity, list[int]] = {}
        self._group: list[int] = []     # prove anyone (psk_for_peer's group keys, and ids with %any)
        # a DN matches re-encoded (dn_equal): looked up by what dn_equal compares, never compared one
        # by one (an IDi is the peer's choice before it proves anything: 1,000 DN entries cost ~60 ms
        # per IKE_AUTH so); one that does not parse equals only its own bytes (_by_id)
        self._by_dn: dict[object, list[int]] = {}
        self._by_text: dict[str, list[int]] = {}   # what psk_for_peer's _claims_its_text looks for
        for n, entry in enumerate(self._entries):
            if proves_any_name(entry, local_id):
                self._group.append(n)
            for owner in entry.ids:
                if owner.is_any or owner.matches(local_id):
                    continue
                self._by_id.setdefault(owner, []).append(n)
                self._by_text.setdefault(_text(owner), []).append(n)
                key = dn_key(owner.data) if owner.type == IdType.DER_ASN1_DN else None
                if key is not None:
                    self._by_dn.setdefault(key, []).append(n)

    def lookup(self, peer_id: Identity) -> PskEntry | None:
        """psk_for_peer over all the entries, ranked among those that can qualify (in file order)."""
        text = _text(peer_id)
        found = [*self._by_id.get(peer_id.named, ()), *self._by_text.get(text, ()), *self._group]
        key = dn_key(peer_id.data) if peer_id.type == IdType.DER_ASN1_DN else None
        if key is not None:
            found += self._by_dn.get(key, ())
        return psk_for_peer([self._entries[n] for n in sorted(set(found))], self._local, peer_id, text)
