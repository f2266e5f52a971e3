"""tunsec { half_open_timeout, cookie_threshold, half_open_limit }: parsed, checked, and what they do to
an engine built from the configuration as the daemon builds it."""

from __future__ import annotations

import struct

import pytest

from tunsec.conf.config import parse_config
from tunsec.conf.errors import ConfigError
from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.identity import Identity
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.secret import Secret

CONNECTION = """
connections {
  gw {
    remote_addrs = 192.0.2.1
    local { auth = psk
            id = sun.example }
    remote { auth = psk
             id = moon.example }
    children { net { local_ts = 10.2.0.0/16
                     remote_ts = 10.1.0.0/16 } }
  }
}
secrets { ike { secret = s3cret } }
"""


def _request() -> bytes:
    initiator = IkeConfig(
        "i", LocalAuth("psk", Identity.parse("moon.example")), RemoteAuth("psk", Identity.parse("sun.example")),
        parse_proposals("default"), (child_config("net", "10.1.0.0/16", "10.2.0.0/16", "aes128gcm16"),),
        psk=Secret(b"s3cret"), local_addr="192.0.2.1", remote_addr="192.0.2.2",
    )
    a = IkeEndpoint([initiator])
    a.initiate("i", "net", 0.0)
    return a.datagrams_to_send(0.0)[0].data


def _engine(text: str) -> IkeEndpoint:
    cfg = parse_config(text)
    return IkeEndpoint([c.ike for c in cfg.connections], limits=cfg.tunsec.dos)


def _flood(b: IkeEndpoint, n: int, now: float) -> None:
    request = _request()
    for i in range(n):
        b.receive(struct.pack("!Q", 0x1000 + i) + request[8:], ("192.0.2.1", 1000 + i), now)


def test_defaults_are_strongswans() -> None:
    # charon.half_open_timeout = 30 s, charon.cookie_threshold = 30
    b = _engine(CONNECTION)
    _flood(b, 35, 0.0)
    assert b.half_open == 30 and b.stats.cookies_sent == 5
    b.handle_timer(29.0)
    assert b.half_open == 30
    b.handle_timer(30.0)
    assert b.half_open == 0 and b.sa_count == 0


def test_settings_drive_the_engine() -> None:
    b = _engine("tunsec {\n  half_open_timeout = 5\n  cookie_threshold = 8\n  half_open_limit = 3\n}\n" + CONNECTION)
    _flood(b, 10, 0.0)
    assert b.half_open == 3 and b.stats.half_open_limit == 7 and b.stats.cookies_sent == 0
    b.handle_timer(5.0)
    assert b.sa_count == 0
    b = _engine("tunsec {\n  cookie_threshold = 0\n}\n" + CONNECTION)
    _flood(b, 10, 0.0)
    assert b.sa_count == 0 and b.stats.cookies_sent == 10


@pytest.mark.parametrize(("line", "size"), [("", 1280), ("fragment_size = 0", 0), ("fragment_size = 1400", 1400)])
def test_fragment_size_goes_into_every_connection(line: str, size: int) -> None:
    # what it drives is in tests/ike/test_engine_fragments.py (0: 576 bytes on IPv4)
    (conn,) = parse_config(f"tunsec {{\n  {line}\n}}\n" + CONNECTION).connections
    assert conn.ike.fragment_size == size


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("half_open_timeout", "soon", "not a number of seconds: 'soon'"),
        ("half_open_timeout", "0", "'0' is out of range 0.5..3600"),
        ("cookie_threshold", "-1", "not a number of half-open IKE SAs: '-1'"),
        ("half_open_limit", "0", "0 is out of range 1..1048576"),
        ("fragment_size", "100", "100 is out of range 576..65535"),
        ("fragment_size", "big", "not a size in bytes: 'big'"),
    ],
)
def test_bad_values_name_line_and_key(key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(f"tunsec {{\n  log_level = info\n  {key} = {value}\n}}\n", "t.conf")
    (issue,) = err.value.errors
    assert (issue.file, issue.line, issue.key) == ("t.conf", 3, f"tunsec.{key}")
    assert message in issue.message
