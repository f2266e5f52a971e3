"""``radius { }`` (the servers auth = eap-radius relays to) and eap-radius in connections: values
reach the RADIUS client's settings, mistakes name file, line and key, the secret never shows."""
from __future__ import annotations

import ipaddress

import pytest

from tunsec.conf.config import parse_config
from tunsec.conf.errors import ConfigError
from tunsec.radius.settings import RadiusSettings

RADIUS = """radius {
  servers {
    primary {
      address = 10.0.0.5
      secret = "Shared secret 1"
    }
    backup {
      address = 2001:db8::5
      secret = other-secret-2
      auth_port = 11812
    }
  }
  nas_identifier = vpn-gw-1
  retransmit_timeout = 0.5
  retransmit_tries = 2
}
"""


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "tunsec.conf")
    return [str(e) for e in info.value.errors]


def test_servers_and_timers_reach_the_client_settings() -> None:
    radius = parse_config(RADIUS, "tunsec.conf").radius
    assert radius is not None
    primary, backup = radius.servers
    assert (primary.name, primary.address, primary.auth_port) == ("primary", ipaddress.ip_address("10.0.0.5"), 1812)
    assert primary.secret.reveal() == b"Shared secret 1"
    assert (backup.address, backup.auth_port, str(backup)) == (ipaddress.ip_address("2001:db8::5"), 11812,
                                                               "backup ([2001:db8::5]:11812)")
    assert (radius.nas_identifier, radius.retransmit_timeout, radius.retransmit_tries) == ("vpn-gw-1", 0.5, 2)
    assert radius.retransmit_base == RadiusSettings().retransmit_base
    assert "Shared secret" not in repr(radius)
    assert [radius.wait(n) for n in range(3)] == [0.5, 0.7, pytest.approx(0.98)]


@pytest.mark.parametrize(("change", "message"), [
    (("address = 10.0.0.5", "address = radius.example"), "tunsec.conf:4: radius.servers.primary.address: "
                                                         "not an IPv4 or IPv6 address: 'radius.example'"),
    (('secret = "Shared secret 1"', ""), "tunsec.conf:3: radius.servers.primary.secret: required key is missing"),
    (("auth_port = 11812", "auth_port = 0"), "tunsec.conf:10: radius.servers.backup.auth_port: "),
    (("retransmit_tries = 2", "retransmit_tries = 99"), "tunsec.conf:15: radius.retransmit_tries: "),
    (("nas_identifier = vpn-gw-1", "nas_identfier = x"), "tunsec.conf:13: radius.nas_identfier: unknown key"),
    (("address = 10.0.0.5", "address = 10.0.0.5\n      port = 1812"),
     "tunsec.conf:5: radius.servers.primary.port: unknown key (did you mean 'auth_port'?)"),
])
def test_mistakes_name_file_line_and_key(change: tuple[str, str], message: str) -> None:
    text = RADIUS.replace(*change, 1)
    found = errors(text)
    assert any(e.startswith(message) for e in found), found
    assert all("Shared secret" not in e and "other-secret" not in e for e in found)


def test_radius_without_servers_is_an_error() -> None:
    assert errors("radius {\n  nas_identifier = x\n}\n") == [
        "tunsec.conf:1: radius.servers: required section is missing: servers { NAME { address = ..., secret = ... } }"]



@pytest.mark.parametrize(("change", "message"), [
    (("auth_port = 11812", "auth_port = 11812\n      acct_port = 70000"),
     "tunsec.conf:11: radius.servers.backup.acct_port: "),
    (("retransmit_tries = 2", "retransmit_tries = 2\n  acounting = yes"),
     "tunsec.conf:16: radius.acounting: unknown key (did you mean 'accounting'?)"),
    (("retransmit_tries = 2", "retransmit_tries = 2\n  accounting = maybe"),
     "tunsec.conf:16: radius.accounting: not a boolean (yes or no): 'maybe'"),
    (("retransmit_tries = 2", "retransmit_tries = 2\n  accounting = yes\n  accounting_interval = 2s"),
     "tunsec.conf:17: radius.accounting_interval: 0 (no Interim-Update) or 10s..7d"),
    (("retransmit_tries = 2", "retransmit_tries = 2\n  accounting_interval = 5m"),
     "tunsec.conf:16: radius.accounting_interval: Interim-Updates are part of accounting: set accounting = yes"),
])
def test_accounting_mistakes_name_file_line_and_key(change: tuple[str, str], message: str) -> None:
    found = errors(RADIUS.replace(*change, 1))
    assert any(e.startswith(message) for e in found), found


def test_accounting_without_servers_names_the_key() -> None:
    found = errors("radius {\n  accounting = yes\n  servers {\n  }\n}\n")
    assert "tunsec.conf:2: radius.accounting: accounting = yes sends Accounting-Requests to the servers of " \
           "servers { }, and none is configured: add NAME { address = ..., secret = ... } there" in found, found


PSK_GATEWAY = """connections {
  rw {
    local {
      auth = psk
      id = gw.example
    }
    remote {
      auth = eap-radius
      eap_id = %any
    }
    children {
      net {
        local_ts = 10.1.0.0/16
      }
    }
  }
}
secrets {
  ike-1 {
    id = gw.example
    secret = "a long enough pre-shared key 123"
  }
}
"""


def test_eap_radius_needs_a_radius_server() -> None:
    assert errors(PSK_GATEWAY) == ["tunsec.conf:8: connections.rw.remote.auth: auth = eap-radius needs a RADIUS "
                                   "server: add radius { servers { NAME { address = ..., secret = ... } } }"]


def test_eap_radius_gateway_proves_itself_with_a_certificate() -> None:
    (found,) = errors(PSK_GATEWAY + RADIUS)
    assert "remote auth = eap-radius needs local auth = pubkey" in found


def test_eap_radius_is_for_the_remote_side() -> None:
    text = PSK_GATEWAY.replace("auth = psk", "auth = eap-radius").replace("auth = eap-radius\n      eap_id = %any",
                                                                          "auth = psk")
    found = errors(text + RADIUS)
    assert any(e.startswith("tunsec.conf:4: connections.rw.local.auth: eap-radius is for remote") for e in found), found


def test_waiting_longer_than_the_half_open_timeout_is_warned_about() -> None:
    assert parse_config(RADIUS, "tunsec.conf").warnings == ()   # 2 servers x (0.5 + 0.7 + 0.98 s)
    slow = RADIUS.replace("retransmit_timeout = 0.5", "retransmit_timeout = 5")
    (warning,) = parse_config(slow, "tunsec.conf").warnings
    assert str(warning).startswith("tunsec.conf:1: radius: when no server answers, a round waits 43.6 s "
                                   "(2 server(s) x 21.8 s), not less than tunsec.half_open_timeout (30 s)")


def test_preference_and_sockets_choose_the_server_a_new_request_tries_first() -> None:
    """strongSwan's servers.NAME.preference and .sockets: the backup written second with the
    higher preference is tried first; a negative preference makes a server the last resort."""
    from tunsec.radius.health import ServerHealth, in_order

    text = RADIUS.replace("auth_port = 11812", "auth_port = 11812\n      preference = 20\n      sockets = 4")
    text = text.replace('secret = "Shared secret 1"', 'secret = "Shared secret 1"\n      preference = -3')
    radius = parse_config(text, "tunsec.conf").radius
    assert radius is not None
    health = {s.name: ServerHealth(s.name, "x", "Access-Requests") for s in radius.servers}
    busy = {"primary": 0, "backup": 4}   # every socket of the backup under way: 20 + 0 against -3 + 100

    def order(under_way: dict[str, int]) -> list[str]:
        return [s.name for s in in_order(radius.servers, lambda s: health[s.name], lambda s: under_way[s.name])]
    assert order({"primary": 0, "backup": 0}) == ["backup", "primary"]
    assert order(busy) == ["primary", "backup"]


@pytest.mark.parametrize(("key", "value", "says"), [
    ("preference", "1001", "out of range"), ("preference", "-1001", "out of range"),
    ("preference", "high", "not a preference"), ("sockets", "0", "out of range"),
    ("sockets", "257", "out of range")])
def test_bad_preference_or_sockets_is_refused_with_its_key(key: str, value: str, says: str) -> None:
    text = RADIUS.replace('secret = "Shared secret 1"', f'secret = "Shared secret 1"\n      {key} = {value}')
    [error] = errors(text)
    assert f"radius.servers.primary.{key}" in error and says in error, error
