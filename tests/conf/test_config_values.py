"""tunsec.conf's value errors (file, line, key and why) and value types: traffic selectors, durations,
sizes, booleans."""

from __future__ import annotations

import ipaddress
import pickle

import pytest
from config_data import (
    EXAMPLE,
    LINE,
    issues_of,
    line_of,
    manual,
    only_issue,
    tunnel,
)
from hypothesis import given
from hypothesis import strategies as st

from tunsec.conf.config import parse_config
from tunsec.conf.errors import BadValue, ConfigError, ConfigIssue
from tunsec.conf.values import parse_bool, parse_bytes, parse_duration
from tunsec.dataplane.pipe import Selector
from tunsec.policy.ids import IdSpace
from tunsec.services.manual import plan

# --------------------------------------------------------------------------
# Value errors: file, line, key and why
# --------------------------------------------------------------------------


def test_the_documented_error_format() -> None:
    text = EXAMPLE.replace("0xc0010001", "0xzz")
    issue = only_issue(text)
    assert str(issue) == f"tunsec.conf:{LINE['spi_in']}: manual.site-b.spi_in: not a 32-bit SPI: '0xzz'"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("spi_in", "0xzz", "not a 32-bit SPI: '0xzz'"),
        ("spi_in", "0x100000000", "not a 32-bit SPI: '0x100000000'"),
        ("spi_in", "255", "SPI 255 is reserved (SPIs 0..255 are); use 256 or more"),
        ("spi_out", "0", "SPI 0 is reserved (SPIs 0..255 are); use 256 or more"),
        ("spi_out", "-5", "not a 32-bit SPI: '-5'"),
        ("spi_out", "0400", "not a 32-bit SPI: '0400'"),
        ("local_port", "0", "0 is out of range 1..65535"),
        ("remote_port", "65536", "65536 is out of range 1..65535"),
        ("remote_port", "http", "not a port: 'http'"),
        ("local_addr", "192.0.2.300", "not an IPv4 or IPv6 address: '192.0.2.300'"),
        ("local_addr", "0.0.0.0", "0.0.0.0 cannot be a tunnel endpoint (unspecified or multicast)"),
        ("remote_addr", "fe80::1%eth0", "scoped addresses are not supported: 'fe80::1%eth0'"),
        (
            "esp",
            "aes128gcm8",
            "'aes128gcm8': tunsec supports only the 16-byte ICV (aes128gcm16, aes256gcm16)",
        ),
        (
            "esp",
            "aes128-sha256",
            "unsupported ESP algorithm 'aes128-sha256' (use aes128gcm16 or aes256gcm16)",
        ),
        ("esn", "maybe", "not a boolean (yes or no): 'maybe'"),
        ("replay_window", "16", "16 is not 0 (off) or 32..65536"),
        ("replay_window", "65537", "65537 is not 0 (off) or 32..65536"),
        ("life_bytes", "1x", "not a byte count (e.g. 1000000, 512k, 100m, 2g): '1x'"),
        ("life_packets", "1k", "not a packet count: '1k'"),
        ("life_time", "5w", "not a duration (e.g. 30s, 5m, 1h, 1d): '5w'"),
        ("rekey_time", "1.5h", "not a duration (e.g. 30s, 5m, 1h, 1d): '1.5h'"),
        ("local_ts", "dynamic", "'dynamic' needs IKE; manual tunnels need explicit subnets"),
        ("local_ts", "dynamic[tcp]", "'dynamic' needs IKE; manual tunnels need explicit subnets"),
        ("local_ts", "10.0.0.9-10.0.0.1", "not an address range (mixed families or backwards): '10.0.0.9-10.0.0.1'"),
        ("local_ts", "10.0.0.0/33", "not a CIDR prefix or address range: '10.0.0.0/33'"),
        ("local_ts", "10.0.0.0/255.0.0.0", "not a CIDR prefix or address range: '10.0.0.0/255.0.0.0'"),
        ("remote_ts", "10.0.0.0/8,", "empty item in the list"),
        ("remote_ts", "10.0.0.0/8[bogus]", "unknown protocol 'bogus'"),
        ("remote_ts", "10.0.0.0/8[300]", "300 is out of range 0..255"),
        ("remote_ts", "10.0.0.0/8[any/80]", "a port needs a protocol that has ports"),
        ("remote_ts", "10.0.0.0/8[gre/80]", "a port needs a protocol that has ports"),
        ("remote_ts", "10.0.0.0/8[tcp/90-80]", "port range 90-80 is backwards"),
        ("remote_ts", "10.0.0.0/8[tcp/70000]", "70000 is out of range 0..65535"),
        ("remote_ts", "10.0.0.0/8[tcp/opaque]", "OPAQUE port selectors are not supported"),
        ("remote_ts", "10.0.0.0/8[tcp", "not a traffic selector: '10.0.0.0/8[tcp'"),
        ("remote_ts", "[tcp]", "missing subnet in '[tcp]'"),
    ],
)
def test_manual_value_errors(key: str, value: str, message: str) -> None:
    text = manual(tunnel("t", **{key: value}))
    issue = only_issue(text)
    assert (issue.file, issue.line, issue.key) == (
        "tunsec.conf",
        line_of(text, f" {key} = "),
        f"manual.t.{key}",
    )
    assert issue.message.startswith(message), issue.message


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("tun", "a-very-long-ifname", "interface names are 1..15 bytes, got 18"),
        ("tun", "a/b", "not a valid Linux interface name: 'a/b'"),
        ("tun", "..", "not a valid Linux interface name: '..'"),
        ("tun", '"a b"', "not a valid Linux interface name: 'a b'"),
        ("tun", "eth0:1", "not a valid Linux interface name: 'eth0:1'"),
        ("mtu", "575", "575 is out of range 576..65535"),
        ("mtu", "65536", "65536 is out of range 576..65535"),
        ("outer_mtu", "big", "not an MTU: 'big'"),
        ("workers", "0", "0 is out of range 1..16"),
        ("log_level", "verbose", "not a log level (debug, info, warning, error): 'verbose'"),
        ("larval_timeout", "0s", "must be at least 1 second"),
        ("larval_timeout", "soon", "not a duration (e.g. 30s, 5m, 1h, 1d): 'soon'"),
        ("control_socket", "/" + "s" * 107, "unix socket paths are at most 107 bytes"),
        ("tunn", "x", "unknown key (did you mean 'tun'?)"),
        ("state_dir", "var/lib/tunsec",
         "must be an absolute path (a directory on persistent storage), got 'var/lib/tunsec'"),
    ],
)
def test_tunsec_value_errors(key: str, value: str, message: str) -> None:
    text = f"# header\ntunsec {{\n  log_level = debug\n  {key} = {value}\n}}\n"
    assert only_issue(text, "t.conf") == ConfigIssue("t.conf", 4, f"tunsec.{key}", message)


@pytest.mark.parametrize(
    "key", ["local_addr", "remote_addr", "local_ts", "remote_ts", "spi_in", "spi_out", "key_in", "key_out"]
)
def test_missing_required_key_points_at_the_section(key: str) -> None:
    text = "\n" + manual(tunnel("t", **{key: None}))
    assert only_issue(text) == ConfigIssue("tunsec.conf", 3, f"manual.t.{key}", "required key is missing")


def test_empty_required_value_points_at_the_key() -> None:
    text = manual(tunnel("t", local_ts=""))
    assert only_issue(text) == ConfigIssue(
        "tunsec.conf", line_of(text, "local_ts"), "manual.t.local_ts", "required value is empty"
    )


def test_address_families_must_match() -> None:
    text = manual(tunnel("t", remote_addr="2001:db8::2"))
    issue = only_issue(text)
    assert (issue.line, issue.key) == (line_of(text, "remote_addr"), "manual.t.remote_addr")
    assert issue.message == "is IPv6 but local_addr is IPv4"


def test_selectors_without_a_same_family_pair_are_a_config_error() -> None:
    # such a tunnel's SAs would carry no selector: they would admit nothing (or, once, anything)
    text = manual(tunnel(local_ts="2001:db8::/64", remote_ts="10.0.0.0/8"))
    issue = only_issue(text)
    assert (issue.line, issue.key) == (line_of(text, "remote_ts"), "manual.t.remote_ts")
    assert issue.message.startswith("no local/remote selector pair of the same address family and protocol")
    text = manual(tunnel(local_ts="10.1.0.0/24[tcp]", remote_ts="10.2.0.0/24[udp]"))
    assert only_issue(text).message.startswith("no local/remote selector pair")


def test_more_selector_pairs_than_an_sa_holds_are_a_config_error() -> None:
    nine = ", ".join(f"10.1.{i}.0/24" for i in range(9))
    text = manual(tunnel(local_ts=nine))
    issue = only_issue(text)
    assert (issue.line, issue.key) == (line_of(text, "remote_ts"), "manual.t.remote_ts")
    assert issue.message.startswith("9 local/remote selector pairs; the fast path takes at most 8 per SA")
    eight = ", ".join(f"10.1.{i}.0/24" for i in range(8))
    (t,) = parse_config(manual(tunnel(local_ts=eight))).manual
    assert len(plan(t, 0, IdSpace()).inbound.selectors) == 8


def test_pairs_of_one_family_are_kept_the_others_dropped() -> None:
    text = manual(tunnel(local_ts="2001:db8::/64, 10.1.0.0/24", remote_ts="10.0.0.0/8"))
    (t,) = parse_config(text).manual
    p = plan(t, 0, IdSpace())
    v4 = ipaddress.IPv4Address
    assert p.outbound.selectors == (Selector(v4("10.1.0.0"), v4("10.1.0.255"), v4("10.0.0.0"), v4("10.255.255.255")),)
    assert p.inbound.selectors == (Selector(v4("10.0.0.0"), v4("10.255.255.255"), v4("10.1.0.0"), v4("10.1.0.255")),)


def test_manual_address_range_goes_to_the_fast_path_as_a_range() -> None:
    (t,) = parse_config(manual(tunnel(local_ts="10.1.0.5-10.1.0.9"))).manual
    (sel,) = plan(t, 0, IdSpace()).outbound.selectors
    assert (str(sel.src_lo), str(sel.src_hi)) == ("10.1.0.5", "10.1.0.9")


def test_spi_in_must_be_unique_across_tunnels() -> None:
    text = manual(tunnel("a", spi_in="4097"), tunnel("b", spi_in="0x1005"), tunnel("c", spi_in="0x1001"))
    issue = only_issue(text)
    first = line_of(text, "spi_in = 4097")
    assert (issue.line, issue.key) == (line_of(text, "spi_in = 0x1001"), "manual.c.spi_in")
    assert issue.message == f"SPI 0x1001 is already the spi_in of another tunnel (tunsec.conf:{first})"


def test_spi_out_may_repeat_across_tunnels() -> None:
    config = parse_config(manual(tunnel("a"), tunnel("b", spi_in="0x1002")))
    assert [t.spi_out for t in config.manual] == [0x2001, 0x2001]


def test_soft_limits_must_be_below_hard_limits() -> None:
    text = manual(tunnel("t", life_bytes="1m", rekey_bytes="1024k", life_time="1h", rekey_time="30m"))
    issue = only_issue(text)
    assert (issue.line, issue.key) == (line_of(text, "rekey_bytes"), "manual.t.rekey_bytes")
    assert issue.message == "must be below life_bytes (1048576 >= 1048576)"


def test_unknown_keys_and_sections() -> None:
    text = (
        "tunsec {\n  tun = x\n  mtu { }\n  colour = blue\n}\n"  # 1-5
        "manual {\n  stray = 1\n" + tunnel("t", spi_inn="0x5")[:-4] + "    extra { }\n  }\n}\n"
        "tunsek {\n}\nconnection = x\nmanual = y\n"
    )
    errors = [str(e) for e in issues_of(text, "f")]
    t_line = line_of(text, "  t {")
    assert errors == [
        "f:3: tunsec.mtu: 'mtu' is a key: write 'mtu = value', not a section",
        "f:4: tunsec.colour: unknown key",
        "f:7: manual.stray: manual takes one section per tunnel ('<name> { ... }'), not keys",
        f"f:{line_of(text, 'spi_inn')}: manual.t.spi_inn: unknown key (did you mean 'spi_in'?)",
        f"f:{t_line + 10}: manual.t.extra: unknown section",
        f"f:{line_of(text, 'tunsek')}: tunsek: unknown section (did you mean 'tunsec'?)",
        f"f:{line_of(text, 'connection =')}: connection: unknown key at the top level "
        "(sections are: authorities, connections, manual, pools, radius, secrets, tunsec)",
        f"f:{line_of(text, 'manual = y')}: manual: 'manual' is a section: write 'manual {{ ... }}'",
    ]


def test_pools_section_gives_the_service_its_pools() -> None:
    text = ("pools {\n  v4 { addrs = 10.3.0.0/24\n dns = 10.3.0.53, 2001:db8::53 }\n"
            "  v6 { addrs = fd00:3::10-fd00:3::20 }\n}\n")
    pools = {p.name: p for p in parse_config(text, "tunsec.conf").pools}
    assert (str(pools["v4"].first), str(pools["v4"].last), pools["v4"].size) == ("10.3.0.1", "10.3.0.254", 254)
    assert [str(d) for d in pools["v4"].dns] == ["10.3.0.53", "2001:db8::53"]
    assert (str(pools["v6"].first), pools["v6"].size) == ("fd00:3::10", 17)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("addrs = 10.3.0.0/24\n  }\n  b { addrs = 10.3.0.128-10.3.1.1",
         "pools.b.addrs: overlaps pool a (10.3.0.1-10.3.0.254)"),
        ("addrs = dhcp", "pools.a.addrs: addrs = dhcp is not supported: write a subnet (10.3.0.0/24) or a range (a-b)"),
        ("addrs = 10.3.0.9-10.3.0.1", "pools.a.addrs: not a subnet (10.3.0.0/24) or an address range (a-b): "
         "'10.3.0.9-10.3.0.1'"),
        ("addrs = 10.0.0.0/4", "pools.a.addrs: 10.0.0.0/4 is too large a pool (at most /8)"),
        ("dns = 10.3.0.53", "pools.a.addrs: required key is missing"),
        ("addrs = 10.3.0.0/24\n dns = resolver", "pools.a.dns: not an IPv4 or IPv6 address: 'resolver'"),
        ("addrs = 10.3.0.0/24\n split_include = 10.0.0.0/8",
         "pools.a.split_include: split tunnelling attributes are not supported: use the child's local_ts"),
    ],
)
def test_bad_pools_name_file_line_and_key(body: str, message: str) -> None:
    text = f"pools {{\n  a {{ {body} }}\n}}\n"
    issue = only_issue(text)
    assert f"{issue.key}: {issue.message}" == message


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("connections", ["5: connections.x.children: a connection needs at least one child "
                         "('children { NAME { ... } }')", "5: connections.x.y: unknown key"]),
        ("secrets", ["5: secrets.x: unknown secret type (sections are named ike..., eap..., private..., rsa..., "
                     "ecdsa... or pkcs8...)"]),
        ("authorities", ["5: authorities.x.cacert: required key is missing", "5: authorities.x.y: unknown key"]),
    ],
)  # fmt: skip
def test_ikev2_sections_reach_their_validators(name: str, expected: list[str]) -> None:
    # tests/test_config_ike.py covers these sections; here only that they are no longer refused.
    text = f"tunsec {{\n}}\n\n{name} {{\n  x {{ y = z }}\n}}\n"
    assert sorted(str(e) for e in issues_of(text)) == sorted(f"tunsec.conf:{e}" for e in expected)


def test_all_errors_are_collected_in_line_order() -> None:
    text = EXAMPLE.replace("mtu = auto", "mtu = 5").replace("0xc0010001", "0xzz")
    text = text.replace("esn = no", "esn = perhaps\n    bogus value here").replace("1024", "7")
    text += "tunsec {\n  workers = none\n"
    errors = [str(e) for e in issues_of(text)]
    n = text.count("\n")
    assert errors == [
        "tunsec.conf:3: tunsec.mtu: 5 is out of range 576..65535",
        f"tunsec.conf:{LINE['spi_in']}: manual.site-b.spi_in: not a 32-bit SPI: '0xzz'",
        f"tunsec.conf:{LINE['esn']}: manual.site-b.esn: not a boolean (yes or no): 'perhaps'",
        f"tunsec.conf:{LINE['esn'] + 1}: manual.site-b.bogus: expected '= value' or '{{' after the name",
        f"tunsec.conf:{LINE['replay_window'] + 1}: manual.site-b.replay_window: 7 is not 0 (off) or 32..65536",
        f"tunsec.conf:{n - 1}: tunsec: section 'tunsec' is never closed (missing '}}')",
        f"tunsec.conf:{n}: tunsec.workers: not a worker count: 'none'",
    ]


def test_config_error_str_and_pickle() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("tunsec {\n mtu = 1\n tun = ..\n}\n", "c")
    err = info.value
    assert str(err) == "\n".join(str(e) for e in err.errors)
    assert str(err).count("\n") == 1
    again = pickle.loads(pickle.dumps(err))
    assert again.errors == err.errors


def test_issue_formatting() -> None:
    assert str(ConfigIssue("f", 3, "a.b", "bad")) == "f:3: a.b: bad"
    assert str(ConfigIssue("f", 3, "", "bad")) == "f:3: bad"
    assert str(ConfigIssue("f", 0, "", "bad")) == "f: bad"


# --------------------------------------------------------------------------
# Traffic selectors, durations, sizes, booleans
# --------------------------------------------------------------------------


def test_selector_with_protocol_in_a_config() -> None:
    text = manual(tunnel(local_ts="10.1.0.0/24[tcp/80], 10.3.0.0/24", remote_ts="10.2.0.0/24[tcp]"))
    (t,) = parse_config(text).manual
    assert [str(s) for s in t.local_ts] == ["10.1.0.0/24[tcp/80]", "10.3.0.0/24"]
    assert [str(s) for s in t.remote_ts] == ["10.2.0.0/24[tcp]"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30", 30), ("30s", 30), ("5m", 300), ("1h", 3600), ("1d", 86400), ("2 H", 7200), ("0", 0), ("10S", 10)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "1w", "-1s", "1.5h", "1h30m", "0x10s", "010s", "1 h h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(BadValue):
        parse_duration(text)


@given(st.integers(0, 10**9), st.sampled_from(["", "s", "m", "h", "d", "S", "M", "H", "D"]))
def test_duration_property(n: int, unit: str) -> None:
    mult = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit.lower()]
    assert parse_duration(f"{n}{unit}") == n * mult


@pytest.mark.parametrize(
    ("text", "value"), [("0", 0), ("1000", 1000), ("512k", 512 << 10), ("100M", 100 << 20), ("2g", 2 << 30)]
)
def test_byte_sizes(text: str, value: int) -> None:
    assert parse_bytes(text) == value


def test_byte_size_overflow() -> None:
    with pytest.raises(BadValue, match="64 bits"):
        parse_bytes(f"{2**63}g")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        *[("yes", True), ("True", True), ("enabled", True), ("1", True)],
        *[("no", False), ("FALSE", False), ("disabled", False), ("0", False)],
    ],
)
def test_booleans(text: str, value: bool) -> None:
    assert parse_bool(text) is value
