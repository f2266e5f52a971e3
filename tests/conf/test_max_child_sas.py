"""tunsec { max_child_sas }: parsed, checked, and carried into every connection's IkeConfig."""

from __future__ import annotations

import pytest
from config_data import psk_gateway

from tunsec.conf.config import parse_config
from tunsec.conf.errors import ConfigError
from tunsec.ike.config import DEFAULT_MAX_CHILD_SAS


def test_default_and_set_value_reach_every_connection() -> None:
    assert [c.ike.max_child_sas for c in parse_config(psk_gateway()).connections] == [DEFAULT_MAX_CHILD_SAS]
    cfg = parse_config("tunsec {\n  max_child_sas = 5\n}\n" + psk_gateway())
    assert cfg.tunsec.max_child_sas == 5
    assert [c.ike.max_child_sas for c in cfg.connections] == [5]


@pytest.mark.parametrize(("value", "message"), [("0", "out of range 1..65536"), ("65537", "out of range 1..65536"),
                                                ("many", "Child SAs per IKE SA")])
def test_bad_values_name_line_and_key(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(f"tunsec {{\n  log_level = info\n  max_child_sas = {value}\n}}\n", "t.conf")
    (issue,) = err.value.errors
    assert (issue.file, issue.line, issue.key) == ("t.conf", 3, "tunsec.max_child_sas")
    assert message in issue.message
