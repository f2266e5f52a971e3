"""Review revnonce (report-only): the IKE side of "a (key, nonce) pair is never used twice".

A guard, not a proof of a bug (it passes on main): two engines on the fake clock, a lossy link that
also delivers datagrams twice (retransmissions and stored responses sent again), Child SA and IKE SA
rekeys started by both sides at once (collisions), and every SK payload sealed meanwhile recorded by
(SK_e, salt, IV).  AES-GCM's IV is a per-direction counter (sk.SkCrypter), so an IV may repeat only
if a crypter were made again for keys already used (install_keys run twice on one IKE SA, a crypter
copied); the Child SAs' outbound keys (KEYMAT) may repeat only if a seed repeated (keymat_seeds.py).
"""

from __future__ import annotations

import collections
import random

import pytest
from test_engine import A, B, make_net

from tunsec.ike import sk
from tunsec.ike.events import ChildSaUp
from tunsec.ike.testing import Network, Sent

Sealed = tuple[bytes, bytes, bytes]   # (SK_e, salt, IV)


@pytest.fixture
def sealed(monkeypatch: pytest.MonkeyPatch) -> collections.Counter[Sealed]:
    """Every AES-GCM SK/SKF seal of the test, counted by (key, salt, IV)."""
    seen: collections.Counter[Sealed] = collections.Counter()
    real = sk.SkCrypter.seal

    def seal(self: sk.SkCrypter, aad: bytes, padded: bytes) -> bytes:
        out = real(self, aad, padded)
        if self._aead:
            seen[(bytes(self._gcm_key), bytes(self._salt), out[: self.iv_len])] += 1
        return out

    monkeypatch.setattr(sk.SkCrypter, "seal", seal)
    return seen


def _lossy(net: Network, rnd: random.Random) -> None:
    """30% of the datagrams lost, 20% of the rest delivered twice (once more at once)."""
    deliver = net.deliver

    def twice(sent: Sent) -> None:
        deliver(sent)
        if rnd.random() < 0.2:
            deliver(sent)

    net.drop = lambda _sent: rnd.random() < 0.3
    net.deliver = twice   # type: ignore[method-assign]


@pytest.mark.parametrize("seed", range(6))
def test_no_sk_iv_nor_child_key_twice_across_loss_duplicates_and_rekey_collisions(
        seed: int, sealed: collections.Counter[Sealed]) -> None:
    rnd = random.Random(seed)
    net, a, b = make_net()
    _lossy(net, rnd)
    a.initiate("a-to-b", "net", net.now)
    net.run(until=net.now + 100)
    for _ in range(6):
        for node in (a, b):   # both sides in the same turn: collisions
            for sa in list(node.sas):
                if rnd.random() < 0.6:
                    for child in sa.children:
                        sa.rekey_child(child.unique_id)
                if rnd.random() < 0.3:
                    sa.rekey()
        net.run(until=net.now + 200)
    keys: collections.Counter[tuple[str, bytes]] = collections.Counter()
    for ip in (A, B):
        keys.update((ip, ev.key_out.reveal()) for ev in net.take(ip) if isinstance(ev, ChildSaUp))
    assert sum(keys.values()) > 1, "no Child SA came up: the scenario proves nothing"
    assert sum(sealed.values()) > 10
    assert [n for n in sealed.values() if n > 1] == [], "an SK IV used twice under one key"
    assert [n for n in keys.values() if n > 1] == [], "one Child SA outbound key installed twice"
