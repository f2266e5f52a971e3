"""tunsec { half_open_timeout, cookie_threshold, half_open_limit, cookie_threshold_ip, block_threshold,
ipv6_source_prefix }:
parsed, checked, and what they do to an engine built from the configuration as the daemon builds it."""

from __future__ import annotations

import struct

import pytest
from config_data import psk_gateway

from tunsec.conf.config import parse_config
from tunsec.conf.errors import ConfigError
from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.dos_source import source_key
from tunsec.ike.endpoint import IkeEndpoint, calmdown_bucket
from tunsec.ike.identity import Identity
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.secret import Secret

CONNECTION = psk_gateway()
ANYONE = CONNECTION.replace("remote_addrs = 192.0.2.1", "remote_addrs = %any")   # requests from many addresses


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


def _flood(b: IkeEndpoint, n: int, now: float, *, sources: int = 1) -> None:
    """n IKE_SA_INIT requests from ``sources`` addresses in turn (192.0.2.1 first), each from its own port."""
    _flood_from(b, [f"192.0.2.{i % sources + 1}" for i in range(n)], now)


def _flood_from(b: IkeEndpoint, ips: list[str], now: float) -> None:
    """One IKE_SA_INIT request from each of ``ips``, each from its own port and under its own SPIi."""
    request = _request()
    for i, ip in enumerate(ips):
        b.receive(struct.pack("!Q", 0x1000 + i) + request[8:], (ip, 1000 + i), now)


def _in_64(prefix: str, n: int) -> list[str]:
    """n different addresses of the /64 ``prefix`` (its first four groups)."""
    return [f"{prefix}:{i * 7919 & 0xFFFF:x}::{i + 1:x}" for i in range(n)]


def test_defaults_are_strongswans() -> None:
    # charon.half_open_timeout = 30 s, charon.cookie_threshold = 30
    b = _engine(ANYONE)
    _flood(b, 35, 0.0, sources=35)
    assert b.half_open == 30 and b.stats.cookies_sent == 5
    b.handle_timer(29.0)
    assert b.half_open == 30
    b.handle_timer(30.0)
    assert b.half_open == 0 and b.sa_count == 0
    # charon.cookie_threshold_ip = 3: one address gets COOKIEs above 3 half-open SAs, the others do not
    b = _engine(ANYONE)
    _flood(b, 10, 0.0)
    # an address whose COOKIE calm-down time is not kept with 192.0.2.1's (groups by a per-run hash)
    other = next(ip for ip in (f"192.0.2.{i}" for i in range(2, 255))
                 if calmdown_bucket(ip) != calmdown_bucket("192.0.2.1"))
    b.receive(struct.pack("!Q", 0x9999) + _request()[8:], (other, 500), 0.0)
    assert b.half_open_from("192.0.2.1") == 3 and b.half_open_from(other) == 1
    assert b.stats.cookies_sent == 7


def test_settings_drive_the_engine() -> None:
    b = _engine("tunsec {\n  half_open_timeout = 5\n  cookie_threshold = 8\n  half_open_limit = 3\n}\n" + ANYONE)
    _flood(b, 10, 0.0, sources=10)
    assert b.half_open == 3 and b.stats.half_open_limit == 7 and b.stats.cookies_sent == 0
    b.handle_timer(5.0)
    assert b.sa_count == 0
    b = _engine("tunsec {\n  cookie_threshold = 0\n}\n" + CONNECTION)
    _flood(b, 10, 0.0)
    assert b.sa_count == 0 and b.stats.cookies_sent == 10


def test_per_address_settings_drive_the_engine() -> None:
    # no per-address COOKIE below 6 half-open SAs: the 5th request from 192.0.2.1 is dropped (block_threshold 4)
    b = _engine("tunsec {\n  cookie_threshold_ip = 6\n  block_threshold = 4\n}\n" + CONNECTION)
    _flood(b, 10, 0.0)
    assert b.half_open == 4 and b.stats.block_threshold == 6 and b.stats.cookies_sent == 0
    # charon's advice for many clients behind one NAT: raise both; then only the global limits apply
    b = _engine("tunsec {\n  cookie_threshold_ip = 100\n  block_threshold = 200\n}\n" + CONNECTION)
    _flood(b, 40, 0.0)
    assert b.half_open == 30 and b.stats.cookies_sent == 10 and b.stats.block_threshold == 0
    b = _engine("tunsec {\n  cookie_threshold_ip = 0\n}\n" + CONNECTION)
    _flood(b, 3, 0.0)
    assert b.sa_count == 0 and b.stats.cookies_sent == 3   # 0: a COOKIE from every address, always


def test_ipv6_sources_count_per_64_by_default_and_per_ipv6_source_prefix() -> None:
    # by default an IPv6 /64 is one source: ten addresses of it get three half-open SAs, as one IPv4
    # address (the others are asked for COOKIEs), and at block_threshold the rest are dropped
    b = _engine(ANYONE)
    _flood_from(b, _in_64("2001:db8:1:2", 10), 0.0)
    assert b.half_open == b.half_open_from("2001:db8:1:2::1") == 3 and b.stats.cookies_sent == 7
    b = _engine("tunsec {\n  cookie_threshold_ip = 6\n  block_threshold = 4\n}\n" + ANYONE)
    _flood_from(b, _in_64("2001:db8:1:2", 10), 0.0)
    assert b.half_open == 4 and b.stats.block_threshold == 6
    # a /64 outside the busy one's COOKIE calm-down group is its own source
    busy = source_key("2001:db8:1:2::1")
    other = next(p for p in (f"2001:db8:1:{j:x}" for j in range(3, 200))
                 if calmdown_bucket(source_key(p + "::1")) != calmdown_bucket(busy))
    _flood_from(b, _in_64(other, 2), 0.0)
    assert b.half_open == 6 and b.half_open_from(other + "::1") == 2 and b.stats.block_threshold == 6
    # ipv6_source_prefix = 48: both /64s are one source, already at block_threshold
    b = _engine("tunsec {\n  ipv6_source_prefix = 48\n  cookie_threshold_ip = 6\n  block_threshold = 4\n}\n"
                + ANYONE)
    _flood_from(b, _in_64("2001:db8:1:2", 4) + _in_64(other, 2), 0.0)
    assert b.half_open == 4 and b.stats.block_threshold == 2 and b.half_open_busiest() == "2001:db8:1::/48"
    # ipv6_source_prefix = 128: per address, as strongSwan (a /64 is 2^64 sources)
    b = _engine("tunsec {\n  ipv6_source_prefix = 128\n}\n" + ANYONE)
    _flood_from(b, _in_64("2001:db8:1:2", 10), 0.0)
    assert b.half_open == b.half_open_addresses == 10 and b.stats.cookies_sent == 0


def test_ipv4_mapped_sources_count_as_the_ipv4_address_whatever_the_prefix() -> None:
    b = _engine("tunsec {\n  ipv6_source_prefix = 32\n}\n" + ANYONE)
    _flood_from(b, ["::ffff:192.0.2.1", "192.0.2.1", "::ffff:192.0.2.1", "::ffff:192.0.2.1"], 0.0)
    assert b.half_open_from("192.0.2.1") == 3 and b.stats.cookies_sent == 1
    other = next(ip for ip in (f"198.51.100.{i}" for i in range(1, 255))
                 if calmdown_bucket(ip) != calmdown_bucket("192.0.2.1"))
    _flood_from(b, [f"::ffff:{other}"], 0.0)
    assert b.half_open_from(other) == 1 and b.half_open_addresses == 2


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
        ("cookie_threshold_ip", "-1", "not a number of half-open IKE SAs from one address: '-1'"),
        ("block_threshold", "0", "0 is out of range 1..1048576"),
        ("ipv6_source_prefix", "16", "16 is out of range 32..128"),
        ("ipv6_source_prefix", "129", "129 is out of range 32..128"),
        ("ipv6_source_prefix", "/64", "not an IPv6 prefix length: '/64'"),
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


def test_the_worker_is_told_the_ipv6_source_prefix_and_a_change_needs_a_restart() -> None:
    """dos.ipv6_source_prefix governs the worker's per-source limits too (h/fixobs): its option, as the
    daemon builds it for the worker and the spawner.  The spawner holds the worker's options from its
    own start, so a reload that changes it is refused as a whole (a restart key), as before."""
    from tunsec.conf.diff import restart_keys
    from tunsec.dataplane.client import WorkerFds, worker_args

    def told(conf: str) -> str:
        s = parse_config(conf).tunsec
        argv = worker_args(WorkerFds(3), 1400, s.larval_timeout, s.log_level, s.log_format, s.worker_sandbox,
                           s.dos.ipv6_source_prefix)
        return argv[argv.index("--ipv6-source-prefix") + 1]

    assert told("") == "64"
    assert told("tunsec {\n  ipv6_source_prefix = 48\n}\n") == "48"
    assert told("tunsec {\n  ipv6_source_prefix = 128\n}\n") == "128"
    old, new = parse_config(""), parse_config("tunsec {\n  ipv6_source_prefix = 56\n}\n")
    assert restart_keys(old.tunsec, new.tunsec) == ["ipv6_source_prefix"]
