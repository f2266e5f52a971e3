"""Review revrekey4 F1: the KEYMAT seed check (h/fixrekey3, keymat_seeds.py) digests Ni | Nr only, but with
PFS the seed KEYMAT is derived from is g^ir (new) | Ni | Nr (RFC 7296 §2.17; crypto.derive_child_keys).

A connection whose children differ in PFS (here "net" with x25519, "web" without; or one child whose
proposals allow both) lets the peer move the bytes between the shared secret and the nonces.  While our
PFS rekey of "net" (Ni = N, KEi) is out, the peer picks its own KEr for its answer and so knows the new
shared secret G of that rekey before answering.  It asks for a "web" Child SA (no KE) with Ni = G | N | Z,
reads our Nr = Y, and answers our rekey with KEr and Nr = Z | Y.  Both seeds are G | N | Z | Y under one
SK_d: one KEYMAT for two Child SAs (our outbound key of the one is our inbound key of the other), the
(key, nonce) pair used twice from sequence number 1.  The digests compared are of N | Z | Y and of
G | N | Z | Y: no repeat is seen, and no whole nonce equals one of ours (``seen``, ``_shown``).
"""

from __future__ import annotations

import dataclasses
import random

import pytest
from test_engine_more import A, B, cfg, only
from test_nonce_reflection import _next_nonce_is, _recording
from test_rekey_collision import CCSA, Reordering

import tunsec.ike.exchanges.create_child_sa as ccsa
from tunsec.ike.config import IkeConfig, child_config
from tunsec.ike.constants import DhGroup
from tunsec.ike.dh import KeyExchange, generate_key_exchange
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaUp
from tunsec.ike.exchanges.create_child_sa import CreateChildTask
from tunsec.ike.testing import EPOCH, Network

SPLIT = bytes(range(16))


def _mixed_pfs(initiator: bool) -> IkeConfig:
    """One connection, two children: "net" with PFS (x25519), "web" without."""
    base = cfg(initiator)
    local, remote = ("10.1.0.0/16", "10.2.0.0/16") if initiator else ("10.2.0.0/16", "10.1.0.0/16")
    children = (child_config("net", local, remote, "aes128gcm16-x25519"),
                child_config("web", local.replace("0.0/16", "9.0/24"), remote.replace("0.0/16", "9.0/24"),
                             "aes128gcm16"))
    return dataclasses.replace(base, children=children)


def _answer_with(monkeypatch: pytest.MonkeyPatch, ke: KeyExchange) -> None:
    """The peer's next key pair for a Child SA answer is ``ke`` (chosen ahead: the attacker's own)."""
    used: list[bool] = []

    def gen(group: int) -> KeyExchange:
        if not used and group == ke.group:
            used.append(True)
            return ke
        return generate_key_exchange(group)
    monkeypatch.setattr(ccsa, "generate_key_exchange", gen)


def test_a_peer_moving_the_pfs_secret_into_its_nonce_does_not_get_two_child_sas_of_one_key(
        monkeypatch: pytest.MonkeyPatch) -> None:
    rng_a, rng_b = random.Random(7), random.Random(1007)
    net = Network()
    a = net.add(A, IkeEndpoint([_mixed_pfs(True)], rng_a.randbytes, wall_clock=lambda: EPOCH))
    b = net.add(B, IkeEndpoint([_mixed_pfs(False)], rng_b.randbytes, wall_clock=lambda: EPOCH))
    a.initiate("conn", "net", net.now)
    net.run()
    assert only(net.take(A), ChildSaUp) and only(net.take(B), ChildSaUp)
    victim, attacker = b.sas[0], a.sas[0]
    ours = _recording(victim)
    victim.rekey_child(victim.children[0].unique_id)  # B's PFS rekey of "net": Ni = N, KEi
    pending = victim._pending
    assert pending is not None and isinstance(pending.task, CreateChildTask)
    kei = pending.task._ke                            # its public half is on the wire
    assert kei is not None and kei.group == DhGroup.CURVE25519
    ni = ours[-1]
    wire = Reordering(net)                            # B's rekey waits, unanswered, in flight
    ker = generate_key_exchange(DhGroup.CURVE25519)   # the KEr the attacker will answer it with
    shared = ker.shared_secret(kei.public)            # ... so it knows the rekey's g^ir now
    _answer_with(monkeypatch, ker)
    _next_nonce_is(attacker, shared + ni + SPLIT)     # 80 bytes: g^ir | N | Z, a "web" Child SA's Ni
    attacker.initiate("web")                          # no PFS: its seed is that Ni | our Nr
    wire.flight += net.collect()
    assert wire.deliver(A, CCSA, False)               # B answers it with a fresh Nr = Y ...
    nr = ours[-1]
    assert wire.deliver(B, CCSA, True)                # ... which the attacker reads
    _next_nonce_is(attacker, SPLIT + nr)              # Nr = Z | Y
    assert wire.deliver(B, CCSA, False)               # B's rekey reaches A at last
    assert wire.deliver(A, CCSA, True)                # A answers with KEr and Z | Y
    wire.run()
    ups = [e for e in net.take(B) if isinstance(e, ChildSaUp)]
    assert sorted(up.child for up in ups) == ["net", "web"], ups   # both up at B (on main)
    keys = [k.reveal() for up in ups for k in (up.key_in, up.key_out)]
    # counted, so that a failure prints no key: on main 2 of B's 4 keys are shared
    shared_keys = len(keys) - len(set(keys))
    assert shared_keys == 0
