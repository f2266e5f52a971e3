"""Review revrekey6 F1 (unit half; the end-to-end proof is tests/e2e/test_review_revrekey6_packet_limit_storm.py).

A Child SA's packet and byte soft limits are drawn per SA as rekey_* minus a random 0..rand_*,
rand_* by default life_* - rekey_* (strongSwan's defaults).  When that random part exceeds rekey_*
(life_* at least twice rekey_*), conf/children.py rekey_limit floors the difference at 1: most SAs
then get a soft limit of one packet (or byte) and rekey at their first packet.  The time soft
limit's jitter is bounded by the period (ike/sa_timers.jittered: min(rand_time, rekey_time)); the
byte and packet ones should be bounded alike, so that their limit is spread over the configured
range, not piled at 1.
"""

from __future__ import annotations

import random

from connections_data import with_line

from tunsec.conf.children import Child
from tunsec.conf.config import parse_config

DRAWS = 400


def _child(lines: list[str]) -> Child:
    text = with_line("child", lines[0])
    for line in lines[1:]:
        text = with_line("child", line, text)
    (child,) = parse_config(text).connections[0].children
    return child


def test_a_soft_packet_limit_ten_times_under_its_hard_one_is_not_piled_at_one_packet() -> None:
    child = _child(["rekey_packets = 40000", "life_packets = 400000"])
    assert child.rand_packets == 360000   # strongSwan's default: life - rekey
    draw = random.Random(6).randrange      # a seeded stand-in for secrets.randbelow
    limits = sorted(child.soft_lifetime(draw).packets for _ in range(DRAWS))
    at_one = sum(1 for p in limits if p == 1)
    # bounded as the time limit's jitter is (0..rekey), about half would lie under 20,000 and none
    # at 1 in 400 draws; on main ~89 % are 1
    assert at_one == 0 and limits[DRAWS // 2] >= 40000 // 4, (at_one, limits[DRAWS // 2])


def test_a_soft_byte_limit_ten_times_under_its_hard_one_is_not_piled_at_one_byte() -> None:
    child = _child(["rekey_bytes = 1g", "life_bytes = 10g"])
    draw = random.Random(6).randrange
    limits = sorted(child.soft_lifetime(draw).bytes for _ in range(DRAWS))
    at_one = sum(1 for b in limits if b == 1)
    assert at_one == 0 and limits[DRAWS // 2] >= (1 << 30) // 4, (at_one, limits[DRAWS // 2])
