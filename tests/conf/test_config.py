"""Tests for tunsec.conf: strongSwan settings syntax, tunsec { }, manual { }, validation and error reporting."""

from __future__ import annotations

import ipaddress
import os
import pickle
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tunsec.conf.config import Config, load_config, parse_config
from tunsec.conf.errors import BadValue, ConfigError, ConfigIssue
from tunsec.conf.manual import Esp
from tunsec.conf.reader import SectionReader
from tunsec.conf.syntax import parse_settings
from tunsec.conf.values import parse_bool, parse_bytes, parse_duration
from tunsec.dataplane.pipe import Selector
from tunsec.policy.ids import IdSpace
from tunsec.policy.selector import parse_ts
from tunsec.services.manual import plan

KEY_IN_HEX = "0102030405060708090a0b0c0d0e0f1011121314"
KEY_OUT_HEX = "1112131415161718191a1b1c1d1e1f2021222324"
KEY256_HEX = "a0" * 36

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


def tunnel(name: str = "t", **overrides: str | None) -> str:
    """A valid manual tunnel section; ``None`` drops a key, a string replaces it."""
    keys: dict[str, str | None] = {
        "local_addr": "192.0.2.1",
        "remote_addr": "192.0.2.2",
        "local_ts": "10.1.0.0/24",
        "remote_ts": "10.2.0.0/24",
        "spi_in": "0x1001",
        "key_in": "0x" + KEY_IN_HEX,
        "spi_out": "0x2001",
        "key_out": "0x" + KEY_OUT_HEX,
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


# --------------------------------------------------------------------------
# The example and the values it produces
# --------------------------------------------------------------------------


def test_example_parses_to_the_right_values() -> None:
    config = parse_config(EXAMPLE, "tunsec.conf")
    assert config.path == "tunsec.conf"
    t = config.tunsec
    assert (t.tun, t.mtu, t.outer_mtu, t.control_socket) == ("tunsec0", None, None, "/run/tunsec/tunsec.sock")
    assert (t.workers, t.log_level, t.larval_timeout) == (None, "info", 30)
    (site,) = config.manual
    assert site.name == "site-b"
    assert site.local_addr == ipaddress.ip_address("192.0.2.1")
    assert site.remote_addr == ipaddress.ip_address("192.0.2.2")
    assert (site.local_port, site.remote_port) == (4500, 4500)
    assert site.local_ts == (parse_ts("10.1.0.0/24"),)
    assert site.remote_ts == (parse_ts("10.2.0.0/24"),)
    assert site.esp is Esp.AES128GCM16
    assert (site.spi_in, site.spi_out) == (0xC0010001, 0xC0020001)
    assert site.key_in.reveal() == bytes.fromhex(KEY_IN_HEX)
    assert site.key_out.reveal() == bytes.fromhex(KEY_OUT_HEX)
    assert site.esn is False
    assert site.replay_window == 1024
    assert (site.life_bytes, site.life_packets, site.life_time) == (0, 0, 0)
    assert (site.rekey_bytes, site.rekey_packets, site.rekey_time) == (0, 0, 0)
    assert (site.file, site.line) == ("tunsec.conf", SITE_B_LINE)


def test_no_sections_gives_defaults() -> None:
    config = parse_config("# nothing but a comment\n\n")
    assert config == Config(path="<string>")
    assert config.tunsec.tun == "tunsec0"
    assert config.manual == ()


def test_tunsec_settings() -> None:
    config = parse_config(
        "tunsec {\n tun = vpn7\n mtu = 1400\n outer_mtu = 1500\n workers = 4\n"
        ' log_level = WARNING\n larval_timeout = 5m\n control_socket = "/tmp/my dir/t.sock"\n}\n'
    )
    t = config.tunsec
    assert (t.tun, t.mtu, t.outer_mtu, t.workers) == ("vpn7", 1400, 1500, 4)
    assert (t.log_level, t.larval_timeout, t.control_socket) == ("warning", 300, "/tmp/my dir/t.sock")


def test_auto_values_and_empty_value_reset_to_default() -> None:
    t = parse_config("tunsec {\n mtu = 1400\n mtu =\n workers = AUTO\n outer_mtu = auto\n}\n").tunsec
    assert (t.mtu, t.workers, t.outer_mtu) == (None, None, None)


def test_manual_tunnel_options() -> None:
    text = manual(
        tunnel(
            "v6",
            local_addr="2001:db8::1",
            remote_addr="2001:db8::2",
            local_ts="10.1.0.0/24, 2001:db8:1::/48",
            remote_ts="0.0.0.0/0, ::/0",
            esp="AES256GCM128",
            key_in="0x" + KEY256_HEX,
            key_out="0X" + KEY256_HEX.upper(),
            esn="enabled",
            replay_window="0",
            local_port="4501",
            remote_port="14500",
            life_bytes="2g",
            rekey_bytes="1g",
            life_packets="1000000",
            rekey_packets="0x1000",
            life_time="1d",
            rekey_time="23h",
        )
    )
    (t,) = parse_config(text).manual
    assert t.local_addr.version == 6
    assert [str(s) for s in t.local_ts] == ["10.1.0.0/24", "2001:db8:1::/48"]
    assert [str(s) for s in t.remote_ts] == ["0.0.0.0/0", "::/0"]
    assert t.esp is Esp.AES256GCM16
    assert len(t.key_in) == len(t.key_out) == 36
    assert (t.esn, t.replay_window, t.local_port, t.remote_port) == (True, 0, 4501, 14500)
    assert (t.life_bytes, t.rekey_bytes) == (2 << 30, 1 << 30)
    assert (t.life_packets, t.rekey_packets) == (1_000_000, 0x1000)
    assert (t.life_time, t.rekey_time) == (86400, 23 * 3600)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("aes128gcm16", Esp.AES128GCM16),
        ("aes128gcm128", Esp.AES128GCM16),
        ("aes128gcm", Esp.AES128GCM16),
        ("aes256gcm16", Esp.AES256GCM16),
        ("aes256gcm128", Esp.AES256GCM16),
    ],
)
def test_esp_names_and_aliases(name: str, expected: Esp) -> None:
    keys = {"key_in": "0x" + KEY256_HEX, "key_out": "0x" + KEY256_HEX} if "256" in name else {}
    (t,) = parse_config(manual(tunnel(esp=name, **keys))).manual
    assert t.esp is expected
    assert str(t.esp) == expected.value
    assert t.esp.keymat_bytes == t.esp.key_bytes + 4


def test_tunnels_keep_file_order_and_compare_without_location() -> None:
    text = manual(tunnel("b"), tunnel("a", spi_in="0x1002"))
    config = parse_config(text)
    assert [t.name for t in config.manual] == ["b", "a"]
    again = parse_config("\n\n" + text)
    assert again.manual == config.manual
    assert again.manual[0].line == config.manual[0].line + 2


# --------------------------------------------------------------------------
# The settings syntax
# --------------------------------------------------------------------------


def test_settings_tree_records_file_and_line() -> None:
    root = parse_settings("a {\n  b = 1\n  c {\n    d = two words\n  }\n}\n", "x.conf")
    a = root.sections["a"]
    assert (a.name, a.path, a.file, a.line) == ("a", "a", "x.conf", 1)
    b = a.settings["b"]
    assert (b.value, b.file, b.line) == ("1", "x.conf", 2)
    c = a.sections["c"]
    assert (c.path, c.line) == ("a.c", 3)
    assert (c.settings["d"].value, c.settings["d"].line) == ("two words", 4)


def test_comments() -> None:
    root = parse_settings(
        "# leading comment\na { # after brace\n  b = x # trailing\n  # indented\n"
        '  c = "not # a comment"   # but this is\n  d = e#f\n}\n'
    )
    a = root.sections["a"]
    assert a.settings["b"].value == "x"
    assert a.settings["c"].value == "not # a comment"
    assert a.settings["d"].value == "e"


def test_quoting_and_escapes() -> None:
    text = (
        'a {\n  spaced = "  two  spaces  "\n  esc = "q\\"uote \\\\ tab\\t nl\\n x\\y"\n'
        '  multi = "line one\nline two"\n  cont = "joined \\\n here"\n'
        '  mixed = bare   "quoted  part"  tail\n  empty = ""\n  glued = a"b"\n}\n'
    )
    a = parse_settings(text).sections["a"]
    assert a.settings["spaced"].value == "  two  spaces  "
    assert a.settings["esc"].value == 'q"uote \\ tab\t nl\n xy'
    assert a.settings["multi"].value == "line one\nline two"
    assert a.settings["cont"].value == "joined  here"
    assert a.settings["mixed"].value == "bare quoted  part tail"
    assert a.settings["empty"].value == ""
    assert a.settings["glued"].value == "a b"
    # A multi-line string does not disturb later line numbers.
    assert a.settings["mixed"].line == 8


def test_bare_values_are_joined_by_single_spaces_and_keep_special_chars() -> None:
    a = parse_settings("a {\n  v =   x    y\t z  \n  w = b=c{d]\n}\n").sections["a"]
    assert a.settings["v"].value == "x y z"
    assert a.settings["w"].value == "b=c{d]"


def test_one_line_sections_and_brace_on_next_line() -> None:
    root = parse_settings("a { b = c }\nd\n{\n  e = f }\ng { h { i = j } }\n")
    assert root.sections["a"].settings["b"].value == "c"
    assert root.sections["d"].settings["e"].value == "f"
    assert root.sections["d"].line == 2
    assert root.sections["g"].sections["h"].settings["i"].value == "j"


def test_sections_merge_and_later_keys_override() -> None:
    root = parse_settings("a {\n  x = 1\n  y = 1\n}\na {\n  x = 2\n  s { z = 3 }\n}\n")
    a = root.sections["a"]
    assert a.line == 1
    assert (a.settings["x"].value, a.settings["x"].line) == ("2", 6)
    assert a.settings["y"].value == "1"
    assert a.sections["s"].settings["z"].value == "3"


def test_merged_manual_tunnel_across_blocks() -> None:
    text = manual(tunnel("t", spi_out=None)) + "manual {\n  t {\n    spi_out = 0x3003\n  }\n}\n"
    (t,) = parse_config(text).manual
    assert t.spi_out == 0x3003


def test_crlf_line_endings() -> None:
    config = parse_config(EXAMPLE.replace("\n", "\r\n"))
    assert config.manual[0].spi_in == 0xC0010001
    with pytest.raises(ConfigError) as info:
        parse_config(EXAMPLE.replace("\n", "\r\n").replace("esn = no", "esn = maybe"), "c")
    assert str(info.value) == f"c:{LINE['esn']}: manual.site-b.esn: not a boolean (yes or no): 'maybe'"


def test_key_and_section_may_share_a_name_like_strongswan() -> None:
    root = parse_settings("a = 1\na { b = 2 }\n")
    assert root.settings["a"].value == "1"
    assert root.sections["a"].settings["b"].value == "2"


def test_parse_settings_raises_without_an_issue_list() -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings("a {\n", "f.conf")
    assert [str(i) for i in info.value.errors] == ["f.conf:1: a: section 'a' is never closed (missing '}')"]
    issues: list[ConfigIssue] = []
    root = parse_settings("a {\n b = 1\n", "f.conf", issues)
    assert root.sections["a"].settings["b"].value == "1"
    assert len(issues) == 1


# --------------------------------------------------------------------------
# Syntax errors: file, line and key
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "key", "message"),
    [
        ("tunsec {\n  tun = x\n", 1, "tunsec", "section 'tunsec' is never closed (missing '}')"),
        ("tunsec {\n}\n}\n", 3, "", "'}' without a matching '{'"),
        ("tunsec {\n  tun x\n}\n", 2, "tunsec.tun", "expected '= value' or '{' after the name"),
        ("tunsec {\n  tun\n}\n", 2, "tunsec.tun", "expected '= value' or '{' after the name"),
        ("tunsec {\n  = x\n}\n", 2, "tunsec", "'=' without a key name"),
        ("{\n}\n", 1, "", "'{' without a section name"),
        (
            'tunsec {\n  "tun" = x\n}\n',
            2,
            "tunsec",
            "unexpected quoted string (quotes are only allowed in values)",
        ),
        ('tunsec {\n  tun = "x\n}\n', 2, "tunsec.tun", "unterminated quoted string"),
    ],
)
def test_syntax_errors(text: str, line: int, key: str, message: str) -> None:
    issue = only_issue(text, "s.conf")
    assert issue == ConfigIssue("s.conf", line, key, message)


def test_unterminated_string_does_not_swallow_the_rest() -> None:
    text = 'tunsec {\n  tun = "oops\n  mtu = 5\n}\n'
    errors = [str(e) for e in issues_of(text, "f")]
    assert errors == [
        "f:2: tunsec.tun: unterminated quoted string",
        "f:3: tunsec.mtu: 5 is out of range 576..65535",
    ]


def test_recovery_after_garbage_keeps_braces_balanced() -> None:
    text = "tunsec {\n  junk junk { nested = 1 }\n  mtu = 1\n}\nmanual {\n}\n"
    errors = issues_of(text, "f")
    assert [(e.line, e.key) for e in errors] == [(2, "tunsec.junk"), (3, "tunsec.mtu")]


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    text = "a {\n" * 200 + "}\n" * 200
    errors = issues_of(text)
    assert any("nested deeper" in e.message for e in errors)
    text = "x y {\n" * 200 + "}\n" * 200
    assert issues_of(text)


def test_garbage_line_with_hex_is_not_echoed() -> None:
    text = EXAMPLE.replace("    esn = no", f"    {KEY_IN_HEX}")
    issue = only_issue(text)
    assert issue.line == LINE["esn"]
    assert issue.key == "manual.site-b"
    assert KEY_IN_HEX not in str(issue)


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
# Keys are secrets
# --------------------------------------------------------------------------


def _assert_no_key_material(text: str) -> None:
    for hex_key in (KEY_IN_HEX, KEY_OUT_HEX, KEY256_HEX):
        for probe in (hex_key, hex_key.upper(), hex_key[:16], repr(bytes.fromhex(hex_key))[2:18]):
            assert probe not in text


def test_repr_and_str_of_config_show_no_key() -> None:
    config = parse_config(EXAMPLE)
    _assert_no_key_material(repr(config))
    _assert_no_key_material(str(config))
    _assert_no_key_material(f"{config.manual[0].key_in}")
    assert repr(config.manual[0].key_in) == "Secret(<20 bytes>)"


@pytest.mark.parametrize(
    ("replacement", "message"),
    [
        (f"key_in = 0x{KEY256_HEX}", "must be 40 hex digits (20 bytes) for aes128gcm16, got 36 bytes"),
        (f"key_in = 0x{KEY_IN_HEX[:-4]}", "must be 40 hex digits (20 bytes) for aes128gcm16, got 18 bytes"),
        (f"key_in = 0x{KEY_IN_HEX}5", "has an odd number of hex digits (41)"),
        (f"key_in = {KEY_IN_HEX}", "must be 0x followed by hex digits (AES key || 4-byte salt)"),
        (f"key_in = 0x{KEY_IN_HEX[:-2]}zz", "must be 0x followed by hex digits (AES key || 4-byte salt)"),
        (f'key_in = "0x{KEY_IN_HEX}" junk', "must be 0x followed by hex digits (AES key || 4-byte salt)"),
    ],
)
def test_key_errors_never_echo_the_key(replacement: str, message: str) -> None:
    text = EXAMPLE.replace(f"key_in = 0x{KEY_IN_HEX}", replacement)
    issue = only_issue(text)
    assert (issue.line, issue.key, issue.message) == (LINE["key_in"], "manual.site-b.key_in", message)
    _assert_no_key_material(str(issue))


def test_aes256_key_length_is_checked_against_esp() -> None:
    text = EXAMPLE.replace("esp = aes128gcm16", "esp = aes256gcm16")
    errors = issues_of(text)
    assert [(e.line, e.message) for e in errors] == [
        (LINE["key_in"], "must be 72 hex digits (36 bytes) for aes256gcm16, got 20 bytes"),
        (LINE["key_out"], "must be 72 hex digits (36 bytes) for aes256gcm16, got 20 bytes"),
    ]


def test_key_length_not_checked_when_esp_is_bad() -> None:
    issue = only_issue(EXAMPLE.replace("esp = aes128gcm16", "esp = chacha20poly1305"))
    assert issue.key == "manual.site-b.esp"


@pytest.mark.parametrize(
    "mutation",
    [
        ("key_in =", "key_inn ="),  # unknown key holding a key
        ("spi_in = 0xc0010001", f"spi_in = 0x{KEY_IN_HEX}"),  # key pasted into the wrong place
        ("local_ts = 10.1.0.0/24", f"local_ts = {KEY_IN_HEX}"),
        ("esp = aes128gcm16", f"esp = {KEY_IN_HEX}"),
        ("    esn = no", f"    {KEY_IN_HEX} = no"),  # garbage where a key name goes
        ("    esn = no", f'    "0x{KEY_IN_HEX}"'),
        ("esn = no", f'esn = "0x{KEY_IN_HEX}'),  # unterminated
    ],
)
def test_misplaced_key_material_is_never_echoed(mutation: tuple[str, str]) -> None:
    text = EXAMPLE.replace(*mutation)
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    _assert_no_key_material(str(info.value))
    _assert_no_key_material(repr(info.value.errors))


# --------------------------------------------------------------------------
# include
# --------------------------------------------------------------------------


def test_include_glob_relative_to_the_including_file(tmp_path: Path) -> None:
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    (conf_d / "20-b.conf").write_text(manual(tunnel("b", spi_in="0x1002")))
    (conf_d / "10-a.conf").write_text(manual(tunnel("a")))
    (conf_d / "ignored.txt").write_text("garbage garbage\n")
    main = tmp_path / "tunsec.conf"
    main.write_text("tunsec {\n  mtu = 1400\n}\ninclude conf.d/*.conf\ninclude nothing-here/*.conf\n")
    config = load_config(main)
    assert config.path == str(main)
    assert [t.name for t in config.manual] == ["a", "b"]
    assert config.manual[0].file == str(conf_d / "10-a.conf")
    assert config.tunsec.mtu == 1400


def test_errors_in_included_files_name_that_file(tmp_path: Path) -> None:
    (tmp_path / "bad.conf").write_text("# first\ntunsec {\n  mtu = tiny\n}\n")
    main = tmp_path / "main.conf"
    main.write_text("manual {\n  x {\n  }\n}\ninclude bad.conf\ntunsec {\n  workers = 0\n}\n")
    with pytest.raises(ConfigError) as info:
        load_config(main)
    errors = [str(e) for e in info.value.errors]
    assert errors == [
        f"{main}:2: manual.x.local_addr: required key is missing",
        f"{main}:2: manual.x.remote_addr: required key is missing",
        f"{main}:2: manual.x.local_ts: required key is missing",
        f"{main}:2: manual.x.remote_ts: required key is missing",
        f"{main}:2: manual.x.spi_in: required key is missing",
        f"{main}:2: manual.x.spi_out: required key is missing",
        f"{main}:2: manual.x.key_in: required key is missing",
        f"{main}:2: manual.x.key_out: required key is missing",
        f"{main}:7: tunsec.workers: 0 is out of range 1..16",
        f"{tmp_path / 'bad.conf'}:3: tunsec.mtu: not an MTU: 'tiny'",
    ]


def test_missing_include_is_an_error_at_the_include_line(tmp_path: Path) -> None:
    main = tmp_path / "main.conf"
    main.write_text("tunsec {\n}\n\ninclude missing.conf   # comment\n")
    with pytest.raises(ConfigError) as info:
        load_config(main)
    (issue,) = info.value.errors
    assert (issue.file, issue.line, issue.key) == (str(main), 4, "include")
    assert issue.message == f"'{tmp_path / 'missing.conf'}': cannot read: No such file or directory"


def test_include_inside_a_section_and_quoted_paths(tmp_path: Path) -> None:
    (tmp_path / "my tunnel.conf").write_text(tunnel("q").replace("  q {", "q {"))
    (tmp_path / "other one.conf").write_text(tunnel("r", spi_in="0x1003"))
    main = tmp_path / "main.conf"
    main.write_text('manual {\n  include "my tunnel.conf"\n  include other\\ one.conf\n}\n')
    assert [t.name for t in load_config(main).manual] == ["q", "r"]


def test_include_absolute_path(tmp_path: Path) -> None:
    (tmp_path / "t.conf").write_text("tunsec { tun = abs0 }\n")
    assert parse_config(f"include {tmp_path / 't.conf'}\n").tunsec.tun == "abs0"


def test_include_loop_is_reported(tmp_path: Path) -> None:
    (tmp_path / "a.conf").write_text("include b.conf\n")
    (tmp_path / "b.conf").write_text("\ninclude a.conf\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "a.conf")
    (issue,) = info.value.errors
    assert (issue.file, issue.line, issue.key) == (str(tmp_path / "b.conf"), 2, "include")
    assert "include loop" in issue.message


def test_include_syntax_errors(tmp_path: Path) -> None:
    main = tmp_path / "m.conf"
    main.write_text("include\ninclude  \ninclude a.conf b.conf\ninclude = 1\ninclude { }\n")
    with pytest.raises(ConfigError) as info:
        load_config(main)
    assert [(e.line, e.key, e.message) for e in info.value.errors] == [
        (1, "include", "expected '= value' or '{' after the name"),
        (2, "include", "missing file pattern"),
        (3, "include", "takes one file pattern (quote it or escape spaces with '\\')"),
        (4, "include", "unknown key at the top level (sections are: authorities, connections, "
         "manual, pools, radius, secrets, tunsec)"),
        (5, "include", "unknown section (known: authorities, connections, manual, pools, radius, secrets, tunsec)"),
    ]  # fmt: skip


def test_unbalanced_braces_do_not_leak_across_include(tmp_path: Path) -> None:
    (tmp_path / "open.conf").write_text("tunsec {\n")
    main = tmp_path / "m.conf"
    main.write_text("include open.conf\n}\n")
    with pytest.raises(ConfigError) as info:
        load_config(main)
    assert [str(e) for e in info.value.errors] == [
        f"{main}:2: '}}' without a matching '{{'",
        f"{tmp_path / 'open.conf'}:1: tunsec: section 'tunsec' is never closed (missing '}}')",
    ]


def test_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.conf"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert isinstance(info.value.__cause__, OSError)
    assert str(info.value) == f"{missing}: cannot read: No such file or directory"
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(info.value).startswith(f"{tmp_path}: ")
    binary = tmp_path / "bin.conf"
    binary.write_bytes(b"tunsec {\n}\n\xff\xfe\n")
    with pytest.raises(ConfigError) as info:
        load_config(binary)
    assert str(info.value) == f"{binary}:3: not valid UTF-8"


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_include_of_a_device_is_refused() -> None:
    issue = only_issue("include /dev/zero\n")
    assert issue.message == "'/dev/zero': not a regular file"


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


# --------------------------------------------------------------------------
# Property tests: nothing but ConfigError, ever
# --------------------------------------------------------------------------


def _parse_or_error(text: str, path: str = "fuzz.conf") -> list[ConfigIssue]:
    try:
        parse_config(text, path)
    except ConfigError as exc:
        assert exc.errors, "ConfigError without issues"
        return exc.errors
    return []


@settings(max_examples=400, deadline=None)
@given(st.text())
def test_random_text_only_raises_config_error(text: str) -> None:
    assume("include" not in text)
    for issue in _parse_or_error(text):
        assert issue.file == "fuzz.conf"
        assert 0 <= issue.line <= text.count("\n") + 1


_TOKENS = st.sampled_from(
    ["tunsec", "manual", "site", "{", "}", "=", " ", "  ", "\n", "\r\n", "#", '"', "\\", "\\n", "x",
     "mtu", "1400", "auto", "spi_in", "0x1001", "key_in", "0x" + KEY_IN_HEX, "local_ts", "10.0.0.0/8",
     "[tcp/80]", ",", "local_addr", "192.0.2.1", "esp", "aes256gcm16", "connections", "\t", "5m"]
)  # fmt: skip


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_TOKENS, max_size=80))
def test_token_soup_only_raises_config_error(tokens: list[str]) -> None:
    text = "".join(tokens)
    for issue in _parse_or_error(text):
        assert 1 <= issue.line <= text.count("\n") + 1
        _assert_no_key_material(str(issue))


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(EXAMPLE)), st.integers(0, 20), st.text(max_size=5))
def test_mutated_example_only_raises_config_error(pos: int, cut: int, insert: str) -> None:
    assume("include" not in insert)
    text = EXAMPLE[:pos] + insert + EXAMPLE[pos + cut :]
    assume("include" not in text)
    for issue in _parse_or_error(text):
        assert issue.file == "fuzz.conf"
        assert 1 <= issue.line <= text.count("\n") + 1


def quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


_TUNNEL_KEYS = [
    "local_addr", "remote_addr", "local_port", "remote_port", "local_ts", "remote_ts", "esp",
    "spi_in", "spi_out", "key_in", "key_out", "esn", "replay_window", "life_bytes", "life_packets",
    "life_time", "rekey_bytes", "rekey_packets", "rekey_time",
]  # fmt: skip
_TUNSEC_KEYS = ["tun", "mtu", "outer_mtu", "control_socket", "workers", "log_level", "larval_timeout"]


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(_TUNNEL_KEYS), st.text(max_size=40) | st.from_regex(r"[0-9a-z/.:\[\]\-, ]{0,30}"))
def test_any_value_of_any_tunnel_key_is_a_clean_error(key: str, value: str) -> None:
    text = manual(tunnel("t", **{key: quoted(value)}))
    for issue in _parse_or_error(text):
        assert issue.key.startswith("manual.t.")
        assert issue.message


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_TUNSEC_KEYS), st.text(max_size=40))
def test_any_value_of_any_tunsec_key_is_a_clean_error(key: str, value: str) -> None:
    for issue in _parse_or_error(f"tunsec {{\n  {key} = {quoted(value)}\n}}\n"):
        assert (issue.line, issue.key) == (2, f"tunsec.{key}")


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=20).filter(lambda p: "/" not in p and ".." not in p))
def test_random_include_patterns_are_clean_errors(pattern: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "a.conf").write_text("tunsec {\n}\n")
        Path(tmp, "b.conf").write_text("garbage\n")
        Path(tmp, "sub").mkdir()
        main = os.path.join(tmp, "main.conf")
        for text in (f"include {pattern}\n", f"include {quoted(pattern)}\n"):
            for issue in _parse_or_error(text, main):
                assert issue.line >= 1


@given(st.integers(256, 2**32 - 1), st.booleans())
def test_spi_roundtrip(spi: int, as_hex: bool) -> None:
    written = hex(spi) if as_hex else str(spi)
    (t,) = parse_config(manual(tunnel(spi_in=written))).manual
    assert t.spi_in == spi


def test_section_reader_for_future_schemas() -> None:
    root = parse_settings("c {\n  version = 2\n  children { x { } }\n  extra { }\n}\n", "s")
    issues: list[ConfigIssue] = []
    r = SectionReader(root.sections["c"], issues)
    assert r.get("version", int, 0) == 2
    children = r.subsection("children")
    assert children is not None and list(children.sections) == ["x"]
    assert r.subsection("local") is None
    r.finish()
    assert [str(i) for i in issues] == ["s:4: c.extra: unknown section"]


def test_worker_user_when_the_install_made_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither tunsec nor nobody on the host: a startup error that says what to do."""
    import pwd

    from tunsec.conf.tunsec_section import worker_user

    real = pwd.getpwnam

    def lookup(name: str) -> pwd.struct_passwd:
        if name in ("tunsec", "nobody"):
            raise KeyError(name)
        return real(name)

    monkeypatch.setattr(pwd, "getpwnam", lookup)
    with pytest.raises(LookupError) as err:
        worker_user(None)
    msg = str(err.value)
    assert "tunsec or nobody does not exist" in msg and "useradd --system" in msg and "user = root" in msg
    assert worker_user("root") is None


def test_more_workers_than_tun_queues_is_an_error_naming_the_line(tmp_path: Path) -> None:
    """workers above what the daemon opens was once capped silently; now the file says so."""
    conf = tmp_path / "tunsec.conf"
    conf.write_text("tunsec {\n    workers = 17\n}\n")
    with pytest.raises(ConfigError) as err:
        load_config(conf)
    assert f"{conf}:2" in str(err.value) and "1..16" in str(err.value)
    conf.write_text("tunsec {\n    workers = 16\n}\n")
    assert load_config(conf).tunsec.workers == 16


@pytest.mark.parametrize(("addrs", "routed"), [
    ("10.3.0.0/24", ["10.3.0.0/24"]),            # one route, though .0 and .255 are never leased
    ("fd00:3::/120", ["fd00:3::/120"]),
    ("10.3.0.0-10.3.0.255", ["10.3.0.0/24"]),
    ("10.3.0.1-10.3.0.254", ["10.3.0.0/24"]),    # the same pool written as a range
    ("10.3.0.10-10.3.0.20", ["10.3.0.10/31", "10.3.0.12/30", "10.3.0.16/30", "10.3.0.20/32"]),
    ("10.3.0.2-10.3.0.3", ["10.3.0.2/31"]),
    ("10.3.0.5/32", ["10.3.0.5/32"]),
])
def test_a_pool_is_routed_through_the_fewest_networks_that_hold_only_it(addrs: str, routed: list[str]) -> None:
    """The gateway routes its pools into the TUN: a subnet pool is one route (a /24 summarized
    from .1-.254 was 14 routes, each a netlink round trip at start), a range exactly its blocks."""
    (pool,) = parse_config(f"pools {{\n  p {{ addrs = {addrs} }}\n}}\n", "tunsec.conf").pools
    assert [str(n) for n in pool.networks()] == routed


@pytest.mark.parametrize("key", ["local_port", "remote_port"])
def test_manual_tunnel_refuses_port_500(key: str) -> None:
    # IKE to or from port 500 carries no non-ESP marker, so the dataplane takes a datagram from 500
    # as IKE (as strongSwan does): ESP there would be dropped, so the config says so at once
    with pytest.raises(ConfigError) as info:
        parse_config(manual(tunnel(**{key: "500"})), "c")
    assert f"manual.t.{key}: port 500 carries only IKE" in str(info.value)
    (t,) = parse_config(manual(tunnel(**{key: "501"}))).manual
    assert getattr(t, key) == 501
