"""The KEYMAT seeds an IKE SA derived its Child SAs' keys from, so that no two share one.

KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr) (RFC 7296 §2.17).  Without PFS only Ni | Nr tells two Child
SAs of one IKE SA apart, and a peer's nonces are 16 to 256 bytes of its choice: while our CREATE_CHILD_SA
(Ni = N) is out it can ask for a Child SA of its own with Ni = N | Z, read our fresh Nr = Y, and answer
ours with Nr = Z | Y.  Both seeds are then N | Z | Y, so both Child SAs have one KEYMAT and both sides
send under its keys from sequence number 1 (the same AES-GCM key and nonce twice on the wire; review
revrekey3 F1).  Comparing whole nonces (CreateChildTask.seen) does not see that; comparing seeds does,
however the peer splits them.  A Child SA (either role) whose Ni | Nr repeats one derived under the
IKE SA's current SK_d is refused before its keys are derived (with PFS the shared secret differs anyway,
but refusing a repeated Ni | Nr costs an honest peer nothing: each side's nonces are fresh).

Why a few recent seeds are enough: every seed holds a fresh nonce of ours (our Ni as initiator, our Nr
as responder), which no earlier seed holds unless the peer copied it from the exchange it was drawn for.
As responder we derive the moment we draw Nr, so only our request's Ni can be copied: a repeat needs
the earlier seed to be derived while that request of ours was out.  The seeds derived then are those of
the peer's requests we answer meanwhile, which create_child_sa.respond caps at SHOWN_NONCES per request
of ours (one request of ours is out at a time): RECENT holds them all, however many Child SAs the peer
made and deleted before.

Digests are kept, not the nonces: 16 bytes (BLAKE2b) whatever the nonces' lengths, in a tuple (a gateway
holds thousands of IKE SAs; a deque takes a 0.5 KiB block each).  A collision would only refuse a Child SA,
and finding one takes 2^64 work.  SK_d changes only with the IKE SA's keys (IkeSaState.install_keys: an
IKE SA rekey makes a new one), which starts the seeds afresh.
"""

from __future__ import annotations

import hashlib

# more than the seeds derived while one request of ours is out (create_child_sa.SHOWN_NONCES, plus the
# one it makes): see above
RECENT = 16


class KeymatSeeds:
    """The digests of the last ``RECENT`` Ni | Nr an IKE SA derived Child SA keys from under its SK_d."""

    __slots__ = ("_recent",)

    def __init__(self) -> None:
        self._recent: tuple[bytes, ...] = ()

    def note(self, nonce_i: bytes, nonce_r: bytes) -> None:
        """A Child SA's keys were derived from ``nonce_i | nonce_r``."""
        self._recent = (*self._recent[1 - RECENT:], _digest(nonce_i, nonce_r))

    def repeats(self, nonce_i: bytes, nonce_r: bytes) -> bool:
        """``nonce_i | nonce_r`` is the seed of a Child SA derived under this SK_d already."""
        return _digest(nonce_i, nonce_r) in self._recent


def _digest(nonce_i: bytes, nonce_r: bytes) -> bytes:
    # of the concatenation, as KEYMAT's seed has it: N | Z with Y is N with Z | Y
    return hashlib.blake2b(nonce_i + nonce_r, digest_size=16).digest()
