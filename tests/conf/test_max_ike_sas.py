"""tunsec { max_ike_sas_per_identity, ikesa_limit }: parsed, checked, and carried into every
connection's IkeConfig (the first) and the endpoint's DosLimits (the second)."""

from __future__ import annotations

import pytest
from config_data import psk_gateway

from tunsec.conf.config import parse_config
from tunsec.conf.errors import ConfigError
from tunsec.ike.config import DEFAULT_MAX_IKE_SAS


def test_default_and_set_values_reach_every_connection_and_the_limits() -> None:
    default = parse_config(psk_gateway())
    assert DEFAULT_MAX_IKE_SAS == 8 and [c.ike.max_ike_sas for c in default.connections] == [8]
    assert default.tunsec.dos.ikesa_limit == 0   # strongSwan's default: no limit
    cfg = parse_config("tunsec {\n  max_ike_sas_per_identity = 3\n  ikesa_limit = 5000\n}\n" + psk_gateway())
    assert cfg.tunsec.max_ike_sas_per_identity == 3 and cfg.tunsec.dos.ikesa_limit == 5000
    assert [c.ike.max_ike_sas for c in cfg.connections] == [3]


@pytest.mark.parametrize(("key", "value", "message"), [
    ("max_ike_sas_per_identity", "0", "out of range 1..65536"),
    ("max_ike_sas_per_identity", "lots", "IKE SAs per identity"),
    ("ikesa_limit", "-1", "IKE SAs (0: no limit)"),
])
def test_bad_values_name_line_and_key(key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(f"tunsec {{\n  log_level = info\n  {key} = {value}\n}}\n", "t.conf")
    (issue,) = err.value.errors
    assert (issue.file, issue.line, issue.key) == ("t.conf", 3, f"tunsec.{key}")
    assert message in issue.message
