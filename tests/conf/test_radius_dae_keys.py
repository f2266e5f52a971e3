"""``radius { dae { } }`` (RFC 5176 Dynamic Authorization, strongSwan's eap-radius.dae keys):
who may send requests, where the listener binds, mistakes named with file, line and key."""
from __future__ import annotations

import ipaddress

import pytest

from tunsec.conf.config import parse_config
from tunsec.conf.errors import ConfigError
from tunsec.ike.secret import Secret
from tunsec.radius.settings import DaeSettings


def radius(dae: str) -> str:
    return f"""radius {{
  servers {{
    primary {{
      address = 10.0.0.5
      secret = "Shared secret 1"
    }}
  }}
  dae {{
{dae}
  }}
}}
"""


def dae_of(text: str) -> DaeSettings | None:
    cfg = parse_config(radius(text), "tunsec.conf").radius
    assert cfg is not None
    return cfg.dae


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(radius(text), "tunsec.conf")
    return [str(e) for e in info.value.errors]


def test_without_clients_only_the_radius_servers_may_send_requests() -> None:
    dae = dae_of('    enable = yes\n    secret = "dae secret"')
    assert dae is not None
    assert dae.admits(ipaddress.ip_address("10.0.0.5"))
    assert not dae.admits(ipaddress.ip_address("10.0.0.6"))
    assert dae.endpoint() == "0.0.0.0:3799"   # strongSwan's defaults
    assert "dae secret" not in repr(dae)


def test_clients_are_addresses_or_networks() -> None:
    dae = dae_of('    enable = yes\n    secret = s3\n    listen = 192.0.2.1\n    port = 13799\n'
                 '    clients = 192.0.2.64/26, 198.51.100.7')
    assert dae is not None and dae.endpoint() == "192.0.2.1:13799"
    assert [dae.admits(ipaddress.ip_address(a)) for a in ("192.0.2.70", "198.51.100.7", "10.0.0.5")] == \
        [True, True, False]


def test_disabled_is_off_even_with_the_other_keys() -> None:
    assert dae_of("    enable = no\n    secret = x\n    port = 3799") is None
    assert dae_of("    port = 3799") is None


@pytest.mark.parametrize(("text", "message"), [
    ("    enable = yes", "radius.dae.secret: required key is missing"),
    ("    enable = yes\n    secret = x\n    clients = 0.0.0.0/0", "would take requests from anyone"),
    ("    enable = yes\n    secret = x\n    clients = not-an-address", "not an address or network"),
    ("    enable = yes\n    secret = x\n    listen = gw.example", "not an IPv4 or IPv6 address"),
    ("    enable = yes\n    secret = x\n    listen = ::1", "could never reach it"),   # the server is IPv4
    ("    enable = yes\n    secret = x\n    port = 0", "radius.dae.port"),
    ("    enable = yes\n    secret = x\n    secrte = y", "radius.dae.secrte"),
    ("    enable = yes\n    secret = x\n    window = 5s", "radius.dae.window"),
    ("    enable = yes\n    secret = x\n    window = 2h", "10s..1h"),
])
def test_mistakes_name_the_key(text: str, message: str) -> None:
    found = errors(text)
    assert any(message in e for e in found), found
    assert all("tunsec.conf:" in e for e in found), found


def test_the_replay_window_is_300_s_unless_shortened() -> None:
    on = "    enable = yes\n    secret = x"
    assert (dae_of(on) or DaeSettings(ipaddress.ip_address("0.0.0.0"), Secret(b""))).window == 300.0
    shorter = dae_of(on + "\n    window = 1m")
    assert shorter is not None and shorter.window == 60.0


def test_event_timestamp_is_required_unless_turned_off() -> None:
    on = "    enable = yes\n    secret = x"
    required = dae_of(on)
    assert required is not None and required.require_event_timestamp
    off = dae_of(on + "\n    require_event_timestamp = no")
    assert off is not None and not off.require_event_timestamp
    assert any("radius.dae.require_event_timestamp" in e for e in errors(on + "\n    require_event_timestamp = maybe"))
