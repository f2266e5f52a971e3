"""Review revrestart F2 (its proof, made stricter, and the cases around it): a manual key's state is
the key's "whatever SPI, direction or tunnel uses it"
(seqstate.py), but an inbound SA's file records what this host *accepted*, not what was *sent* under
the key: the peer's sender reserves 2^16 numbers at a time and sends numbers this host never saw (while
it was down, or lost on the way).  A key that was our key_in and becomes our key_out (a reload or a
restart whose config moves it: key_in/key_out swapped, the key of a removed tunnel given to another's
key_out) starts at the inbound file's limit, below numbers the peer already sent under the same key:
the same AES-GCM (key, nonce) twice, from two senders.

The two hosts here are two state directories and the real SeqState; the peer's sent numbers are what
its persisted reservation allowed (its worker never sends above it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunsec.dataplane.pipe import Direction
from tunsec.seqstate import SeqState, StateError, legacy_fingerprint
from tunsec.statedir import init_state_dir

KEY = bytes(range(40, 60))   # 16 bytes of AES-128 key and 4 of salt: the GCM nonce is salt || seq
SPI_A_TO_B = 0xC0020001
SPI_B_TO_A = 0xC0020002


def test_a_key_moved_from_key_in_to_key_out_cannot_repeat_the_peers_nonces(tmp_path: Path) -> None:
    """On main B starts sending at 16 (its inbound file's limit), under the key A sent 1..1000 with:
    nonces 17..1000 twice.  Expected: B refuses the key as an outbound one (a StateError saying to
    generate a new key), or starts past everything A may have sent under it."""
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    init_state_dir(a_dir)
    init_state_dir(b_dir)
    # A sends under KEY (its key_out), B receives under it (its key_in)
    a_out = SeqState.open(a_dir, "to-b", SPI_A_TO_B, Direction.OUT, KEY, False)
    a_start, a_limit, _ = a_out.restart()
    b_in = SeqState.open(b_dir, "to-a", SPI_A_TO_B, Direction.IN, KEY, False)
    b_in.restart()
    # A's worker sends 1..1000 (within its persisted reservation); B was down or they were lost: B's
    # inbound state never moved past its first block
    sent = 1000
    assert a_start < sent <= a_limit
    # B's operator moves KEY to B's key_out (and A's to its key_in): B restarts with it, refused
    with pytest.raises(StateError, match=r"last used to receive .* Generate a new key for this key_out"):
        SeqState.open(b_dir, "to-a", SPI_B_TO_A, Direction.OUT, KEY, False)


def test_a_receiving_key_of_an_older_version_is_refused_as_a_sending_key_too(tmp_path: Path) -> None:
    """A version 1 file (named by direction, SPI and key) of the key as inbound: no taking over its
    limit for a sender either."""
    init_state_dir(tmp_path)
    name = f"manual-in-{SPI_A_TO_B:08x}-{legacy_fingerprint(KEY, SPI_A_TO_B, Direction.IN)[:16]}.json"
    doc = {"version": 1, "key_id": legacy_fingerprint(KEY, SPI_A_TO_B, Direction.IN), "spi": SPI_A_TO_B,
           "direction": "in", "limit": 16, "block": 16}
    (tmp_path / name).write_text(json.dumps(doc))
    with pytest.raises(StateError, match="last used to receive"):
        SeqState.open(tmp_path, "to-a", SPI_B_TO_A, Direction.OUT, KEY, False)
    assert SeqState.open(tmp_path, "from-a", SPI_A_TO_B, Direction.IN, KEY, False).limit == 16


def test_a_sending_key_goes_on_as_sender_or_receiver(tmp_path: Path) -> None:
    """What stays allowed: a sending key restarted (any SPI) goes on past what it reserved, and used
    to receive it counts everything it may have sent as seen."""
    init_state_dir(tmp_path)
    out = SeqState.open(tmp_path, "t", SPI_A_TO_B, Direction.OUT, KEY, False)
    _, limit, _ = out.restart()
    again = SeqState.open(tmp_path, "t", SPI_B_TO_A, Direction.OUT, KEY, False)
    assert again.restart()[0] == limit
    received = SeqState.open(tmp_path, "t", SPI_A_TO_B, Direction.IN, KEY, False)
    assert received.restart()[0] == again.limit > limit
