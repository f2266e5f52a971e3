"""Review revcfg F1: a configuration strongSwan reads is refused since h/fixsecrets.

strongSwan's settings grammar (libstrongswan/settings/settings_parser.y: ``statements: statements
statement``, no NEWLINE needed between statements; settings_lexer.l ends a bare value at '}') reads
``a { x = 1 } b { y = 2 }`` on one line: libstrongswan 5.9.8's settings_create() on that file gives
``b.y = 2`` (checked by hand with ctypes on this machine).  conf/syntax.py _value now refuses any bare
value ending at '}' with more than braces or a comment after it on its line, so a compact one-line
swanctl.conf -- e.g. two connections or a secrets section after a closing brace -- no longer loads.
tunsec promises swanctl.conf syntax: what strongSwan reads must not be refused."""

from __future__ import annotations

import pytest
from config_data import psk_gateway

from tunsec.conf.config import parse_config

STRONG = "0sQ29ycmVjdC1Ib3JzZS1CYXR0ZXJ5LVN0YXBsZS0xMjM0NQ=="


@pytest.mark.parametrize("secrets", [
    # two sections on one line, the first closing after a bare value
    f"secrets {{ ike-a {{ secret = {STRONG} }} ike-b {{ id = moon.example\n secret = {STRONG} }} }}",
    # a section after a closed one on the same line
    f"secrets {{ ike {{ id = moon.example\n secret = {STRONG} }} }} pools {{ p {{ addrs = 10.3.0.0/24 }} }}",
], ids=["sibling-sections", "next-top-level-section"])
def test_statements_after_a_value_closing_brace_on_one_line_load(secrets: str) -> None:
    text = psk_gateway().replace("secrets { ike { secret = s3cret } }", secrets)
    cfg = parse_config(text, "tunsec.conf")   # strongSwan reads this; ConfigError on main
    assert cfg.connections[0].name == "gw"
