"""The tunsec-only IKE retransmission settings (tunsec { retransmit_timeout/_base/_tries }),
named after strongswan.conf's charon.retransmit_*, and how they reach the engine."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunsec.config import ConfigError, parse_config
from tunsec.ike.config import RetransmitConfig
from tunsec.ike_connections import connections_from_config

CONNECTION = """
connections {
  gw {
    remote_addrs = 192.0.2.2
    local { auth = psk
            id = a.example }
    remote { auth = psk
             id = b.example }
    children { net { local_ts = 10.1.0.0/24
                     remote_ts = 10.2.0.0/24 } }
  }
}
secrets { ike { secret = s3cret } }
"""


def test_defaults_are_strongswans_and_reach_the_engine() -> None:
    cfg = parse_config(CONNECTION)
    t = cfg.tunsec
    assert (t.retransmit_timeout, t.retransmit_base, t.retransmit_tries) == (4.0, 1.8, 5)
    (conn,) = connections_from_config(cfg)
    assert conn.ike.retransmit == RetransmitConfig()


def test_settings_reach_every_connection() -> None:
    text = "tunsec {\n  retransmit_timeout = 0.5\n  retransmit_base = 1\n  retransmit_tries = 2\n}\n" + CONNECTION
    cfg = parse_config(text)
    (conn,) = connections_from_config(cfg)
    assert conn.ike.retransmit == RetransmitConfig(timeout=0.5, base=1.0, tries=2)
    assert [conn.ike.retransmit.delay(i) for i in range(3)] == [0.5, 0.5, 0.5]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("retransmit_timeout", "soon", "not a number of seconds: 'soon'"),
        ("retransmit_timeout", "0", "'0' is out of range 0.05..3600"),
        ("retransmit_timeout", "nan", "'nan' is out of range 0.05..3600"),
        ("retransmit_base", "0.5", "'0.5' is out of range 1..10"),
        ("retransmit_tries", "-1", "not a number of retransmissions: '-1'"),
        ("retransmit_tries", "101", "101 is out of range 0..100"),
    ],
)
def test_bad_values_name_line_and_key(key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(f"tunsec {{\n  log_level = info\n  {key} = {value}\n}}\n", "t.conf")
    (issue,) = err.value.errors
    assert (issue.file, issue.line, issue.key) == ("t.conf", 3, f"tunsec.{key}")
    assert message in issue.message


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["retransmit_timeout", "retransmit_base", "retransmit_tries"]), st.text(max_size=30))
def test_any_value_is_accepted_or_a_clean_error(key: str, value: str) -> None:
    quoted = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    try:
        parse_config(f"tunsec {{\n  {key} = {quoted}\n}}\n")
    except ConfigError as exc:
        for issue in exc.errors:
            assert (issue.line, issue.key) == (2, f"tunsec.{key}") and issue.message
