"""Property tests of the swanctl.conf parser: random text, token soup and any value of any key give
nothing but ConfigError, with a file and line."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest
from connections_data import (
    PSK_TEXT,
    with_line,
)
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tunsec.conf.config import parse_config
from tunsec.conf.errors import ConfigError, ConfigIssue

# --------------------------------------------------------------------------
# Property tests: nothing but ConfigError, ever
# --------------------------------------------------------------------------


def _parse_or_error(text: str, path: str) -> list[ConfigIssue]:
    try:
        parse_config(text, path)
    except ConfigError as exc:
        assert exc.errors, "ConfigError without issues"
        return exc.errors
    return []


@pytest.fixture(scope="module")
def empty_dir() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        yield os.path.join(tmp, "fuzz.conf")  # no credential folders next to it


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text())
def test_random_text_only_raises_config_error(empty_dir: str, text: str) -> None:
    assume("include" not in text)
    for issue in _parse_or_error(text, empty_dir):
        assert issue.file == empty_dir


_TOKENS = st.sampled_from(
    ["connections", "secrets", "authorities", "c", "children", "local", "remote", "local-2", "ike", "private",
     "{", "}", "=", " ", "\n", "#", '"', "x", "auth", "psk", "pubkey", "id", "moon", "@#0a", "%any", "secret",
     "0x0102", "0sAQI=", "local_ts", "remote_ts", "dynamic", "10.0.0.0/8", "[tcp/80]", ",", "proposals",
     "esp_proposals", "aes128gcm16", "-", "prfsha256", "ecp256", "start_action", "start", "remote_addrs",
     "192.0.2.1", "version", "2", "mode", "certs", "cacerts", "file", "cacert", "mobike", "no", "yes"]
)  # fmt: skip


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(st.lists(_TOKENS, max_size=80))
def test_token_soup_only_raises_config_error(empty_dir: str, tokens: list[str]) -> None:
    text = "".join(tokens)
    for issue in _parse_or_error(text, empty_dir):
        assert issue.file == empty_dir and 1 <= issue.line <= text.count("\n") + 1


_KEYS = [
    ("conn", k) for k in ("version", "local_addrs", "remote_addrs", "local_port", "remote_port", "proposals", "encap",
                          "mobike", "dpd_delay", "fragmentation", "send_cert", "unique", "keyingtries", "rekey_time",
                          "dscp", "childless", "if_id_in")
] + [("local", k) for k in ("auth", "id", "round")] + [("remote", k) for k in ("auth", "id", "revocation")] + [
    ("child", k) for k in ("local_ts", "remote_ts", "esp_proposals", "mode", "start_action", "close_action",
                           "dpd_action", "rekey_time", "life_bytes", "replay_window", "hw_offload", "copy_dscp")
] + [("secret", k) for k in ("id-x", "secret")]  # fmt: skip


def quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(_KEYS), st.text(max_size=40) | st.from_regex(r"[0-9a-z/.:\[\]\-,%@# ]{0,30}"))
def test_any_value_of_any_key_is_a_clean_error(empty_dir: str, where_key: tuple[str, str], value: str) -> None:
    where, key = where_key
    text = with_line(where, f"{key} = {quoted(value)}")
    for issue in _parse_or_error(text, empty_dir):
        assert issue.message and issue.line >= 1
        assert PSK_TEXT not in str(issue)
