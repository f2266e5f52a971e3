"""swanctl.conf connections' keys and values: supported, accepted with a default, refused (naming file,
line and key), and the soft lifetimes they give (tunsec.conf.connections)."""

from __future__ import annotations

import dataclasses

import pytest
from connections_data import (
    MOON,
    PSK_CONF,
    issues_of,
    line_of,
    only_issue,
    with_line,
)

from tunsec.conf.config import parse_config
from tunsec.conf.connections import find_child, rekey_limit
from tunsec.conf.errors import ConfigIssue
from tunsec.dataplane.pipe import Lifetime
from tunsec.ike.constants import NotifyType
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.message import NotifyPayload, decode_message
from tunsec.ike.sa import IkeSa

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
    ("remote", "groups = admins", "group memberships come only from RADIUS (its Access-Accept): groups needs "
     "auth = eap-radius (attribute certificates, which certify them otherwise, are not supported)"),
    ("remote", "groups = staff, %any", "%any is no group: name the groups the peer must be a member of (one of them)"),
    ("remote", "groups = staff,,guests", "a list of group names: 'staff,,guests'"),
    ("remote", "groups = OU=staff, XX=y", "invalid DER_ASN1_DN identity 'XX=y': unknown RDN 'XX=y'"),
    ("remote", "groups = staff-*", "wildcard identities are not supported: 'staff-*'"),
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


@pytest.mark.parametrize("key", ["dpd_action", "close_action"])
@pytest.mark.parametrize(("value", "action", "said"), [
    ("start", "start", "towards that peer's own address"), ("restart", "start", "towards that peer's own address"),
    ("trap", "trap", "installs no trap"), ("route", "trap", "installs no trap")])
def test_a_connection_of_any_loads_its_actions_with_a_word_on_what_they_do(key: str, value: str, action: str,
                                                                          said: str) -> None:
    """A strongSwan gateway config with dpd_action/close_action on a connection of %any loads (only
    start_action is refused there); what they do for a lost peer (review revvanish F1: never into another
    peer's IKE SA) is said in a warning; a named connection's are said nothing about."""
    text = PSK_CONF.replace("remote_addrs = 192.168.0.2", "remote_addrs = %any").replace(
        "start_action = start", f"{key} = {value}")
    cfg = parse_config(text)
    assert getattr(cfg.connections[0].children[0], key) == action
    (warning,) = [w for w in cfg.warnings if w.key == f"connections.gw-gw.children.net-net.{key}"]
    assert f"{key} = {action} on a connection of %any" in warning.message and said in warning.message
    named = parse_config(PSK_CONF.replace("start_action = start", f"{key} = {value}"))   # remote_addrs: fine
    assert getattr(named.connections[0].children[0], key) == action
    assert not [w for w in named.warnings if w.key.endswith(key)]


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
