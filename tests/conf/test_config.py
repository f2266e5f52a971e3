"""Tests for tunsec.conf: the example and the values it produces (tunsec { }, manual { }), keys kept
secret, workers, pools and the manual tunnels' ports."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from config_data import (
    EXAMPLE,
    KEY256_HEX,
    KEY256_OUT_HEX,
    KEY_IN_HEX,
    KEY_OUT_HEX,
    LINE,
    SITE_B_LINE,
    assert_no_key_material,
    issues_of,
    line_of,
    manual,
    only_issue,
    own_key,
    tunnel,
)

from tunsec.conf.config import Config, load_config, parse_config
from tunsec.conf.errors import ConfigError, ConfigIssue
from tunsec.conf.manual import Esp
from tunsec.conf.reader import SectionReader
from tunsec.conf.syntax import parse_settings
from tunsec.policy.selector import parse_ts

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


def test_worker_sandbox_is_on_unless_turned_off() -> None:
    from tunsec.dataplane.client import WorkerFds, worker_args

    assert parse_config("").tunsec.worker_sandbox is True
    assert parse_config("tunsec {\n worker_sandbox = no\n}\n").tunsec.worker_sandbox is False
    with pytest.raises(ConfigError, match="worker_sandbox"):
        parse_config("tunsec {\n worker_sandbox = maybe\n}\n")
    # what the worker is told: only the off switch is an option of its own
    assert "--no-sandbox" not in worker_args(WorkerFds(3), 1400, 30, "info", "text")
    assert "--no-sandbox" in worker_args(WorkerFds(3), 1400, 30, "info", "text", sandbox=False)


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
            key_out="0X" + KEY256_OUT_HEX.upper(),
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
    keys = {"key_in": "0x" + KEY256_HEX, "key_out": "0x" + KEY256_OUT_HEX} if "256" in name else {}
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
# Keys are secrets
# --------------------------------------------------------------------------


def test_repr_and_str_of_config_show_no_key() -> None:
    config = parse_config(EXAMPLE)
    assert_no_key_material(repr(config))
    assert_no_key_material(str(config))
    assert_no_key_material(f"{config.manual[0].key_in}")
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
    assert_no_key_material(str(issue))


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
    assert_no_key_material(str(info.value))
    assert_no_key_material(repr(info.value.errors))


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
    """No tunsec on the host: a startup error that says what to do, never a silent nobody (shared
    with other daemons, and nogroup with them); nobody written out is honoured."""
    import pwd

    from tunsec.conf.tunsec_section import worker_user

    real = pwd.getpwnam

    def lookup(name: str) -> pwd.struct_passwd:
        if name == "tunsec":
            raise KeyError(name)
        return real(name)

    monkeypatch.setattr(pwd, "getpwnam", lookup)
    with pytest.raises(LookupError) as err:
        worker_user(None)
    msg = str(err.value)
    assert "user tunsec does not exist" in msg and "useradd --system" in msg and "user = root" in msg
    assert "nobody" not in msg
    assert worker_user("nobody") == "nobody"
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


def test_a_key_in_two_sas_is_refused_naming_both_places() -> None:
    """The GCM nonce is salt || sequence number, the SPI is not in it: two SAs under one key would
    each count from 1. Two tunnels (other SPIs), and key_in == key_out (the peer's outbound SA is
    the second one), whatever the hex digits' case."""
    shared = own_key(KEY_OUT_HEX, "a")
    text = manual(tunnel("a"), tunnel("b", spi_in="0x1002", spi_out="0x2002", key_out="0X" + shared.upper()))
    issue = only_issue(text)
    assert (issue.line, issue.key) == (line_of(text, "0X" + shared.upper()), "manual.b.key_out")
    assert f"the same key as manual.a.key_out (tunsec.conf:{line_of(text, shared)})" in issue.message
    assert "repeats AES-GCM nonces" in issue.message and "random key of its own" in issue.message
    assert_no_key_material(str(issue))

    text = manual(tunnel(key_out="0x" + KEY_IN_HEX))
    issue = only_issue(text)
    assert (issue.line, issue.key) == (line_of(text, "key_out"), "manual.t.key_out")
    assert f"the same key as manual.t.key_in (tunsec.conf:{line_of(text, 'key_in')})" in issue.message
    assert "the peer sends with its key_out = our key_in" in issue.message
