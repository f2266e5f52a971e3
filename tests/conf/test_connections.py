"""Tests for swanctl.conf's connections, secrets and authorities (tunsec.conf.connections, .secrets, .authorities)."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import ipaddress
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tunsec.conf.config import Config, load_config, parse_config
from tunsec.conf.connections import find_child, rekey_limit
from tunsec.conf.errors import ConfigError, ConfigIssue
from tunsec.conf.secrets import IkeSecret, find_psk
from tunsec.dataplane.pipe import Lifetime
from tunsec.ike.auth import PrivateKey
from tunsec.ike.constants import IdType, NotifyType, ProtocolId
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaUp, IkeSaUp
from tunsec.ike.identity import Identity
from tunsec.ike.message import NotifyPayload, decode_message
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.sa import IkeSa
from tunsec.ike.secret import Secret
from tunsec.ike.testing import EPOCH, Issued, Network, make_ca, make_cert
from tunsec.ike.ts import Ts

PSK_TEXT = "This is a strong secret, 32+ chars long"
PSK_B64 = base64.b64encode(PSK_TEXT.encode()).decode()

# A strongSwan-style site-to-site PSK config (as in strongSwan's swanctl examples).
PSK_CONF = f"""\
# moon's swanctl.conf
connections {{
    gw-gw {{
        version = 2
        local_addrs = 192.168.0.1
        remote_addrs = 192.168.0.2
        proposals = aes256gcm16-prfsha384-ecp384, aes128-sha256-modp2048
        encap = yes
        local {{
            auth = psk
            id = moon.strongswan.org
        }}
        remote {{
            auth = psk
            id = sun.strongswan.org
        }}
        children {{
            net-net {{
                local_ts = 10.1.0.0/16
                remote_ts = 10.2.0.0/16
                esp_proposals = aes128gcm16-ecp256
                start_action = start
            }}
        }}
    }}
}}

secrets {{
    ike-1 {{
        id-moon = moon.strongswan.org
        id-sun = sun.strongswan.org
        secret = 0s{PSK_B64}
    }}
}}

tunsec {{
    tun = tunsec0
}}
"""

# Where with_line() inserts a line: after the first line containing the anchor.
ANCHORS = {
    "conn": "        encap = yes",
    "local": "            id = moon.strongswan.org",
    "remote": "            id = sun.strongswan.org",
    "child": "                start_action = start",
    "secret": "        id-sun = sun.strongswan.org",
}


def with_line(where: str, line: str, text: str = PSK_CONF) -> str:
    anchor = ANCHORS[where]
    indent = " " * (len(anchor) - len(anchor.lstrip()))
    assert anchor in text
    return text.replace(anchor, f"{anchor}\n{indent}{line}", 1)


def issues_of(text: str, path: str = "swanctl.conf") -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, path)
    return info.value.errors


def only_issue(text: str, path: str = "swanctl.conf") -> ConfigIssue:
    errors = issues_of(text, path)
    assert len(errors) == 1, "\n".join(map(str, errors))
    return errors[0]


def line_of(text: str, needle: str) -> int:
    for n, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return n
    raise AssertionError(f"{needle!r} not in text")


# --------------------------------------------------------------------------
# PSK: the values the engine and the daemon get
# --------------------------------------------------------------------------


def test_psk_config_maps_to_the_engine_config() -> None:
    config = parse_config(PSK_CONF, "swanctl.conf")
    assert config.tunsec.tun == "tunsec0" and config.manual == () and config.warnings == ()
    (conn,) = config.connections
    assert config.connection("gw-gw") is conn
    ike = conn.ike
    assert ike.name == "gw-gw"
    assert ike.local.method == "psk" and ike.local.id == Identity(IdType.FQDN, b"moon.strongswan.org")
    assert ike.remote.method == "psk" and ike.remote.id == Identity(IdType.FQDN, b"sun.strongswan.org")
    assert ike.psk == Secret(PSK_TEXT.encode())
    assert ike.proposals == parse_proposals("aes256gcm16-prfsha384-ecp384,aes128-sha256-modp2048")
    assert (ike.local_addr, ike.remote_addr, ike.remote_port) == ("192.168.0.1", "192.168.0.2", 500)
    assert ike.send_certreq and ike.initial_contact  # strongSwan 5.9: unless unique = never
    never = parse_config(with_line("conn", "unique = never")).connections[0]
    assert never.unique == "never" and not never.ike.initial_contact
    (child_cfg,) = ike.children
    assert child_cfg.name == "net-net" and child_cfg.mode == "tunnel"
    assert child_cfg.local_ts == (Ts.parse("10.1.0.0/16"),) and child_cfg.remote_ts == (Ts.parse("10.2.0.0/16"),)
    assert child_cfg.esp_proposals == parse_proposals("aes128gcm16-ecp256", ProtocolId.ESP)
    assert child_cfg.wants_pfs

    # daemon-level fields, with strongSwan's defaults
    assert conn.local_addrs == (ipaddress.ip_address("192.168.0.1"),)
    assert conn.remote_addrs == (ipaddress.ip_address("192.168.0.2"),)
    assert conn.local_port == 500 and ike.dpd_delay is None and ike.rekey_time == 14400
    assert (ike.rekey_time, ike.over_time, ike.rand_time) == (14400, 1440, 1440)
    assert (conn.keyingtries, conn.unique, ike.send_cert) == (1, "no", "ifasked")
    assert (conn.file, conn.line) == ("swanctl.conf", line_of(PSK_CONF, "gw-gw {"))
    (child,) = conn.children
    assert child.config is child_cfg and conn.child("net-net") is child
    assert (child.start_action, child.close_action, child.dpd_action) == ("start", "none", "none")
    assert (child.rekey_time, child.life_time, child.rand_time) == (3600, 3960, 360)
    assert (child.rekey_bytes, child.life_bytes, child.rekey_packets, child.life_packets) == (0, 0, 0, 0)
    assert (child.replay_window, child.inactivity) == (4096, 0)   # wider than strongSwan's 32: see conf.values
    assert (child.file, child.line) == ("swanctl.conf", line_of(PSK_CONF, "net-net {"))

    (entry,) = config.ike_secrets
    assert entry.name == "ike-1" and entry.secret == ike.psk
    assert entry.ids == (Identity.parse("moon.strongswan.org"), Identity.parse("sun.strongswan.org"))


def test_minimal_connection_gets_strongswan_defaults() -> None:
    text = """\
connections {
    rw {
        local { auth = psk
                id = gw@example.org }
        remote { auth = psk }
        children { all { } }
    }
}
secrets { ike { secret = "a secret with spaces" } }
"""
    (conn,) = parse_config(text).connections
    assert conn.local_addrs == () and conn.remote_addrs == ()  # %any
    assert conn.ike.local_addr is None and conn.ike.remote_addr is None
    assert conn.ike.local.id == Identity(IdType.RFC822_ADDR, b"gw@example.org")
    assert conn.ike.remote.id.is_any
    assert conn.ike.psk == Secret(b"a secret with spaces")
    assert conn.ike.proposals == parse_proposals("default")
    (child,) = conn.ike.children
    assert child.local_ts == (Ts.parse("dynamic"),) and child.remote_ts == (Ts.parse("dynamic"),)
    assert child.esp_proposals == parse_proposals("default", ProtocolId.ESP)
    assert conn.children[0].start_action == "none"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("simple", b"simple"),
        ('"quoted with # and spaces"', b"quoted with # and spaces"),
        ("0x0102030405060708", bytes(range(1, 9))),
        ("0X0a0B", b"\x0a\x0b"),
        ("0s" + base64.b64encode(b"\x00\xffbinary").decode(), b"\x00\xffbinary"),
    ],
)
def test_psk_notations(value: str, expected: bytes) -> None:
    text = PSK_CONF.replace(f"0s{PSK_B64}", value)
    assert parse_config(text).connections[0].ike.psk == Secret(expected)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0x123", "0x must be followed by an even number of hex digits"),
        ("0xnothex", "0x must be followed by an even number of hex digits"),
        ("0s!!!", "0s must be followed by base64"),
        ("0x", "the secret is empty"),
    ],
)
def test_bad_psk_notations_never_echo_the_value(value: str, message: str) -> None:
    text = PSK_CONF.replace(f"0s{PSK_B64}", value)
    errors = issues_of(text)
    # one error: the connection's missing PSK would only repeat it
    assert [str(e) for e in errors] == [f"swanctl.conf:{line_of(text, 'secret =')}: secrets.ike-1.secret: {message}"]


def test_psk_never_in_repr_or_messages() -> None:
    config = parse_config(PSK_CONF)
    for text in (repr(config), str(config), repr(config.ike_secrets), repr(config.connections[0].ike)):
        assert PSK_TEXT not in text and PSK_B64 not in text
    # a PSK written where a key name belongs is not echoed either (hex runs are withheld)
    text = with_line("secret", "0x00112233445566778899aabbccddeeff = 1")
    assert "00112233445566778899" not in str(issues_of(text))


# --------------------------------------------------------------------------
# PSK lookup: which secrets.ike entry a connection gets
# --------------------------------------------------------------------------

MOON, SUN, CAROL = (Identity.parse(n) for n in ("moon.strongswan.org", "sun.strongswan.org", "carol@strongswan.org"))


def entry(name: str, *ids: Identity) -> IkeSecret:
    return IkeSecret(name, ids, Secret(name.encode()))


@pytest.mark.parametrize(
    ("entries", "local", "remote", "expected"),
    [
        ([entry("both", MOON, SUN)], MOON, SUN, "both"),
        ([entry("none")], MOON, SUN, "none"),  # no ids: anyone
        ([entry("other", CAROL)], MOON, SUN, None),
        # the remote identity counts first, as in strongSwan's credential manager
        ([entry("mine", MOON), entry("theirs", SUN)], MOON, SUN, "theirs"),
        ([entry("any"), entry("mine", MOON)], MOON, SUN, "any"),  # "any" matches sun better than "mine"
        ([entry("any"), entry("theirs", SUN), entry("both", SUN, MOON)], MOON, SUN, "both"),
        ([entry("wild", Identity.any()), entry("theirs", SUN)], MOON, SUN, "theirs"),
        ([entry("first", SUN), entry("second", SUN)], MOON, SUN, "first"),
        # a responder for %any peers: only entries for its own id or for anyone
        ([entry("carol", CAROL), entry("mine", MOON)], MOON, Identity.any(), "mine"),
        ([entry("carol", CAROL)], MOON, Identity.any(), None),
    ],
)
def test_find_psk_ranks_like_strongswan(
    entries: list[IkeSecret], local: Identity, remote: Identity, expected: str | None
) -> None:
    found = find_psk(entries, local, remote)
    assert (found.name if found else None) == expected


def test_psk_lookup_by_ids_in_a_config() -> None:
    secrets = f"""\
secrets {{
    ike-carol {{
        id = carol@strongswan.org
        secret = carols
    }}
    ike-default {{
        secret = default
    }}
    ike-sun {{
        id-a = sun.strongswan.org
        id-b = 192.168.0.2
        secret = 0x{b"suns".hex()}
    }}
}}
"""
    text = PSK_CONF[: PSK_CONF.index("secrets {")] + secrets
    carol = text.replace("id = sun.strongswan.org", "id = carol@strongswan.org")
    other = text.replace("id = sun.strongswan.org", "id = venus.strongswan.org")
    by_ip = text.replace("id = sun.strongswan.org", "id = 192.168.0.2")
    assert parse_config(text).connections[0].ike.psk == Secret(b"suns")
    assert parse_config(carol).connections[0].ike.psk == Secret(b"carols")
    assert parse_config(other).connections[0].ike.psk == Secret(b"default")
    assert parse_config(by_ip).connections[0].ike.psk == Secret(b"suns")
    assert [e.name for e in parse_config(text).ike_secrets] == ["ike-carol", "ike-default", "ike-sun"]


def test_missing_psk_is_an_error_at_the_auth_key() -> None:
    text = PSK_CONF.replace("id-sun = sun.strongswan.org", "id-sun = venus.strongswan.org").replace(
        "id-moon = moon.strongswan.org", "id-moon = mars.strongswan.org"
    )
    issue = only_issue(text)
    assert (issue.line, issue.key) == (line_of(text, "auth = psk"), "connections.gw-gw.local.auth")
    assert issue.message.startswith("no PSK in secrets for local id moon.strongswan.org and remote id sun.")


# --------------------------------------------------------------------------
# Identities
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "data"),
    [
        ("moon.strongswan.org", IdType.FQDN, b"moon.strongswan.org"),
        ("@moon", IdType.FQDN, b"moon"),
        ("fqdn:moon.strongswan.org", IdType.FQDN, b"moon.strongswan.org"),
        ("dns:moon.strongswan.org", IdType.FQDN, b"moon.strongswan.org"),
        ("carol@strongswan.org", IdType.RFC822_ADDR, b"carol@strongswan.org"),
        ("email:carol@strongswan.org", IdType.RFC822_ADDR, b"carol@strongswan.org"),
        ("192.168.0.1", IdType.IPV4_ADDR, bytes([192, 168, 0, 1])),
        ("fec0::1", IdType.IPV6_ADDR, ipaddress.IPv6Address("fec0::1").packed),
        ('"@#0a0b0c"', IdType.KEY_ID, b"\x0a\x0b\x0c"),  # quoted: '#' starts a comment
        ('"keyid:#0a0b0c"', IdType.KEY_ID, b"\x0a\x0b\x0c"),
        ('"C=CH, O=strongSwan, CN=moon"', IdType.DER_ASN1_DN, Identity.parse("C=CH, O=strongSwan, CN=moon").data),
    ],
)
def test_identity_types(text: str, kind: int, data: bytes) -> None:
    config = parse_config(
        PSK_CONF.replace("id = moon.strongswan.org", f"id = {text}").replace("id-moon = moon.strongswan.org", "")
    )
    ident = config.connections[0].ike.local.id
    assert (ident.type, ident.data) == (kind, data)


def test_remote_identity_may_be_any() -> None:
    text = PSK_CONF.replace("id = sun.strongswan.org", "id = %any")
    assert parse_config(text).connections[0].ike.remote.id.is_any


@pytest.mark.parametrize(
    ("where", "value", "message"),
    [
        ("local", "%any", "the local identity cannot be %any"),
        ("local", '"@#zz"', "invalid KEY_ID identity 'zz'"),
        ("local", "@#0a0b", "empty identity '@' (quote values with '#': id = \"@#0a0b...\")"),
        ("remote", "keyid:#0a0b", "empty identity 'keyid:' (quote values with '#': id = \"@#0a0b...\")"),
        ("remote", "*.strongswan.org", "wildcard identities are not supported: '*.strongswan.org'"),
        ("remote", '"XX=foo"', "invalid DER_ASN1_DN identity"),
        ("remote", "asn1gn:#3000", "identity type 'asn1gn' is not supported"),
    ],
)
def test_bad_identities(where: str, value: str, message: str) -> None:
    old = "id = moon.strongswan.org" if where == "local" else "id = sun.strongswan.org"
    text = PSK_CONF.replace(old, f"id = {value}")
    errors = [e for e in issues_of(text) if e.key == f"connections.gw-gw.{where}.id"]
    assert len(errors) == 1 and errors[0].line == line_of(text, f"id = {value}")
    assert message in errors[0].message


def test_psk_without_local_id_uses_the_single_local_address() -> None:
    text = PSK_CONF.replace("            id = moon.strongswan.org\n", "").replace("id-moon = moon.strongswan.org", "")
    assert parse_config(text).connections[0].ike.local.id == Identity.parse("192.168.0.1")
    no_addr = text.replace("local_addrs = 192.168.0.1\n", "")
    issue = only_issue(no_addr)
    assert issue.key == "connections.gw-gw.local.id" and issue.line == line_of(no_addr, "local {")
    assert issue.message.startswith("required with auth = psk unless local_addrs is one address")


# --------------------------------------------------------------------------
# Keys and values: supported, accepted with a default, refused
# --------------------------------------------------------------------------


def test_accepted_keys_and_their_values() -> None:
    text = PSK_CONF
    for where, line in [
        ("conn", "local_port = 4502"),
        ("conn", "remote_port = 4500"),
        ("conn", "dpd_delay = 30s"),
        ("conn", "dpd_timeout = 150s"),
        ("conn", "rekey_time = 2h"),
        ("conn", "reauth_time = 0"),
        ("conn", "keyingtries = 0"),
        ("conn", "unique = never"),
        ("conn", "send_certreq = no"),
        ("conn", "send_cert = always"),
        ("conn", "mobike = no"),
        ("conn", "aggressive = no"),
        ("conn", "pull = yes"),
        ("conn", "fragmentation = no"),
        ("conn", "childless = allow"),
        ("conn", "dscp = 000000"),
        ("conn", "vips ="),  # an empty value is the default
        ("local", "round = 1"),
        ("remote", "revocation = relaxed"),
        ("child", "close_action = restart"),
        ("child", "dpd_action = route"),
        ("child", "mode = tunnel"),
        ("child", "rekey_time = 20m"),
        ("child", "life_bytes = 2g"),
        ("child", "rekey_bytes = 1g"),
        ("child", "rekey_packets = 1000000"),
        ("child", "replay_window = 1024"),
        ("child", "inactivity = 0"),
        ("child", "hostaccess = yes"),
        ("child", "policies = yes"),
        ("child", "ipcomp = no"),
        ("child", "copy_df = yes"),
        ("child", "reqid = 0"),
    ]:
        text = with_line(where, line, text)
    config = parse_config(text)
    conn = config.connections[0]
    assert (conn.local_port, conn.ike.remote_port) == (4502, 4500)
    assert (conn.ike.over_time, conn.ike.rand_time) == (720, 720)  # 10% of rekey_time; no more than over_time
    assert (conn.keyingtries, conn.unique, conn.ike.send_cert) == (0, "never", "always")
    assert not conn.ike.initial_contact and not conn.ike.send_certreq
    assert (conn.ike.rekey_time, conn.ike.dpd_delay) == (7200, 30)   # the engine runs these timers
    child = conn.children[0]
    assert (child.close_action, child.dpd_action) == ("start", "trap")
    assert (child.rekey_time, child.life_time, child.rand_time) == (1200, 1320, 120)
    assert (child.rekey_bytes, child.life_bytes, child.rand_bytes) == (1 << 30, 2 << 30, 1 << 30)
    assert (child.rekey_packets, child.life_packets, child.rand_packets) == (1000000, 1100000, 100000)
    assert (child.replay_window, child.inactivity) == (1024, 0)
    assert child.config.rekey_time == 1200
    assert config.warnings == ()


@pytest.mark.parametrize(("local", "remote", "warned"), [
    (1500, 5500, True),     # neither end on 500: IKE and ESP stay on the peer's 5500
    (1500, 4500, False),    # the peer's NAT-T port from the start: ESP where a tunsec peer takes it
    (500, 5500, False),     # our end on 500: both float to 4500
])
def test_a_peer_port_that_esp_stays_on_is_warned_about(local: int, remote: int, warned: bool) -> None:
    text = with_line("conn", f"remote_port = {remote}", with_line("conn", f"local_port = {local}"))
    warnings = parse_config(text).warnings
    assert [w.key for w in warnings] == (["connections.gw-gw.remote_port"] if warned else [])
    assert all(f"stay on the peer's port {remote}" in w.message and "remote_port = 4500" in w.message
               for w in warnings)


@pytest.mark.parametrize(
    ("where", "line", "message"),
    [
        ("conn", "reauth_time = 1d", "reauthentication is not supported"),
        ("child", "inactivity = 5m", "inactivity timeouts are not supported"),
        ("conn", "local_port = 4500", "port 4500 here: it is the dataplane's ESP-in-UDP port"),
    ],
)
def test_settings_tunsec_does_not_act_on_are_refused(where: str, line: str, message: str) -> None:
    text = with_line(where, line)
    issue = only_issue(text)
    assert issue.line == line_of(text, line) and message in issue.message
    assert issue.key.endswith(line.split(" =")[0])


@pytest.mark.parametrize(
    ("value", "expected"),
    [("none", "none"), ("clear", "none"), ("trap", "trap"), ("route", "trap"), ("start", "start"),
     ("restart", "start"), ("START", "start")],
)  # fmt: skip
def test_actions_normalised_like_strongswan(value: str, expected: str) -> None:
    text = PSK_CONF.replace("start_action = start", f"start_action = {value}")
    assert parse_config(text).connections[0].children[0].start_action == expected


def test_rekey_time_zero_disables_ike_rekeying() -> None:
    conn = parse_config(with_line("conn", "rekey_time = 0")).connections[0]
    assert conn.ike.rekey_time is None


def test_encap_no_is_an_error_naming_file_and_line() -> None:
    assert parse_config(PSK_CONF).connections   # encap = yes: what tunsec does anyway
    text = PSK_CONF.replace("encap = yes", "encap = no")
    issue = only_issue(text)
    assert (issue.file, issue.line) == ("swanctl.conf", line_of(text, "encap = no"))
    assert issue.key == "connections.gw-gw.encap"
    assert issue.message.startswith("encap = no is not supported: tunsec always encapsulates ESP in UDP (RFC 3948)")


@pytest.mark.parametrize(("value", "mode"), [("yes", "yes"), ("accept", "accept"), ("force", "force"),
                                            ("NO", "no"), (None, "yes")])
def test_ike_fragmentation_modes_reach_the_engine(value: str | None, mode: str) -> None:
    # strongSwan's default is yes; the engine acts on the mode (tests/ike/test_engine_fragments.py)
    text = with_line("conn", f"fragmentation = {value}") if value else with_line("conn", "")
    (conn,) = parse_config(text).connections
    assert conn.ike.fragmentation == mode
    # what it drives first: IKE_SA_INIT announces IKEV2_FRAGMENTATION_SUPPORTED unless "no"
    sa = IkeSa(conn.ike, True, 0.0)
    sa.initiate()
    ((data, _),) = sa.datagrams_to_send(0.0)
    announced = [p for p in decode_message(data).payloads
                 if isinstance(p, NotifyPayload) and p.type == NotifyType.IKEV2_FRAGMENTATION_SUPPORTED]
    assert bool(announced) == (mode != "no")


IPV4_GW = bytes((1, 4, 198, 51, 100, 7))
FQDN_GW = bytes((3, 15)) + b"gw2.example.net"


@pytest.mark.parametrize(("lines", "redirects"), [
    ((), b""), (("redirect_to = 198.51.100.7",), IPV4_GW), (("redirect_to = gw2.example.net",), FQDN_GW),
    (("redirect_to = 198.51.100.7", "redirect_when = 1"), b""),
    (("redirect_to = 198.51.100.7", "redirect_on = init"), IPV4_GW),
    # in IKE_AUTH instead, after authenticating the client (tests/ike/test_engine_redirect.py)
    (("redirect_to = 198.51.100.7", "redirect_on = auth"), b""),
])
def test_redirect_keys_reach_the_gateway(lines: tuple[str, ...], redirects: bytes) -> None:
    # what they drive: a client's IKE_SA_INIT to a gateway holding no IKE SA (tests/ike/test_engine_redirect.py)
    text = with_line("conn", "")
    for line in lines:
        text = with_line("conn", line, text)
    (conn,) = parse_config(text).connections
    client = IkeSa(dataclasses.replace(conn.ike, remote_addr="192.168.0.1"), True, 0.0)
    client.initiate()
    ((request, _),) = client.datagrams_to_send(0.0)
    gateway = IkeEndpoint([dataclasses.replace(conn.ike, remote_addr=None)])
    gateway.receive(request, ("192.168.0.2", 500), 0.0, ("192.168.0.1", 500))
    (reply,) = gateway.datagrams_to_send(0.0)
    payloads = decode_message(reply.data).payloads
    sent = [p for p in payloads if isinstance(p, NotifyPayload) and p.type == NotifyType.REDIRECT]
    assert (gateway.stats.redirects_sent, len(sent)) == (int(bool(redirects)), int(bool(redirects)))
    if redirects:
        assert sent[0].data[: len(redirects)] == redirects


@pytest.mark.parametrize("key", ["redirect_when = always", "redirect_on = auth"])
def test_redirect_when_and_on_need_redirect_to(key: str) -> None:
    text = with_line("conn", key)
    issue = only_issue(text)
    name = key.split()[0]
    assert (issue.line, issue.key) == (line_of(text, name), f"connections.gw-gw.{name}")
    assert issue.message == f"{name} needs redirect_to (the gateway to send clients to)"


UNSUPPORTED = [
    ("conn", "version = 1", "1 (IKEv1): IKEv1 is not supported, tunsec speaks IKEv2 only (write version = 2)"),
    ("conn", "version = 0", "0 (IKEv1 and IKEv2): IKEv1 is not supported, tunsec speaks IKEv2 only "
     "(write version = 2)"),
    ("conn", "version = 3", "not an IKE version (2): '3'"),
    ("conn", "mobike = perhaps", "not a boolean (yes or no): 'perhaps'"),
    ("conn", "if_id_in = 42", "XFRM interface IDs are not supported"),
    ("conn", "if_id_out = %unique", "XFRM interface IDs are not supported"),
    ("conn", "vips = 224.0.0.1", "224.0.0.1 cannot be a virtual IP"),
    ("conn", "vips = 0.0.0.0, 10.3.0.1", "one virtual IP per address family (got '0.0.0.0, 10.3.0.1')"),
    ("conn", "vips = somewhere", "not an IPv4 or IPv6 address (0.0.0.0 or :: for any): 'somewhere'"),
    ("conn", "pools = p", "no pool p in pools { } (configured: none)"),
    ("conn", "aggressive = yes", "Aggressive Mode is IKEv1 and not supported"),
    ("conn", "pull = no", "push mode (IKEv1 Mode Config) is not supported"),
    ("conn", "dscp = 101110", "setting a DSCP on IKE packets is not supported"),
    ("conn", "childless = force", "childless IKE SAs are not supported"),
    ("conn", "ppk_id = x", "postquantum preshared keys (PPK) are not supported"),
    ("conn", "mediation = yes", "mediation is not supported"),
    ("conn", "unique = sometimes", "not a uniqueness policy (never, no, keep, replace): 'sometimes'"),
    ("conn", "fragmentation = maybe", "not a fragmentation mode (yes, accept, force, no): 'maybe'"),
    ("conn", "redirect_to = gw..example", "not an IPv4 or IPv6 address or a host name: 'gw..example'"),
    ("conn", "redirect_on = later", "expected init or auth, got 'later'"),
    ("conn", "redirect_to = 0.0.0.0", "0.0.0.0 cannot be a gateway to redirect to"),
    ("conn", "redirect_when = sometimes", "expected always or a number of IKE SAs (1 or more), got 'sometimes'"),
    ("conn", "local_port = 0", "0 is out of range 1..65535"),
    ("conn", "dpd_delay = soon", "not a duration (e.g. 30s, 5m, 1h, 1d): 'soon'"),
    ("local", "auth = eap-md5", "of the EAP methods only eap-mschapv2, eap-tls and eap-radius are supported"),
    ("local", "auth = xauth", "XAuth is IKEv1 and not supported (psk or pubkey)"),
    ("local", "auth = pubkey-sha256", "signature scheme and key strength constraints are not supported "
     "(psk, pubkey, rsa, rsa/pss, ecdsa or ed25519)"),
    ("local", "auth = magic", "not an authentication method (psk, pubkey, rsa, rsa/pss, ecdsa, ed25519): 'magic'"),
    ("local", "pubkeys = moon.pub", "raw public keys are not supported: use certificates"),
    ("local", "eap_id = carol", "eap_id is only used with auth = eap-mschapv2, eap-tls or eap-radius"),
    ("local", "certs = moonCert.pem", "certificates are only used with auth = pubkey"),
    ("remote", "auth = ecdsa", "constraints on the peer's key type are not supported: write auth = pubkey"),
    ("remote", "revocation = strict", "revocation checking is not supported (only relaxed, the default)"),
    ("remote", "certs = sunCert.pem", "pinning the peer's certificate is not supported: trust its CA (cacerts)"),
    ("remote", "groups = admins", "group membership constraints are not supported"),
    ("remote", "cacerts = caCert.pem", "CA certificates are only used with auth = pubkey"),
    ("child", "mode = transport", "transport mode is not supported (tunsec does tunnel mode only)"),
    ("child", "mode = pass", "pass (shunt) policies are not supported (tunsec does tunnel mode only)"),
    ("child", "updown = /nonexistent/_updown iptables",
     "/nonexistent/_updown is not an executable file (chmod +x it, or fix the path)"),
    ("child", "updown = _updown", "write the script's absolute path ('_updown' is relative; no shell searches PATH)"),
    ("child", "updown = '/bin/true", "cannot split the command: No closing quotation"),
    ("child", "ah_proposals = sha256", "AH is not supported (tunsec does ESP only)"),
    ("child", "ipcomp = yes", "IPComp is not supported"),
    ("child", "policies = no", "policies = no is not supported (tunsec always installs policies)"),
    ("child", "mark_in = 42", "netfilter marks are not supported"),
    ("child", "if_id_in = 7", "XFRM interface IDs are not supported"),
    ("child", "interface = eth0", "restricting policies to an interface is not supported"),
    ("child", "reqid = 5", "fixed reqids are not supported"),
    ("child", "hw_offload = yes", "hardware offload is not supported"),
    ("child", "close_action = hold", "not an action (none, trap, start): 'hold'"),
    ("child", "dpd_action = trap|start", "trap|start is not supported: choose trap or start"),
    ("child", "replay_window = 16", "16 is not 0 (off) or 32..65536"),
]  # fmt: skip


@pytest.mark.parametrize(("where", "line", "message"), UNSUPPORTED, ids=[u[1] for u in UNSUPPORTED])
def test_unsupported_keys_and_bad_values_name_file_line_and_key(where: str, line: str, message: str) -> None:
    text = with_line(where, line)
    key = line.split("=")[0].strip()
    section = {
        "conn": "connections.gw-gw",
        "local": "connections.gw-gw.local",
        "remote": "connections.gw-gw.remote",
        "child": "connections.gw-gw.children.net-net",
    }[where]
    issue = only_issue(text)
    assert (issue.file, issue.line, issue.key) == ("swanctl.conf", line_of(text, line), f"{section}.{key}")
    assert issue.message == message


def test_soft_limits_must_be_below_hard_limits() -> None:
    text = with_line("child", "life_time = 30m", with_line("child", "rekey_time = 1h"))
    issue = only_issue(text)
    assert (issue.line, issue.key) == (line_of(text, "rekey_time"), "connections.gw-gw.children.net-net.rekey_time")
    assert issue.message == "must be below life_time (3600 >= 1800)"
    # a hard limit alone must leave room for the default soft limit
    text = with_line("child", "life_time = 30m")
    issue = only_issue(text)
    assert (issue.line, issue.key) == (line_of(text, "life_time"), "connections.gw-gw.children.net-net.life_time")
    assert issue.message == "must be above rekey_time (1800 <= 3600, the default rekey_time)"
    child = parse_config(with_line("child", "life_bytes = 1m")).connections[0].children[0]
    assert (child.rekey_bytes, child.life_bytes, child.rand_bytes) == (0, 1 << 20, 1 << 20)


def test_unknown_keys_and_sections_in_every_section() -> None:
    text = PSK_CONF
    for where, line in [
        ("conn", "remote_addr = 192.168.0.2"),
        ("local", "idd = x"),
        ("remote", "authh = psk"),
        ("child", "remote_tss = 10.2.0.0/16"),
        ("secret", "secrett = x"),
    ]:
        text = with_line(where, line, text)
    text = with_line("conn", "extra { }", text)
    errors = [(e.line, e.key, e.message) for e in issues_of(text)]
    assert errors == [
        (line_of(text, "extra {"), "connections.gw-gw.extra", "unknown section"),
        (line_of(text, "remote_addr ="), "connections.gw-gw.remote_addr", "unknown key (did you mean 'remote_addrs'?)"),
        (line_of(text, "idd ="), "connections.gw-gw.local.idd", "unknown key (did you mean 'id'?)"),
        (line_of(text, "authh ="), "connections.gw-gw.remote.authh", "unknown key (did you mean 'auth'?)"),
        (line_of(text, "remote_tss"), "connections.gw-gw.children.net-net.remote_tss",
         "unknown key (did you mean 'remote_ts'?)"),
        (line_of(text, "secrett"), "secrets.ike-1.secrett", "unknown key (did you mean 'secret'?)"),
    ]  # fmt: skip


def test_second_authentication_round_is_refused() -> None:
    text = PSK_CONF.replace(
        "        remote {", "        local-2 {\n            auth = psk\n        }\n        remote {"
    )
    issue = only_issue(text)
    assert (issue.line, issue.key) == (line_of(text, "local-2 {"), "connections.gw-gw.local-2")
    assert issue.message == "a second local authentication round (RFC 4739) is not supported"


def test_suffixed_round_names_are_accepted() -> None:
    text = PSK_CONF.replace("        local {", "        local-1 {").replace("        remote {", "        remote-a {")
    assert parse_config(text).connections[0].ike.local.id == MOON


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("local_addrs", "moon.strongswan.org", "DNS names are not supported, write an IP address: "
         "'moon.strongswan.org'"),
        ("local_addrs", "192.168.0.0/24", "subnets and ranges are not supported, write single addresses: "
         "'192.168.0.0/24'"),
        ("remote_addrs", "192.168.0.2-192.168.0.9", "subnets and ranges are not supported, write single "
         "addresses: '192.168.0.2-192.168.0.9'"),
        ("remote_addrs", "%any, 192.168.0.2", "%any cannot be combined with addresses"),
        ("remote_addrs", "%any6", "%any6 is not supported: write %any"),
        ("remote_addrs", "192.168.0.2,", "empty item in the list"),
        ("remote_addrs", "224.0.0.1", "224.0.0.1 cannot be a tunnel endpoint (unspecified or multicast)"),
        ("remote_addrs", "fe80::1%eth0", "scoped addresses are not supported: 'fe80::1%eth0'"),
        ("remote_addrs", "2001:db8::2", "no address family in common with local_addrs"),
    ],
)  # fmt: skip
def test_address_lists(key: str, value: str, message: str) -> None:
    text = PSK_CONF.replace(f"{key} = 192.168.0.{1 if key == 'local_addrs' else 2}", f"{key} = {value}")
    issue = only_issue(text)
    assert (issue.line, issue.key, issue.message) == (line_of(text, value), f"connections.gw-gw.{key}", message)


def test_several_addresses_are_an_error() -> None:
    # the engine initiates to and accepts IKE from one address: the others would silently not match
    text = PSK_CONF.replace("remote_addrs = 192.168.0.2", "remote_addrs = 192.168.0.2, 192.168.0.3")
    issue = only_issue(text)
    assert (issue.line, issue.key) == (line_of(text, "remote_addrs ="), "connections.gw-gw.remote_addrs")
    assert issue.message.startswith("tunsec uses one address per side (or %any): list one")


def test_start_needs_a_remote_address() -> None:
    text = PSK_CONF.replace("remote_addrs = 192.168.0.2", "remote_addrs = %any")
    issue = only_issue(text)
    assert (issue.line, issue.key) == (line_of(text, "start_action"), "connections.gw-gw.children.net-net.start_action")
    assert issue.message == "start_action = start needs a peer to initiate to (remote_addrs is %any)"
    assert parse_config(text.replace("start_action = start", "start_action = none")).connections[0].remote_addrs == ()


def test_connection_needs_children() -> None:
    no_children = PSK_CONF.replace("net-net {", "net-net-gone {").replace("        children {", "        kids {")
    errors = [(e.key, e.message) for e in issues_of(no_children)]
    assert (
        "connections.gw-gw.children",
        "a connection needs at least one child ('children { NAME { ... } }')",
    ) in errors
    assert ("connections.gw-gw.kids", "unknown section") in errors


def test_child_names_may_repeat_across_connections_and_ike_disambiguates() -> None:
    # strongSwan's examples call every connection's child "net"; --child is then resolved with --ike
    second = PSK_CONF.replace("connections {\n", "connections {\n" + PSK_CONF.split("connections {\n")[1].split(
        "\n}\n")[0].replace("gw-gw {", "gw-gw-2 {") + "\n", 1)  # fmt: skip
    conns = parse_config(second).connections
    assert [(c.name, [ch.name for ch in c.children]) for c in conns] == [
        ("gw-gw-2", ["net-net"]), ("gw-gw", ["net-net"])]
    with pytest.raises(LookupError, match=r"child 'net-net' is in several connections \(gw-gw-2, gw-gw\): "
                                          "choose one with --ike"):
        find_child(conns, "net-net")
    assert find_child(conns, "net-net", "gw-gw") is conns[1]
    assert find_child(conns, "net-net", "gw-gw-2") is conns[0]
    with pytest.raises(LookupError, match=r"connection gw-gw has no child 'web' \(its children: net-net\)"):
        find_child(conns, "web", "gw-gw")
    with pytest.raises(LookupError, match="no connection 'gw'"):
        find_child(conns, "net-net", "gw")
    with pytest.raises(LookupError, match="no child 'web' in any connection"):
        find_child(conns, "web")
    assert find_child(conns[1:], "net-net") is conns[1]   # unique: --ike may be left out


def test_keys_directly_in_sections_that_take_sections() -> None:
    text = PSK_CONF + "connections {\n  x = 1\n}\nsecrets {\n  y = 2\n}\nauthorities {\n  z = 3\n}\n"
    assert [(e.key, e.message) for e in issues_of(text)] == [
        ("connections.x", "connections takes one section per connection ('NAME { ... }'), not keys"),
        ("secrets.y", "secrets takes sections ('ike-NAME { ... }', 'private-NAME { ... }'), not keys"),
        ("authorities.z", "authorities takes one section per CA ('NAME { cacert = FILE }'), not keys"),
    ]
    children = PSK_CONF.replace("        children {", "        children {\n            x = 1")
    assert [(e.key, e.message) for e in issues_of(children)] == [
        ("connections.gw-gw.children.x", "children takes one section per child ('NAME { local_ts = ... }'), not keys")
    ]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("ntlm-carol", "NTLM secrets are not supported (EAP-MSCHAPv2 passwords go in eap-NAME sections)"),
        ("xauth", "XAuth secrets are not supported (XAuth is IKEv1)"),
        ("ppk1", "postquantum preshared keys (PPK) are not supported"),
        ("pkcs12-a", "PKCS#12 containers are not supported (put the certificate in x509/ and the key in private/)"),
        ("token-1", "keys on tokens or smartcards (PKCS#11) are not supported"),
        ("psk", "unknown secret type (sections are named ike..., eap..., private..., rsa..., ecdsa... or pkcs8...)"),
    ],
)
def test_unsupported_secret_types(name: str, message: str) -> None:
    text = PSK_CONF.replace("secrets {\n", f"secrets {{\n    {name} {{\n        secret = x\n    }}\n")
    assert only_issue(text) == ConfigIssue("swanctl.conf", line_of(text, f"{name} {{"), f"secrets.{name}", message)


# --------------------------------------------------------------------------
# Proposals and traffic selectors
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "key", "message"),
    [
        ("proposals = aes256gcm16-prfsha384-ecp384, aes128-sha256-modp2048", "proposals = aes256-sha999-ecp384",
         "connections.gw-gw.proposals", "unknown or unsupported algorithm 'sha999'"),
        ("proposals = aes256gcm16-prfsha384-ecp384, aes128-sha256-modp2048", "proposals = aes256gcm16-ecp384",
         "connections.gw-gw.proposals", "AEAD proposal 'aes256gcm16-ecp384' needs a PRF (e.g. prfsha256)"),
        ("esp_proposals = aes128gcm16-ecp256", "esp_proposals = aes128-sha256",
         "connections.gw-gw.children.net-net.esp_proposals",
         "ESP proposal 'aes128-sha256': tunsec's dataplane supports only AES-GCM"),
        ("esp_proposals = aes128gcm16-ecp256", "esp_proposals = 3des-md5",
         "connections.gw-gw.children.net-net.esp_proposals", "unknown or unsupported algorithm '3des'"),
    ],
)  # fmt: skip
def test_bad_proposals_are_reported(old: str, new: str, key: str, message: str) -> None:
    text = PSK_CONF.replace(old, new)
    assert only_issue(text) == ConfigIssue("swanctl.conf", line_of(text, new), key, message)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("dynamic", Ts(ipaddress.IPv4Address(0), ipaddress.IPv4Address(0), dynamic=True)),
        ("dynamic[tcp/80]", Ts(ipaddress.IPv4Address(0), ipaddress.IPv4Address(0), 6, 80, 80, dynamic=True)),
        ("10.1.0.0/16", Ts.parse("10.1.0.0/16")),
        ("10.1.2.3/16", Ts.parse("10.1.0.0/16")),
        ("10.1.0.7", Ts.host("10.1.0.7")),
        ("10.1.0.5-10.1.0.9", Ts.parse("10.1.0.5-10.1.0.9")),
        ("fec1::/64[udp/500-600]", Ts.parse("fec1::/64[udp/500-600]")),
        ("0.0.0.0/0[tcp/https]", Ts.parse("0.0.0.0/0[tcp/443]")),
        ("0.0.0.0/0[icmp/8]", Ts(ipaddress.IPv4Address(0), ipaddress.IPv4Address(0xFFFFFFFF), 1, 0x0800, 0x08FF)),
        ("10.0.0.0/8[gre]", Ts.parse("10.0.0.0/8[gre]")),
    ],
)
def test_traffic_selectors(text: str, expected: Ts) -> None:
    remote = "fec2::/64" if expected.version == 6 and not expected.dynamic else "10.2.0.0/16"
    config = parse_config(PSK_CONF.replace("local_ts = 10.1.0.0/16", f"local_ts = {text}")
                          .replace("remote_ts = 10.2.0.0/16", f"remote_ts = {remote}"))
    assert config.connections[0].ike.children[0].local_ts == (expected,)


@pytest.mark.parametrize(
    ("local", "remote", "message"),
    [
        ("fec1::/64", "10.2.0.0/16", "no local/remote selector pair of the same address family and protocol"),
        ("10.1.0.0/16[tcp]", "10.2.0.0/16[udp]", "no local/remote selector pair of the same address family"),
        (", ".join(f"10.1.{i}.0/24" for i in range(9)), "10.2.0.0/16",
         "9 local/remote selector pairs; the fast path takes at most 8 per SA"),
    ],
)  # fmt: skip
def test_child_selectors_that_cannot_reach_the_fast_path(local: str, remote: str, message: str) -> None:
    text = PSK_CONF.replace("local_ts = 10.1.0.0/16", f"local_ts = {local}").replace(
        "remote_ts = 10.2.0.0/16", f"remote_ts = {remote}")
    issue = only_issue(text)
    assert (issue.line, issue.key) == (line_of(text, "remote_ts"), "connections.gw-gw.children.net-net.remote_ts")
    assert issue.message.startswith(message), issue.message


def test_dynamic_selectors_are_checked_per_sa_not_in_the_config() -> None:
    # dynamic is the IKE address, only known per SA: the engine checks those (tests/ike/test_ts_fast_path.py)
    text = PSK_CONF.replace("local_ts = 10.1.0.0/16", "local_ts = dynamic").replace(
        "remote_ts = 10.2.0.0/16", "remote_ts = fec2::/64")
    assert parse_config(text).connections[0].ike.children[0].remote_ts == (Ts.parse("fec2::/64"),)


def test_traffic_selector_lists_and_errors() -> None:
    text = PSK_CONF.replace("remote_ts = 10.2.0.0/16", "remote_ts = 10.2.0.0/16, 10.3.0.0/16[tcp/22], dynamic")
    assert [str(t) for t in parse_config(text).connections[0].ike.children[0].remote_ts] == [
        "10.2.0.0/16", "10.3.0.0/16[tcp/22]", "dynamic",
    ]  # fmt: skip
    bad = PSK_CONF.replace("remote_ts = 10.2.0.0/16", "remote_ts = 10.2.0.0/33, bogus, 10.0.0.9-10.0.0.1, [tcp], ,")
    issue = only_issue(bad)
    assert (issue.line, issue.key) == (line_of(bad, "remote_ts"), "connections.gw-gw.children.net-net.remote_ts")
    assert issue.message == (
        "not a CIDR prefix or address range: '10.2.0.0/33'; not a CIDR prefix or address range: 'bogus'; "
        "not an address range (mixed families or backwards): '10.0.0.9-10.0.0.1'; missing subnet in '[tcp]'; "
        "empty item in the list; empty item in the list"
    )


# --------------------------------------------------------------------------
# Certificates: a CA, RSA and ECDSA end entities laid out as swanctl expects
# --------------------------------------------------------------------------

WHEN = EPOCH + datetime.timedelta(days=30)


@dataclass
class Pki:
    ca: Issued
    sub_ca: Issued  # an intermediate under ca
    moon: Issued  # RSA, issued by ca
    sun: Issued  # ECDSA, issued by sub_ca
    other_ca: Issued


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca = make_ca("strongSwan Root CA", "ecdsa")
    sub_ca = make_ca("strongSwan Sub CA", "ecdsa", issuer=ca)
    moon = make_cert(ca, "moon.strongswan.org", ["moon.strongswan.org", "192.168.0.1"], kind="rsa")
    sun = make_cert(sub_ca, "sun.strongswan.org", ["sun.strongswan.org"], kind="ecdsa")
    return Pki(ca, sub_ca, moon, sun, make_ca("Other CA", "ecdsa"))


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def key_bytes(
    key: PrivateKey,
    encoding: serialization.Encoding = serialization.Encoding.PEM,
    fmt: serialization.PrivateFormat = serialization.PrivateFormat.TraditionalOpenSSL,
    passphrase: bytes | None = None,
) -> bytes:
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    return key.private_bytes(encoding, fmt, enc)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


SUN_DN = '            id = "C=CH, O=tunsec test, CN=sun.strongswan.org"'
CERT_CONF = """\
connections {
    host-host {
        local_addrs = 192.168.0.1
        remote_addrs = 192.168.0.2
        local {
            auth = pubkey
            certs = moonCert.pem
            id = moon.strongswan.org
        }
        remote {
            auth = pubkey
            id = "C=CH, O=tunsec test, CN=sun.strongswan.org"
        }
        children {
            host-host {
                start_action = trap
            }
        }
    }
}
"""

SUN_CONF = """\
connections {
    host-host {
        local_addrs = 192.168.0.2
        remote_addrs = 192.168.0.1
        local {
            auth = ecdsa
            certs = sunCert.der
        }
        remote {
            auth = pubkey
            id = moon.strongswan.org
        }
        children {
            host-host {
            }
        }
    }
}
"""


def moon_dir(tmp: Path, pki: Pki, conf: str = CERT_CONF) -> Path:
    """moon's /etc/swanctl: RSA cert (PEM) and key (PKCS#1 PEM in private/), root and sub CA (DER/PEM)."""
    write(tmp / "x509" / "moonCert.pem", pem(pki.moon.cert))
    write(tmp / "x509ca" / "caCert.der", der(pki.ca.cert))
    write(tmp / "x509ca" / "subCaCert.pem", pem(pki.sub_ca.cert))
    write(tmp / "private" / "moonKey.pem", key_bytes(pki.moon.key))
    return write(tmp / "swanctl.conf", conf.encode())


def sun_dir(tmp: Path, pki: Pki, conf: str = SUN_CONF) -> Path:
    """sun's: ECDSA cert (DER) and key (SEC1 DER in ecdsa/), sub CA as intermediate, root CA."""
    write(tmp / "x509" / "sunCert.der", der(pki.sun.cert))
    write(tmp / "x509ca" / "caCert.pem", pem(pki.ca.cert))
    write(tmp / "x509ca" / "subCaCert.pem", pem(pki.sub_ca.cert))
    write(tmp / "ecdsa" / "sunKey.der", key_bytes(pki.sun.key, serialization.Encoding.DER))
    return write(tmp / "swanctl.conf", conf.encode())


def spki(key: object) -> bytes:
    assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | x509.Certificate)
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_certificate_config(tmp_path: Path, pki: Pki) -> None:
    config = load_config(moon_dir(tmp_path, pki))
    (conn,) = config.connections
    local, remote = conn.ike.local, conn.ike.remote
    assert local.method == "pubkey" and local.id == Identity.parse("moon.strongswan.org")
    assert local.cert == pki.moon.cert and not local.rsa_pss
    assert local.private_key is not None and spki(local.private_key) == spki(pki.moon.key)
    assert local.intermediates == ()  # moon's issuer is the (self-signed) root
    assert remote.method == "pubkey" and remote.id == Identity.from_name(pki.sun.cert.subject)
    assert set(remote.cas) == {pki.ca.cert, pki.sub_ca.cert}  # everything in x509ca/
    assert conn.ike.psk is None and conn.children[0].start_action == "trap"
    assert "PRIVATE" not in repr(config) and "private_key" not in repr(local)


def test_ecdsa_der_key_default_id_and_intermediate(tmp_path: Path, pki: Pki) -> None:
    (conn,) = load_config(sun_dir(tmp_path, pki)).connections
    local = conn.ike.local
    assert local.cert == pki.sun.cert
    assert local.id == Identity.from_name(pki.sun.cert.subject)  # strongSwan's default: the subject DN
    assert local.private_key is not None and spki(local.private_key) == spki(pki.sun.key)
    assert local.intermediates == (pki.sub_ca.cert,)  # sent along so moon can build the chain


@pytest.mark.parametrize(
    ("folder", "encoding", "fmt"),
    [
        ("private", serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8),
        ("private", serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL),
        ("rsa", serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL),
        ("rsa", serialization.Encoding.DER, serialization.PrivateFormat.PKCS8),
        ("pkcs8", serialization.Encoding.DER, serialization.PrivateFormat.PKCS8),
    ],
)
def test_private_keys_are_found_in_every_folder(
    tmp_path: Path, pki: Pki, folder: str, encoding: serialization.Encoding, fmt: serialization.PrivateFormat
) -> None:
    path = moon_dir(tmp_path, pki)
    (tmp_path / "private" / "moonKey.pem").unlink()
    write(tmp_path / folder / "key", key_bytes(pki.moon.key, encoding, fmt))
    write(tmp_path / "private" / "unrelated.pem", key_bytes(pki.sun.key))  # not the certificate's key
    local = load_config(path).connections[0].ike.local
    assert local.private_key is not None and spki(local.private_key) == spki(pki.moon.key)


def test_encrypted_key_with_passphrase_from_secrets(tmp_path: Path, pki: Pki) -> None:
    conf = (
        CERT_CONF
        + 'secrets {\n    private-moon {\n        file = moonKey.pem\n        secret = "pass word"\n    }\n}\n'
    )
    path = moon_dir(tmp_path, pki, conf)
    write(tmp_path / "private" / "moonKey.pem", key_bytes(pki.moon.key, fmt=serialization.PrivateFormat.PKCS8,
                                                          passphrase=b"pass word"))  # fmt: skip
    local = load_config(path).connections[0].ike.local
    assert local.private_key is not None and spki(local.private_key) == spki(pki.moon.key)

    path.write_text(conf.replace('"pass word"', "hunter2"))
    errors = load_errors(path)
    assert ConfigIssue(
        str(path), line_of(conf, "secret ="), "secrets.private-moon.secret",
        "private/moonKey.pem: cannot decrypt it (wrong passphrase?) or not a private key",
    ) in errors  # fmt: skip
    assert "hunter2" not in str(errors) and "pass word" not in str(errors)

    path.write_text(CERT_CONF)
    errors = load_errors(path)
    assert errors[0] == ConfigIssue(
        str(tmp_path / "private" / "moonKey.pem"), 0, "",
        "the key is encrypted: add a secrets.private-NAME section with file = moonKey.pem and secret = PASSPHRASE",
    )  # fmt: skip
    assert errors[1].key == "connections.host-host.local.certs"
    assert errors[1].message.startswith("no private key for x509/moonCert.pem (CN=moon.strongswan.org,")


def load_errors(path: Path) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.errors


def test_passphrase_for_a_missing_file(tmp_path: Path, pki: Pki) -> None:
    conf = CERT_CONF + "secrets {\n    rsa-x {\n        file = nothere.pem\n        secret = x\n    }\n}\n"
    errors = load_errors(moon_dir(tmp_path, pki, conf))
    assert [(e.line, e.key, e.message) for e in errors] == [
        (line_of(conf, "file = nothere"), "secrets.rsa-x.file", "no such file: rsa/nothere.pem")
    ]


def test_own_certificate_found_by_id_in_x509(tmp_path: Path, pki: Pki) -> None:
    conf = CERT_CONF.replace("            certs = moonCert.pem\n", "")
    write(tmp_path / "x509" / "other.pem", pem(pki.sun.cert))  # no key for it here
    local = load_config(moon_dir(tmp_path, pki, conf)).connections[0].ike.local
    assert local.cert == pki.moon.cert


def test_absolute_certificate_paths(tmp_path: Path, pki: Pki) -> None:
    elsewhere = write(tmp_path / "elsewhere" / "moon.crt", der(pki.moon.cert))
    ca = write(tmp_path / "elsewhere" / "ca.crt", pem(pki.ca.cert))
    conf = CERT_CONF.replace("certs = moonCert.pem", f"certs = {elsewhere}").replace(
        SUN_DN, f"{SUN_DN}\n            cacerts = {ca}"
    )
    conn = load_config(moon_dir(tmp_path / "etc", pki, conf)).connections[0]
    assert conn.ike.local.cert == pki.moon.cert
    assert conn.ike.remote.cas == (pki.ca.cert,)  # cacerts restricts the trust anchors


def test_authorities_add_trust_anchors(tmp_path: Path, pki: Pki) -> None:
    write(tmp_path / "x509ca" / "other.pem", pem(pki.other_ca.cert))
    abs_ca = write(tmp_path / "cas" / "ca.der", der(pki.ca.cert))
    conf = CERT_CONF + (
        f"authorities {{\n    other {{\n        cacert = other.pem\n    }}\n"
        f"    root {{\n        file = {abs_ca}\n    }}\n}}\n"
    )
    path = write(tmp_path / "swanctl.conf", conf.encode())
    write(tmp_path / "x509" / "moonCert.pem", pem(pki.moon.cert))
    write(tmp_path / "private" / "moonKey.pem", key_bytes(pki.moon.key))
    remote = load_config(path).connections[0].ike.remote
    assert set(remote.cas) == {pki.other_ca.cert, pki.ca.cert}


def test_mixed_authentication_pubkey_and_psk(tmp_path: Path, pki: Pki) -> None:
    conf = CERT_CONF.replace(f"auth = pubkey\n{SUN_DN}", "auth = psk\n            id = sun.strongswan.org") + (
        "secrets {\n    ike-sun {\n        id = sun.strongswan.org\n        secret = sunsecret\n    }\n}\n"
    )
    ike = load_config(moon_dir(tmp_path, pki, conf)).connections[0].ike
    assert (ike.local.method, ike.remote.method, ike.psk) == ("pubkey", "psk", Secret(b"sunsecret"))
    assert ike.remote.cas == ()


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d, c: c.replace("id = moon.strongswan.org", "id = venus.strongswan.org"),
         ("connections.host-host.local.id", "is not in the certificate x509/moonCert.pem (CN=moon.strongswan.org,"
          "O=tunsec test,C=CH) as subject or subjectAltName")),
        (lambda d, c: c.replace("auth = pubkey\n            certs", "auth = ecdsa\n            certs"),
         ("connections.host-host.local.auth", "auth wants an ecdsa key but the certificate has an rsa key")),
        (lambda d, c: c.replace("certs = moonCert.pem", "certs = nothere.pem"),
         ("connections.host-host.local.certs", "x509/nothere.pem: cannot read: No such file or directory")),
        (lambda d, c: c.replace("certs = moonCert.pem", "certs = moonCert.pem, other.pem"),
         ("connections.host-host.local.certs", "x509/other.pem: cannot read: No such file or directory")),
        (lambda d, c: c.replace(SUN_DN, f"{SUN_DN}\n            cacerts = ../x509/moonCert.pem"),
         ("connections.host-host.remote.cacerts", "x509ca/../x509/moonCert.pem: CN=moon.strongswan.org,"
          "O=tunsec test,C=CH is not a CA certificate")),
    ],
)  # fmt: skip
def test_certificate_errors(
    tmp_path: Path, pki: Pki, mutate: Callable[[Path, str], str], expected: tuple[str, str]
) -> None:
    conf = mutate(tmp_path, CERT_CONF)
    errors = load_errors(moon_dir(tmp_path, pki, conf))
    assert [(e.key, e.message) for e in errors] == [expected]
    assert errors[0].line == line_of(conf, expected[0].rsplit(".", 1)[1] + " =")


def test_certs_lists_candidates_and_the_one_with_the_local_id_is_used(tmp_path: Path, pki: Pki) -> None:
    write(tmp_path / "x509" / "sunCert.pem", pem(pki.sun.cert))   # listed first, but not moon's identity
    conf = CERT_CONF.replace("certs = moonCert.pem", "certs = sunCert.pem, moonCert.pem")
    local = load_config(moon_dir(tmp_path, pki, conf)).connections[0].ike.local
    assert local.cert == pki.moon.cert and local.id == Identity.parse("moon.strongswan.org")
    assert local.private_key is not None and spki(local.private_key) == spki(pki.moon.key)

    # without an id the first candidate is used and its subject is the identity, as in strongSwan
    no_id = CERT_CONF.replace("            id = moon.strongswan.org\n", "")
    local = load_config(moon_dir(tmp_path, pki, no_id.replace("certs = moonCert.pem", "certs = moonCert.pem, "
                                                             "sunCert.pem"))).connections[0].ike.local
    assert local.cert == pki.moon.cert and local.id == Identity.from_name(pki.moon.cert.subject)
    errors = load_errors(moon_dir(tmp_path, pki, no_id.replace("certs = moonCert.pem", "certs = sunCert.pem, "
                                                               "moonCert.pem")))
    assert [(e.key, e.message.split(" (")[0]) for e in errors] == [
        ("connections.host-host.local.certs", "no private key for x509/sunCert.pem")]

    # none of them has the identity: the error names every candidate
    venus = conf.replace("id = moon.strongswan.org", "id = venus.strongswan.org")
    (error,) = load_errors(moon_dir(tmp_path, pki, venus))
    assert error.key == "connections.host-host.local.id"
    assert error.message.startswith("is not in the certificates x509/sunCert.pem (")
    assert "x509/moonCert.pem (" in error.message


def test_files_that_are_not_credentials(tmp_path: Path, pki: Pki) -> None:
    path = moon_dir(tmp_path, pki)
    write(tmp_path / "x509ca" / "README", b"not a certificate")
    write(tmp_path / "x509ca" / "moon.pem", pem(pki.moon.cert))  # not a CA
    write(tmp_path / "private" / "junk.key", b"\x30\x03\x02\x01\x00")
    write(tmp_path / "ecdsa" / "rsa.pem", key_bytes(pki.moon.key))
    write(tmp_path / "private" / ".hidden", b"ignored, like an editor's backup")
    errors = [(Path(e.file).relative_to(tmp_path).as_posix(), e.line, e.message) for e in load_errors(path)]
    assert sorted(errors) == [
        ("ecdsa/rsa.pem", 0, "not an ECDSA key (rsa) in the ecdsa folder"),
        ("private/junk.key", 0, "not a PEM or DER private key"),
        ("x509ca/README", 0, "not a PEM or DER X.509 certificate"),
        ("x509ca/moon.pem", 0, "CN=moon.strongswan.org,O=tunsec test,C=CH is not a CA certificate "
         "(basicConstraints CA:TRUE)"),
    ]  # fmt: skip


def test_crls_are_refused_not_ignored(tmp_path: Path, pki: Pki) -> None:
    path = moon_dir(tmp_path, pki)
    write(tmp_path / "x509crl" / "ca.crl", b"whatever")
    assert load_errors(path) == [
        ConfigIssue(
            str(tmp_path / "x509crl"), 0, "",
            "CRLs are not supported (tunsec does no revocation checking): the folder must be empty",
        )
    ]  # fmt: skip


def test_pubkey_peer_needs_a_ca(tmp_path: Path, pki: Pki) -> None:
    path = moon_dir(tmp_path, pki)
    for ca in (tmp_path / "x509ca").iterdir():
        ca.unlink()
    (issue,) = load_errors(path)
    assert (issue.line, issue.key) == (line_of(CERT_CONF, "remote {") + 1, "connections.host-host.remote.auth")
    assert issue.message.startswith("auth = pubkey needs a CA certificate to verify the peer")


def test_psk_configs_never_read_the_credential_folders(tmp_path: Path) -> None:
    write(tmp_path / "x509ca" / "broken.pem", b"junk")
    write(tmp_path / "x509crl" / "ca.crl", b"junk")
    write(tmp_path / "private" / "broken.pem", b"junk")
    path = write(tmp_path / "swanctl.conf", PSK_CONF.encode())
    assert load_config(path).connections[0].ike.psk is not None


def test_authority_errors(tmp_path: Path, pki: Pki) -> None:
    write(tmp_path / "x509ca" / "moon.pem", pem(pki.moon.cert))
    write(tmp_path / "x509ca" / "ca.pem", pem(pki.ca.cert))
    text = PSK_CONF + (
        "authorities {\n"
        "    a {\n        cacert = moon.pem\n    }\n"
        "    b {\n        cacert = missing.pem\n    }\n"
        "    c {\n        crl_uris = http://crl.example/ca.crl\n        cacert = ca.pem\n    }\n"
        "    d {\n        handle = 0a0b\n    }\n"
        "}\n"
    )
    path = write(tmp_path / "swanctl.conf", text.encode())
    errors = [(e.line, e.key, e.message) for e in load_errors(path)]
    subject = "CN=moon.strongswan.org,O=tunsec test,C=CH"
    assert errors == [
        (line_of(text, "cacert = moon.pem"), "authorities.a.cacert",
         f"x509ca/moon.pem: {subject} is not a CA certificate"),
        (line_of(text, "missing.pem"), "authorities.b.cacert",
         "x509ca/missing.pem: cannot read: No such file or directory"),
        (line_of(text, "crl_uris"), "authorities.c.crl_uris", "revocation checking (CRL and OCSP) is not supported"),
        (line_of(text, "    d {"), "authorities.d.cacert", "required key is missing"),
        (line_of(text, "handle"), "authorities.d.handle",
         "CA certificates on tokens (PKCS#11) are not supported: use cacert = FILE"),
    ]  # fmt: skip


def test_credentials_are_next_to_the_main_file_even_from_includes(tmp_path: Path, pki: Pki) -> None:
    main = moon_dir(tmp_path, pki, "include conf.d/*.conf\n")
    write(tmp_path / "conf.d" / "moon.conf", CERT_CONF.encode())
    (conn,) = load_config(main).connections
    assert conn.ike.local.cert == pki.moon.cert
    assert conn.file == str(tmp_path / "conf.d" / "moon.conf")


# --------------------------------------------------------------------------
# The engine accepts what the config produces: two configs negotiate
# --------------------------------------------------------------------------

MOON_IP, SUN_IP = "192.168.0.1", "192.168.0.2"


def negotiate(moon: Config, sun: Config, conn: str, child: str) -> tuple[ChildSaUp, ChildSaUp]:
    net = Network()
    a = net.add(MOON_IP, IkeEndpoint([c.ike for c in moon.connections], wall_clock=lambda: WHEN))
    net.add(SUN_IP, IkeEndpoint([c.ike for c in sun.connections], wall_clock=lambda: WHEN))
    a.initiate(conn, child, net.now)
    net.run(until=net.now + 60)   # the rekey and DPD timers of the config lie hours ahead
    ev_a, ev_b = net.take(MOON_IP), net.take(SUN_IP)
    assert [type(e) for e in ev_a] == [IkeSaUp, ChildSaUp], ev_a
    assert [type(e) for e in ev_b] == [IkeSaUp, ChildSaUp], ev_b
    up_a, up_b = ev_a[1], ev_b[1]
    assert isinstance(up_a, ChildSaUp) and isinstance(up_b, ChildSaUp)
    return up_a, up_b


def test_psk_configs_negotiate_with_the_engine() -> None:
    sun_conf = (
        PSK_CONF.replace("192.168.0.1", "SUN").replace("192.168.0.2", "192.168.0.1").replace("SUN", "192.168.0.2")
        .replace("id = moon.strongswan.org", "id = MOON").replace("id = sun.strongswan.org", "id = moon.strongswan.org")
        .replace("id = MOON", "id = sun.strongswan.org")
        .replace("local_ts = 10.1.0.0/16", "local_ts = 10.2.0.0/16")
        .replace("remote_ts = 10.2.0.0/16", "remote_ts = 10.1.0.0/16")
        .replace("start_action = start", "start_action = none")
    )  # fmt: skip
    up_a, up_b = negotiate(parse_config(PSK_CONF), parse_config(sun_conf), "gw-gw", "net-net")
    assert [str(t) for t in up_a.local_ts] == ["10.1.0.0/16"] and [str(t) for t in up_b.local_ts] == ["10.2.0.0/16"]
    assert up_a.alg == "aes128gcm16"


def test_certificate_configs_negotiate_with_the_engine(tmp_path: Path, pki: Pki) -> None:
    moon = load_config(moon_dir(tmp_path / "moon", pki))
    sun = load_config(sun_dir(tmp_path / "sun", pki))
    up_a, up_b = negotiate(moon, sun, "host-host", "host-host")
    assert up_a.local_ts == (Ts.host(MOON_IP),) and up_b.local_ts == (Ts.host(SUN_IP),)  # dynamic


# --------------------------------------------------------------------------
# Property tests: nothing but ConfigError, ever
# --------------------------------------------------------------------------


def _parse_or_error(text: str, path: str) -> list[ConfigIssue]:
    try:
        parse_config(text, path)
    except ConfigError as exc:
        assert exc.errors, "ConfigError without issues"
        return exc.errors
    return []


@pytest.fixture(scope="module")
def empty_dir() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        yield os.path.join(tmp, "fuzz.conf")  # no credential folders next to it


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text())
def test_random_text_only_raises_config_error(empty_dir: str, text: str) -> None:
    assume("include" not in text)
    for issue in _parse_or_error(text, empty_dir):
        assert issue.file == empty_dir


_TOKENS = st.sampled_from(
    ["connections", "secrets", "authorities", "c", "children", "local", "remote", "local-2", "ike", "private",
     "{", "}", "=", " ", "\n", "#", '"', "x", "auth", "psk", "pubkey", "id", "moon", "@#0a", "%any", "secret",
     "0x0102", "0sAQI=", "local_ts", "remote_ts", "dynamic", "10.0.0.0/8", "[tcp/80]", ",", "proposals",
     "esp_proposals", "aes128gcm16", "-", "prfsha256", "ecp256", "start_action", "start", "remote_addrs",
     "192.0.2.1", "version", "2", "mode", "certs", "cacerts", "file", "cacert", "mobike", "no", "yes"]
)  # fmt: skip


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(st.lists(_TOKENS, max_size=80))
def test_token_soup_only_raises_config_error(empty_dir: str, tokens: list[str]) -> None:
    text = "".join(tokens)
    for issue in _parse_or_error(text, empty_dir):
        assert issue.file == empty_dir and 1 <= issue.line <= text.count("\n") + 1


_KEYS = [
    ("conn", k) for k in ("version", "local_addrs", "remote_addrs", "local_port", "remote_port", "proposals", "encap",
                          "mobike", "dpd_delay", "fragmentation", "send_cert", "unique", "keyingtries", "rekey_time",
                          "dscp", "childless", "if_id_in")
] + [("local", k) for k in ("auth", "id", "round")] + [("remote", k) for k in ("auth", "id", "revocation")] + [
    ("child", k) for k in ("local_ts", "remote_ts", "esp_proposals", "mode", "start_action", "close_action",
                           "dpd_action", "rekey_time", "life_bytes", "replay_window", "hw_offload", "copy_dscp")
] + [("secret", k) for k in ("id-x", "secret")]  # fmt: skip


def quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(_KEYS), st.text(max_size=40) | st.from_regex(r"[0-9a-z/.:\[\]\-,%@# ]{0,30}"))
def test_any_value_of_any_key_is_a_clean_error(empty_dir: str, where_key: tuple[str, str], value: str) -> None:
    where, key = where_key
    text = with_line(where, f"{key} = {quoted(value)}")
    for issue in _parse_or_error(text, empty_dir):
        assert issue.message and issue.line >= 1
        assert PSK_TEXT not in str(issue)


def test_byte_and_packet_soft_limits_are_jittered_per_sa() -> None:
    # strongSwan: the soft limit is rekey_* minus a random part of rand_* (life_* - rekey_* by default),
    # drawn for every SA so that peers and SAs do not all rekey at once
    text = with_line("child", "rekey_bytes = 1000")
    text = with_line("child", "life_bytes = 1500", text)
    text = with_line("child", "rekey_packets = 100", text)
    (child,) = parse_config(text).connections[0].children
    assert child.hard_lifetime() == Lifetime(bytes=1500, packets=110, seconds=3960)
    draws: list[int] = []

    def randbelow(n: int) -> int:
        draws.append(n)
        return n - 1   # the largest jitter allowed

    assert child.soft_lifetime(randbelow) == Lifetime(bytes=500, packets=90)
    assert draws == [501, 11]   # rand_bytes = 500, rand_packets = 10: up to and including them
    assert child.soft_lifetime(lambda n: 0) == Lifetime(bytes=1000, packets=100)
    limits = {child.soft_lifetime().bytes for _ in range(50)}   # the real random source
    assert len(limits) > 1 and all(500 <= b <= 1000 for b in limits)
    assert rekey_limit(0, 100) == 0 and rekey_limit(10, 100, lambda n: n - 1) == 1   # 0 = none; never 0 by jitter


# --------------------------------------------------------------------------
# EAP-MSCHAPv2 (the interop test covers a gateway with certificates)
# --------------------------------------------------------------------------

EAP_CONF = PSK_CONF.replace(
    "            auth = psk\n            id = moon.strongswan.org",
    "            auth = eap-mschapv2\n            id = moon.strongswan.org\n            eap_id = carol", 1,
).replace("secrets {\n", 'secrets {\n    eap-carol {\n        id = carol\n        secret = "Carol pw 1"\n    }\n', 1)


def test_eap_client_config_reaches_the_engine() -> None:
    (conn,) = parse_config(EAP_CONF, "swanctl.conf").connections
    local = conn.ike.local
    assert (local.method, local.eap_id, str(local.id)) == ("eap-mschapv2", "carol", "moon.strongswan.org")
    password = conn.ike.eap_password("carol")
    assert password is not None and password.reveal() == b"Carol pw 1"
    assert conn.ike.eap_password("moon.strongswan.org") is None


def test_eap_client_without_its_password_is_an_error_at_auth() -> None:
    text = EAP_CONF.replace("id = carol\n        secret", "id = dave\n        secret")
    issue = only_issue(text)
    assert issue.key == "connections.gw-gw.local.auth"
    assert issue.message == "no EAP password for 'carol': add a secrets.eap-NAME section with id = carol"


# --------------------------------------------------------------------------
# EAP-TLS on the gateway (tests/interop/test_strongswan_eap_tls.py runs it with strongSwan)
# --------------------------------------------------------------------------

EAP_TLS_CONF = CERT_CONF.replace(
    '            auth = pubkey\n            id = "C=CH, O=tunsec test, CN=sun.strongswan.org"',
    "            auth = eap-tls\n            eap_id = %any\n            cacerts = caCert.der",
)


def test_eap_tls_gateway_config_reaches_the_engine(tmp_path: Path, pki: Pki) -> None:
    (conn,) = load_config(moon_dir(tmp_path, pki, EAP_TLS_CONF)).connections
    remote = conn.ike.remote
    assert (remote.method, remote.eap_id, remote.id) == ("eap-tls", "%any", Identity.any())
    assert remote.cas == (pki.ca.cert,)  # only the listed CA, not the sub CA also in x509ca/
    assert conn.ike.local.method == "pubkey" and conn.ike.local.cert == pki.moon.cert


def test_eap_tls_needs_a_ca_and_a_parsable_eap_id(tmp_path: Path, pki: Pki) -> None:
    path = moon_dir(tmp_path, pki, EAP_TLS_CONF.replace("            cacerts = caCert.der\n", ""))
    for ca in (tmp_path / "x509ca").iterdir():
        ca.unlink()
    (issue,) = load_errors(path)
    assert issue.key == "connections.host-host.remote.auth"
    assert issue.message.startswith("auth = eap-tls needs a CA certificate to verify the peer")
    path = moon_dir(tmp_path, pki, EAP_TLS_CONF.replace("eap_id = %any", 'eap_id = "CN=x, BOGUS=y"'))
    (issue,) = load_errors(path)
    assert issue.key == "connections.host-host.remote.eap_id"
    assert "invalid DER_ASN1_DN identity" in issue.message


def test_eap_tls_as_a_client_is_refused(tmp_path: Path, pki: Pki) -> None:
    text = CERT_CONF.replace("            auth = pubkey\n            certs = moonCert.pem",
                             "            auth = eap-tls\n            certs = moonCert.pem", 1)
    (issue,) = load_errors(moon_dir(tmp_path, pki, text))
    assert issue.key == "connections.host-host.local.auth"
    assert issue.message == "eap-tls authenticates clients (remote.auth); as a client tunsec has eap-mschapv2"
