"""The tunsec-only IKE retransmission settings (tunsec { retransmit_timeout/_base/_tries }),
named after strongswan.conf's charon.retransmit_*, and what they do to an engine run from the parsed connection."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunsec.conf.config import parse_config
from tunsec.conf.errors import ConfigError
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import PeerUnreachable

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


def _sends_until_given_up(text: str) -> list[float]:
    """When an engine run from the parsed connection sends IKE_SA_INIT to a silent peer; the last
    entry is when it gives up."""
    (conn,) = parse_config(text).connections
    engine = IkeEndpoint([conn.ike])
    engine.initiate("gw", "net", 0.0)
    sends, now = [], 0.0
    while True:
        sends += [now] * len(engine.datagrams_to_send(now))
        event = engine.next_event()
        if event is not None and isinstance(event[1], PeerUnreachable):
            return [*sends, now]
        timer = engine.get_timer()
        assert timer is not None
        now = timer
        engine.handle_timer(now)


def test_defaults_are_strongswans() -> None:
    # charon: 4 s, times 1.8 per try, 5 retransmissions, give up after the last wait
    delays = [4.0 * 1.8**i for i in range(6)]
    expected = [round(sum(delays[:i]), 6) for i in range(7)]
    assert [round(t, 6) for t in _sends_until_given_up(CONNECTION)] == expected


def test_settings_drive_the_engine() -> None:
    text = "tunsec {\n  retransmit_timeout = 0.5\n  retransmit_base = 2\n  retransmit_tries = 2\n}\n" + CONNECTION
    assert _sends_until_given_up(text) == [0.0, 0.5, 1.5, 3.5]


def test_retransmit_limit_caps_each_wait() -> None:
    """strongSwan's charon.retransmit_limit: base 10 with 100 tries gives up after ~100 limits, not ~10^100 s."""
    text = "tunsec {\n  retransmit_timeout = 1\n  retransmit_base = 10\n  retransmit_tries = 100\n" \
           "  retransmit_limit = 60\n}\n" + CONNECTION
    sends = _sends_until_given_up(text)
    assert sends[:4] == [0.0, 1.0, 11.0, 71.0] and len(sends) == 102
    assert sends[-1] == pytest.approx(1.0 + 10.0 + 99 * 60.0)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("retransmit_limit", "-1", "'-1' is out of range 0..3600"),
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
