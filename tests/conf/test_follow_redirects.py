"""tunsec { follow_redirects }: strongswan.conf's charon.follow_redirects, carried into every IkeConfig."""

from __future__ import annotations

import pytest
from config_data import psk_gateway

from tunsec.conf.config import parse_config
from tunsec.conf.errors import ConfigError


def test_default_yes_and_no_reach_every_connection() -> None:
    assert [c.ike.follow_redirects for c in parse_config(psk_gateway()).connections] == [True]
    cfg = parse_config("tunsec {\n  follow_redirects = no\n}\n" + psk_gateway())
    assert cfg.tunsec.follow_redirects is False
    assert [c.ike.follow_redirects for c in cfg.connections] == [False]


def test_a_bad_value_names_line_and_key() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config("tunsec {\n  follow_redirects = sometimes\n}\n", "t.conf")
    (issue,) = err.value.errors
    assert (issue.file, issue.line, issue.key) == ("t.conf", 2, "tunsec.follow_redirects")
