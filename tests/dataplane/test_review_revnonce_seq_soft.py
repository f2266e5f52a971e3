"""Review revnonce F1 (report-only): a Child SA without ESN runs into 2^32 with no warning ahead.

The fast path never wraps (csrc/dp.c next_seq: the SA dies at its last number, SEQ_OVERFLOW, and
no (key, nonce) repeats), but RFC 4303 §3.3.3 asks for a new SA to be established *before* the
2^32nd packet.  An IKE Child SA is installed with soft packet/byte limits only when rekey_packets /
rekey_bytes are set (conf/children.py soft_limits; the defaults are 0) and without ESN by default
(ike/proposals.py adds NO_ESN), so its first word of the end is the hard EXPIRE: the IKE service then
deletes the Child SA (services/ike/installs.py expired: "reached its hard limit; deleting") instead
of rekeying it make-before-break, and its traffic is dropped (seq_overflow) from the 2^32nd packet
on.  At 1.2 M packets/s (one site-to-site SA of small packets, or ~13 Gbit/s of 1400 bytes) that is
before the default hourly rekey.

The SA here is installed as the IKE service installs one with the defaults (no ESN, no soft limit)
and starts 2^16 numbers before the end: a soft EXPIRE (which the service answers with a rekey)
should come before the hard one.  Fails on main: only the hard SEQ_OVERFLOW comes.
"""

from __future__ import annotations

from esp_ref import inner, new_key, sender

from tunsec.dataplane.fastpath import Drop, EventType
from tunsec.dataplane.pipe import Direction

SPI = 0x2001
PKT = inner(4, b"near the end")


def test_an_sa_without_esn_warns_softly_before_its_sequence_numbers_run_out() -> None:
    dp = sender(new_key(), SPI, esn=False, seq_start=2**32 - 2**16)   # soft=None: the IKE default
    events = []
    for _ in range(2**16 + 1):
        drop = dp.outbound(PKT)[2]
        events += [(e.hard, e.reason) for e in dp.events() if e.type is EventType.EXPIRE and e.spi == SPI
                   and e.direction is Direction.OUT]
        if drop is not Drop.NONE:
            break
    assert drop is Drop.SEQ_OVERFLOW, drop
    hard = [i for i, (is_hard, _) in enumerate(events) if is_hard]
    soft = [i for i, (is_hard, _) in enumerate(events) if not is_hard]
    assert hard, events
    assert soft and soft[0] < hard[0], (
        f"EXPIREs before the 2^32nd packet: {events}: no soft one, so the IKE service deletes the Child SA "
        "at its last number instead of rekeying it before (RFC 4303 §3.3.3)")
