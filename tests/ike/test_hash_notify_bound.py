"""SIGNATURE_HASH_ALGORITHMS (RFC 7427 §4) of an IKE_SA_INIT: what a half-open IKE SA keeps of it
is bounded by what we know, not by what the peer sent (review of 2026-12-03, ninth session)."""

from __future__ import annotations

import struct

from tunsec.ike.constants import HashAlgorithm, NotifyType
from tunsec.ike.exchanges.ike_sa_init import _peer_hashes
from tunsec.ike.message import NotifyPayload


def _notify(values: range | list[int]) -> list[NotifyPayload]:
    return [NotifyPayload(NotifyType.SIGNATURE_HASH_ALGORITHMS, b"".join(struct.pack("!H", v) for v in values))]


def test_a_notify_of_every_value_keeps_only_the_known_hashes() -> None:
    assert _peer_hashes(_notify(range(32768))) == {int(h) for h in HashAlgorithm}


def test_unknown_hashes_only_are_no_hashes() -> None:
    assert _peer_hashes(_notify([100, 200, 65535])) == frozenset()


def test_what_strongswan_sends_is_kept() -> None:
    assert _peer_hashes(_notify([2, 3, 4, 5])) == {2, 3, 4, 5}
