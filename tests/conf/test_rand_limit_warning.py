"""A child's explicit rand_packets/rand_bytes at or above its rekey_* loads with a warning naming it
(conf/lifetime_warnings.py): the random part is cut at rekey_* (children.rekey_limit), so the value
written is not the one followed.  strongSwan's default rand_* (life_* - rekey_*) is not warned about."""

from __future__ import annotations

from connections_data import with_line

from tunsec.conf.config import parse_config


def _warnings(lines: list[str]) -> list[str]:
    text = with_line("child", lines[0])
    for line in lines[1:]:
        text = with_line("child", line, text)
    return [str(w) for w in parse_config(text).warnings]


def test_an_explicit_rand_packets_not_below_rekey_packets_is_a_warning_naming_its_key() -> None:
    (warning,) = _warnings(["rekey_packets = 4000", "rand_packets = 4000", "life_packets = 40000"])
    assert ".children.net-net.rand_packets: 4000 is not below rekey_packets (4000)" in warning, warning


def test_an_explicit_rand_bytes_above_rekey_bytes_is_a_warning_naming_its_key() -> None:
    (warning,) = _warnings(["rekey_bytes = 1m", "rand_bytes = 2m", "life_bytes = 10m"])
    assert ".rand_bytes: 2097152 is not below rekey_bytes (1048576)" in warning, warning


def test_the_default_random_part_and_one_below_rekey_load_without_a_warning() -> None:
    assert _warnings(["rekey_packets = 4000", "life_packets = 40000"]) == []   # default rand 36,000: cut quietly
    assert _warnings(["rekey_packets = 4000", "rand_packets = 3999", "life_packets = 40000"]) == []
    assert _warnings(["rand_packets = 5000"]) == []   # no packet soft limit: nothing to jitter
