"""The KEYMAT seeds an IKE SA derived its Child SAs' keys from, so that no two share one.

KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr) (RFC 7296 §2.17).  Without PFS only Ni | Nr tells two Child
SAs of one IKE SA apart, and a peer's nonces are 16 to 256 bytes of its choice: while our CREATE_CHILD_SA
(Ni = N) is out it can ask for a Child SA of its own with Ni = N | Z, read our fresh Nr = Y, and answer
ours with Nr = Z | Y.  Both seeds are then N | Z | Y, so both Child SAs have one KEYMAT and both sides
send under its keys from sequence number 1 (the same AES-GCM key and nonce twice on the wire; review
revrekey3 F1).  Comparing whole nonces (CreateChildTask.seen) does not see that; comparing seeds does,
however the peer splits them.  The seed compared is the whole of it, the new shared secret too: with
PFS on one side only (a connection's children differ, or its proposals make PFS optional) the peer that
answers our PFS rekey picks its KEr and so knows that rekey's g^ir = G before it answers; it asks
meanwhile for a Child SA without PFS with Ni = G | N | Z and answers ours with Nr = Z | Y, and both
seeds are G | N | Z | Y, where Ni | Nr alone differ (review revrekey4 F1).  A Child SA (either role)
whose seed repeats one derived under the IKE SA's current SK_d is refused before its keys are derived
(refusing costs an honest peer nothing: each side's nonces and key pairs are fresh).

Why a few recent seeds are enough: every seed holds a fresh nonce of ours (our Ni as initiator, our Nr
as responder), which no earlier seed holds unless the peer copied it from the exchange it was drawn for.
As responder we derive the moment we draw Nr, so only our request's Ni can be copied: a repeat needs
the earlier seed to be derived while that request of ours was out.  The seeds derived then are those of
the peer's requests we answer meanwhile, which create_child_sa.respond caps at SHOWN_NONCES per request
of ours (one request of ours is out at a time): RECENT holds them all, however many Child SAs the peer
made and deleted before.

Digests are kept, not the seeds (with PFS a seed holds the shared secret, which is kept nowhere else):
16 bytes (BLAKE2b) whatever the nonces' lengths, in a tuple (a gateway holds thousands of IKE SAs; a
deque takes a 0.5 KiB block each).  A collision would only refuse a Child SA,
and finding one takes 2^64 work.  SK_d changes only with the IKE SA's keys (IkeSaState.install_keys: an
IKE SA rekey makes a new one), which starts the seeds afresh.
"""

from __future__ import annotations

import hashlib

# more than the seeds derived while one request of ours is out (create_child_sa.SHOWN_NONCES, plus the
# one it makes): see above
RECENT = 16


class KeymatSeeds:
    """The digests of the last ``RECENT`` seeds an IKE SA derived Child SA keys from under its SK_d."""

    __slots__ = ("_recent",)

    def __init__(self) -> None:
        self._recent: tuple[bytes, ...] = ()

    def note(self, seed: bytes) -> None:
        """A Child SA's keys were derived from ``seed`` (crypto.child_seed)."""
        self._recent = (*self._recent[1 - RECENT:], _digest(seed))

    def repeats(self, seed: bytes) -> bool:
        """``seed`` (crypto.child_seed) is that of a Child SA derived under this SK_d already."""
        return _digest(seed) in self._recent


def _digest(seed: bytes) -> bytes:
    # of the whole concatenation, as KEYMAT has it: G | N with Z | Y is G with N | Z | Y
    return hashlib.blake2b(seed, digest_size=16).digest()
