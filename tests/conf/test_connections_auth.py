"""swanctl.conf authentication by PSK and EAP-MSCHAPv2: the values the engine gets, PSK notations and
secrecy, which secrets.ike entry a connection gets, identities (tunsec.conf.connections, .secrets)."""

from __future__ import annotations

import base64
import ipaddress

import pytest
from connections_data import (
    CAROL,
    MOON,
    PSK_B64,
    PSK_CONF,
    PSK_TEXT,
    SUN,
    issues_of,
    line_of,
    only_issue,
    pem,
    with_line,
    write,
)

from tunsec.conf.config import parse_config
from tunsec.conf.secrets import IkeSecret, find_psk
from tunsec.ike.constants import IdType, ProtocolId
from tunsec.ike.identity import Identity
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.secret import Secret
from tunsec.ike.testing import make_ca
from tunsec.ike.ts import Ts

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
    # with a group key (naming moon only): sun's entry would be another identity's key (the next test)
    text = PSK_CONF.replace("id = sun.strongswan.org", "id = %any").replace("        id-sun = sun.strongswan.org\n", "")
    assert parse_config(text).connections[0].ike.remote.id.is_any


def test_an_initiator_of_any_takes_no_entry_naming_another_identity_as_its_own_key() -> None:
    # review revpsk: strongSwan's pick for (moon, %any) is ike-1 since it names moon, sun's key too:
    # the connection would prove it and accept it from whoever answers, under any IDr
    text = PSK_CONF.replace("            id = sun.strongswan.org", "            id = %any")
    issue = only_issue(text)
    assert issue.key == "connections.gw-gw.local.auth"
    assert "secrets.ike-1 names another identity" in issue.message and "set remote.id" in issue.message
    # a group key (no ids, %any, or ours only) is taken, though written after sun's
    group = text.replace("\n}\n\ntunsec",
                         "\n    ike-2 { id = moon.strongswan.org\n secret = 0s" + "A" * 44 + " }\n}\n\ntunsec")
    ike = parse_config(group).connections[0].ike
    assert ike.psk is not None and ike.psk.reveal() == b"\0" * 33


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
# EAP-MSCHAPv2 (the interop test covers a gateway with certificates)
# --------------------------------------------------------------------------

EAP_CONF = PSK_CONF.replace(
    "            auth = psk\n            id = moon.strongswan.org",
    "            auth = eap-mschapv2\n            id = moon.strongswan.org\n            eap_id = carol", 1,
).replace(
    "            auth = psk\n            id = sun.strongswan.org",
    "            auth = pubkey\n            id = sun.strongswan.org", 1,
).replace("secrets {\n", 'secrets {\n    eap-carol {\n        id = carol\n        secret = "Carol pw 1"\n    }\n', 1)


@pytest.fixture(scope="module")
def eap_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Where EAP_CONF is read: a folder whose x509ca/ holds the CA that certifies the gateway."""
    folder = tmp_path_factory.mktemp("eap")
    write(folder / "x509ca" / "caCert.pem", pem(make_ca("gateway CA", "ecdsa").cert))
    return str(folder / "swanctl.conf")


def test_eap_client_config_reaches_the_engine(eap_path: str) -> None:
    (conn,) = parse_config(EAP_CONF, eap_path).connections
    local, remote = conn.ike.local, conn.ike.remote
    assert (local.method, local.eap_id, str(local.id)) == ("eap-mschapv2", "carol", "moon.strongswan.org")
    assert (remote.method, str(remote.id)) == ("pubkey", "sun.strongswan.org")
    password = conn.ike.eap_password("carol")
    assert password is not None and password.reveal() == b"Carol pw 1"
    assert conn.ike.eap_password("moon.strongswan.org") is None


def test_eap_client_refuses_a_gateway_proving_itself_by_psk(eap_path: str) -> None:
    """RFC 7296 §2.16: whoever holds the group PSK would get the MSCHAPv2 response (offline guessing)."""
    text = EAP_CONF.replace("auth = pubkey\n            id = sun", "auth = psk\n            id = sun", 1)
    issue = only_issue(text, eap_path)
    assert issue.key == "connections.gw-gw.remote.auth" and issue.line == line_of(text, "auth = psk")
    assert issue.message.startswith("local.auth = eap-mschapv2 needs remote.auth = pubkey")


@pytest.mark.parametrize("remote_id", ["", "            id = %any\n"])
def test_eap_client_refuses_any_gateway_certificate(eap_path: str, remote_id: str) -> None:
    """With remote.id %any, any certificate of the CA (another user's) would get the MSCHAPv2 response."""
    text = EAP_CONF.replace("            id = sun.strongswan.org\n", remote_id, 1)
    issue = only_issue(text, eap_path)
    assert issue.key == "connections.gw-gw.remote.id"
    assert issue.message.startswith("local.auth = eap-mschapv2 needs remote.id set to the gateway's identity")


def test_eap_client_without_its_password_is_an_error_at_auth(eap_path: str) -> None:
    text = EAP_CONF.replace("id = carol\n        secret", "id = dave\n        secret")
    issue = only_issue(text, eap_path)
    assert issue.key == "connections.gw-gw.local.auth"
    assert issue.message == "no EAP password for 'carol': add a secrets.eap-NAME section with id = carol"


@pytest.mark.parametrize("value", ["0xff436172", "0s" + base64.b64encode(b"Carol \xe9").decode()])
def test_an_eap_password_that_is_not_utf8_text_is_refused(eap_path: str, value: str) -> None:
    """MSCHAPv2 hashes the password as UTF-16: other bytes have no such form, and a client naming
    the user would make the gateway's hashing fail (an exception out of the engine, not a refusal)."""
    text = EAP_CONF.replace('secret = "Carol pw 1"', f"secret = {value}")
    errors = [str(e) for e in issues_of(text, eap_path)]
    assert f"{eap_path}:{line_of(text, 'secret = ' + value)}: secrets.eap-carol.secret: an EAP password " \
        "must be UTF-8 text (EAP-MSCHAPv2 hashes it as UTF-16)" in errors
    assert value[2:] not in " ".join(errors)   # the value is never echoed


def test_an_eap_password_with_non_ascii_text_is_taken(eap_path: str) -> None:
    text = EAP_CONF.replace('secret = "Carol pw 1"', 'secret = "Carol pw \u00e9"')
    (conn,) = parse_config(text, eap_path).connections
    password = conn.ike.eap_password("carol")
    assert password is not None and password.reveal() == "Carol pw \u00e9".encode()
