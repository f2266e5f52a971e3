"""What the tunsec.conf tests share: an example config (tunsec { }, manual { }), its line numbers,
a PSK gateway connection, and helpers to build manual tunnels and read the errors."""

from __future__ import annotations

import hashlib

import pytest

from tunsec.conf.config import parse_config
from tunsec.conf.errors import ConfigError, ConfigIssue

KEY_IN_HEX = "0102030405060708090a0b0c0d0e0f1011121314"
KEY_OUT_HEX = "1112131415161718191a1b1c1d1e1f2021222324"
KEY256_HEX = "a0" * 36
KEY256_OUT_HEX = "b0" * 36   # a key is in one SA only: key_in and key_out differ

EXAMPLE = f"""\
tunsec {{
  tun = tunsec0            # created if missing; attached if it exists
  mtu = auto               # or a number
  control_socket = /run/tunsec/tunsec.sock   # the default; one per instance
}}
manual {{
  site-b {{
    local_addr = 192.0.2.1
    remote_addr = 192.0.2.2
    local_port = 4500
    remote_port = 4500
    local_ts = 10.1.0.0/24
    remote_ts = 10.2.0.0/24
    esp = aes128gcm16      # or aes256gcm16
    spi_in = 0xc0010001
    key_in = 0x{KEY_IN_HEX}
    spi_out = 0xc0020001
    key_out = 0x{KEY_OUT_HEX}
    esn = no
    replay_window = 1024
  }}
}}
"""

# Line numbers of EXAMPLE's keys, for error assertions.
LINE = {
    line.split("=")[0].strip(): n for n, line in enumerate(EXAMPLE.splitlines(), 1) if "=" in line and "{" not in line
}
SITE_B_LINE = 7


def psk_gateway(extra: str = "") -> str:
    """One PSK connection ``gw`` to a site at 192.0.2.1 (sun.example <-> moon.example), with
    ``extra`` (e.g. a proposals line) in the connection."""
    return f"""
connections {{
  gw {{
    remote_addrs = 192.0.2.1
    {extra}
    local {{ auth = psk
            id = sun.example }}
    remote {{ auth = psk
             id = moon.example }}
    children {{ net {{ local_ts = 10.2.0.0/16
                     remote_ts = 10.1.0.0/16 }} }}
  }}
}}
secrets {{ ike {{ secret = s3cret }} }}
"""


def own_key(base: str, name: str) -> str:
    """base for the default tunnel ``t``, else base with its last 4 bytes from the name: every tunnel's
    keys differ (one key in two SAs is refused)."""
    return base if name == "t" else base[:-8] + hashlib.sha256(name.encode()).hexdigest()[:8]


def tunnel(name: str = "t", **overrides: str | None) -> str:
    """A valid manual tunnel section; ``None`` drops a key, a string replaces it."""
    keys: dict[str, str | None] = {
        "local_addr": "192.0.2.1",
        "remote_addr": "192.0.2.2",
        "local_ts": "10.1.0.0/24",
        "remote_ts": "10.2.0.0/24",
        "spi_in": "0x1001",
        "key_in": "0x" + own_key(KEY_IN_HEX, name),
        "spi_out": "0x2001",
        "key_out": "0x" + own_key(KEY_OUT_HEX, name),
    }
    keys.update(overrides)
    body = "".join(f"    {k} = {v}\n" for k, v in keys.items() if v is not None)
    return f"  {name} {{\n{body}  }}\n"


def manual(*tunnels: str) -> str:
    return "manual {\n" + "".join(tunnels) + "}\n"


def issues_of(text: str, path: str = "tunsec.conf") -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, path)
    return info.value.errors


def only_issue(text: str, path: str = "tunsec.conf") -> ConfigIssue:
    errors = issues_of(text, path)
    assert len(errors) == 1, "\n".join(map(str, errors))
    return errors[0]


def line_of(text: str, needle: str) -> int:
    for n, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return n
    raise AssertionError(f"{needle!r} not in text")


def assert_no_key_material(text: str) -> None:
    for hex_key in (KEY_IN_HEX, KEY_OUT_HEX, KEY256_HEX, KEY256_OUT_HEX):
        for probe in (hex_key, hex_key.upper(), hex_key[:16], repr(bytes.fromhex(hex_key))[2:18]):
            assert probe not in text
