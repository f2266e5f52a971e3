"""Property tests of tunsec.conf: random text, token soup, mutations and any value of any key give
nothing but ConfigError."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from config_data import (
    EXAMPLE,
    KEY_IN_HEX,
    assert_no_key_material,
    manual,
    tunnel,
)
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tunsec.conf.config import parse_config
from tunsec.conf.errors import ConfigError, ConfigIssue

# --------------------------------------------------------------------------
# Property tests: nothing but ConfigError, ever
# --------------------------------------------------------------------------


def _parse_or_error(text: str, path: str = "fuzz.conf") -> list[ConfigIssue]:
    try:
        parse_config(text, path)
    except ConfigError as exc:
        assert exc.errors, "ConfigError without issues"
        return exc.errors
    return []


@settings(max_examples=400, deadline=None)
@given(st.text())
def test_random_text_only_raises_config_error(text: str) -> None:
    assume("include" not in text)
    for issue in _parse_or_error(text):
        assert issue.file == "fuzz.conf"
        assert 0 <= issue.line <= text.count("\n") + 1


_TOKENS = st.sampled_from(
    ["tunsec", "manual", "site", "{", "}", "=", " ", "  ", "\n", "\r\n", "#", '"', "\\", "\\n", "x",
     "mtu", "1400", "auto", "spi_in", "0x1001", "key_in", "0x" + KEY_IN_HEX, "local_ts", "10.0.0.0/8",
     "[tcp/80]", ",", "local_addr", "192.0.2.1", "esp", "aes256gcm16", "connections", "\t", "5m"]
)  # fmt: skip


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_TOKENS, max_size=80))
def test_token_soup_only_raises_config_error(tokens: list[str]) -> None:
    text = "".join(tokens)
    for issue in _parse_or_error(text):
        assert 1 <= issue.line <= text.count("\n") + 1
        assert_no_key_material(str(issue))


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(EXAMPLE)), st.integers(0, 20), st.text(max_size=5))
def test_mutated_example_only_raises_config_error(pos: int, cut: int, insert: str) -> None:
    assume("include" not in insert)
    text = EXAMPLE[:pos] + insert + EXAMPLE[pos + cut :]
    assume("include" not in text)
    for issue in _parse_or_error(text):
        assert issue.file == "fuzz.conf"
        assert 1 <= issue.line <= text.count("\n") + 1


def quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


_TUNNEL_KEYS = [
    "local_addr", "remote_addr", "local_port", "remote_port", "local_ts", "remote_ts", "esp",
    "spi_in", "spi_out", "key_in", "key_out", "esn", "replay_window", "life_bytes", "life_packets",
    "life_time", "rekey_bytes", "rekey_packets", "rekey_time",
]  # fmt: skip
_TUNSEC_KEYS = ["tun", "mtu", "outer_mtu", "control_socket", "workers", "log_level", "larval_timeout"]


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(_TUNNEL_KEYS), st.text(max_size=40) | st.from_regex(r"[0-9a-z/.:\[\]\-, ]{0,30}"))
def test_any_value_of_any_tunnel_key_is_a_clean_error(key: str, value: str) -> None:
    text = manual(tunnel("t", **{key: quoted(value)}))
    for issue in _parse_or_error(text):
        assert issue.key.startswith("manual.t.")
        assert issue.message


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_TUNSEC_KEYS), st.text(max_size=40))
def test_any_value_of_any_tunsec_key_is_a_clean_error(key: str, value: str) -> None:
    for issue in _parse_or_error(f"tunsec {{\n  {key} = {quoted(value)}\n}}\n"):
        assert (issue.line, issue.key) == (2, f"tunsec.{key}")


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=20).filter(lambda p: "/" not in p and ".." not in p))
def test_random_include_patterns_are_clean_errors(pattern: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "a.conf").write_text("tunsec {\n}\n")
        Path(tmp, "b.conf").write_text("garbage\n")
        Path(tmp, "sub").mkdir()
        main = os.path.join(tmp, "main.conf")
        for text in (f"include {pattern}\n", f"include {quoted(pattern)}\n"):
            for issue in _parse_or_error(text, main):
                assert issue.line >= 1


@given(st.integers(256, 2**32 - 1), st.booleans())
def test_spi_roundtrip(spi: int, as_hex: bool) -> None:
    written = hex(spi) if as_hex else str(spi)
    (t,) = parse_config(manual(tunnel(spi_in=written))).manual
    assert t.spi_in == spi
