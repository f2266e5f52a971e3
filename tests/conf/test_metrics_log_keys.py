"""tunsec { metrics_listen, log_format }: bad values are errors naming file, line and key.

What the values do is tested where they act: tests/test_logs.py (log_format) and
tests/e2e/test_metrics.py (metrics_listen, scraped by a real Prometheus)."""

from __future__ import annotations

import pytest

from tunsec.conf.config import parse_config
from tunsec.conf.errors import ConfigError, ConfigIssue


def _issue(key: str, value: str) -> ConfigIssue:
    with pytest.raises(ConfigError) as err:
        parse_config(f"# header\ntunsec {{\n  log_level = info\n  {key} = {value}\n}}\n", "t.conf")
    assert len(err.value.errors) == 1, err.value.errors
    return err.value.errors[0]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("localhost:9101", "not an IP address: 'localhost' (write 127.0.0.1 or [::1], not a host name)"),
        ("::1:9101", "write an IPv6 address in brackets, e.g. [::1]:9101, got '::1:9101'"),
        ("127.0.0.1", "expected ADDRESS:PORT (e.g. 127.0.0.1:9101 or [::1]:9101), got '127.0.0.1'"),
        (":9101", "expected ADDRESS:PORT (e.g. 127.0.0.1:9101 or [::1]:9101), got ':9101'"),
        ("127.0.0.1:0", "not a TCP port (1..65535): '0'"),
        ("127.0.0.1:65536", "not a TCP port (1..65535): '65536'"),
        ("[::1]:http", "not a TCP port (1..65535): 'http'"),
        ("127.0.0.1:\u0663", "not a TCP port (1..65535): '\u0663'"),   # a digit, but not an ASCII one
        ("[127.0.0.1:80", "not an IP address: '[127.0.0.1' (write 127.0.0.1 or [::1], not a host name)"),
    ],
)
def test_metrics_listen_errors(value: str, message: str) -> None:
    assert _issue("metrics_listen", value) == ConfigIssue("t.conf", 4, "tunsec.metrics_listen", message)


def test_log_format_error() -> None:
    assert _issue("log_format", "xml") == ConfigIssue(
        "t.conf", 4, "tunsec.log_format", "not a log format (text, json): 'xml'")
