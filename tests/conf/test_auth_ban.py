"""The failed-authentication ban (tunsec.ike.auth_ban), with a fake clock: what it counts, per which
source (an IPv6 /64: review AE F1), when it bans and for how long, what it refuses, its bound."""

from __future__ import annotations

import ipaddress
import logging

import pytest
from config_data import psk_gateway

from tunsec.conf.config import parse_config
from tunsec.conf.diff import restart_keys
from tunsec.conf.errors import ConfigError
from tunsec.ike.auth_ban import MAX_BAN_FACTOR, STRIKES_PER_SOURCE, AuthBan, AuthBanSettings

# an IKE_SA_INIT request's header (initiator flag, message ID 0) and an IKE_AUTH's
INIT = bytes(16) + bytes([33, 0x20, 34, 0x08]) + bytes(8)
AUTH = bytes(16) + bytes([35, 0x20, 35, 0x08]) + bytes(8)
INIT_RESPONSE = bytes(16) + bytes([33, 0x20, 34, 0x20]) + bytes(8)


def _table(max: int = 3, window: float = 60.0, ban: float = 100.0, cap: int = 4096) -> AuthBan:
    return AuthBan(AuthBanSettings(max, window, ban), cap=cap)


def test_max_failures_within_the_window_ban_the_source_and_only_its_ike_sa_init() -> None:
    t = _table()
    assert t.failed("198.51.100.7", 0.0) is None
    assert t.failed("198.51.100.7", 10.0) is None
    assert not t.refuses(INIT, "198.51.100.7", 11.0)
    ban = t.failed("198.51.100.7", 20.0)
    assert ban is not None and (ban.source, ban.until, ban.failures) == ("198.51.100.7", 120.0, 3)
    assert t.refuses(INIT, "198.51.100.7", 21.0)
    assert t.dropped == 1
    # its other IKE (an established IKE SA's requests, a rekey), responses, and other sources go on
    assert not t.refuses(AUTH, "198.51.100.7", 21.0)
    assert not t.refuses(INIT_RESPONSE, "198.51.100.7", 21.0)
    assert not t.refuses(INIT, "198.51.100.8", 21.0)
    assert not t.refuses(INIT[:20], "198.51.100.7", 21.0)   # too short to be IKE: the engine's to drop
    assert t.dropped == 1
    # over at its end
    assert t.refuses(INIT, "198.51.100.7", 119.9)
    assert not t.refuses(INIT, "198.51.100.7", 120.0)
    assert t.bans(120.0) == []


def test_failures_further_apart_than_the_window_do_not_ban() -> None:
    t = _table()
    for now in (0.0, 30.0, 60.0, 90.0, 120.0, 150.0):   # 2 per window at most
        assert t.failed("198.51.100.7", now) is None
    assert not t.refuses(INIT, "198.51.100.7", 151.0)


def test_an_ipv6_host_rotating_its_address_within_its_64_is_one_source() -> None:
    """Review AE F1: a new address of the /64 at each failure is still banned (and the whole /64)."""
    t = _table()
    t.failed("2001:db8:1:2::1", 0.0)
    t.failed("2001:db8:1:2:aaaa::2", 1.0)
    ban = t.failed("2001:db8:1:2:ffff:ffff:ffff:fffe", 2.0)
    assert ban is not None and ban.source == "2001:db8:1:2::/64"
    assert t.refuses(INIT, "2001:db8:1:2:1234::9", 3.0)
    assert not t.refuses(INIT, "2001:db8:1:3::1", 3.0)   # the next /64: someone else


def test_link_local_sources_are_counted_per_link() -> None:
    """fe80::/64 on two links are two networks (review AE F4: scoped addresses)."""
    t = _table()
    for i in range(3):
        t.failed(f"fe80::{i + 1}%eth0", float(i))
    assert [b.source for b in t.bans(3.0)] == ["fe80::/64%eth0"]
    assert t.refuses(INIT, "fe80::99%eth0", 3.0)
    assert not t.refuses(INIT, "fe80::1%eth1", 3.0)


def test_unscoped_link_local_sources_get_no_wider_prefix_counts() -> None:
    """Review revipv6 R1: a link-local source named without its zone (as the worker's port-4500 path
    gave it) was counted under the /56 and /48 too, which the scoped form skips: fe80::/10 is no
    network's allocation.  Failures spread over its /64s ban no wider prefix."""
    t = AuthBan()   # the defaults: 10 in 10 min
    now = 0.0
    for i in range(256):
        for _ in range(t.settings.max - 1):
            t.failed(f"fe80:0:0:{i:x}::1", now)
            now += 0.1
    assert t.bans(now) == []
    assert not t.refuses(INIT, "fe80:0:0:ff:1::1", now)


def test_an_ipv4_mapped_source_is_its_ipv4_address() -> None:
    t = _table()
    t.failed("::ffff:198.51.100.7", 0.0)
    t.failed("198.51.100.7", 1.0)
    assert t.failed("::ffff:198.51.100.7", 2.0) is not None
    assert t.refuses(INIT, "198.51.100.7", 3.0)


def test_a_repeat_offender_is_banned_longer_up_to_a_bound() -> None:
    t = _table(max=1, ban=10.0)
    now, lengths = 0.0, []
    for _ in range(7):
        ban = t.failed("198.51.100.7", now)
        assert ban is not None
        lengths.append(ban.until - now)
        now = ban.until
    assert lengths == [10.0, 20.0, 40.0, 80.0, 160.0, 160.0, 160.0]
    assert MAX_BAN_FACTOR == 16


def test_a_failure_while_banned_is_counted_into_the_ban_and_does_not_extend_it() -> None:
    t = _table()
    for now in (0.0, 1.0, 2.0):
        t.failed("198.51.100.7", now)
    assert t.failed("198.51.100.7", 5.0) is None   # a half-open SA opened before the ban
    (ban,) = t.bans(6.0)
    assert (ban.until, ban.failures) == (102.0, 4)


def test_max_zero_bans_nothing() -> None:
    t = _table(max=0)
    for i in range(100):
        assert t.failed("198.51.100.7", float(i)) is None
    assert not t.refuses(INIT, "198.51.100.7", 100.0) and len(t) == 0


def test_the_table_is_bounded_under_a_flood_of_sources_and_keeps_its_bans() -> None:
    t = _table(cap=64)
    for now in (0.0, 1.0, 2.0):
        t.failed("198.51.100.7", now)
    for i in range(100_000):   # 100000 /64s failing once each
        t.failed(f"2001:db8:{i >> 16:x}:{i & 0xffff:x}::1", 3.0)
        assert len(t) <= 64
    assert t.refuses(INIT, "198.51.100.7", 4.0)   # a ban is not what a flood of counts pushes out


def test_one_ban_line_names_the_source_prefix(caplog: pytest.LogCaptureFixture) -> None:
    t = _table()
    with caplog.at_level(logging.ERROR, logger="tunsec.ike"):
        for i in range(5):
            t.failed(f"2001:db8:1:2::{i + 1}", float(i))
    (line,) = [r.getMessage() for r in caplog.records]
    assert line == ("banned: AUTHENTICATION_FAILED from 2001:db8:1:2::/64: the peer failed authentication 3 "
                    "times in 2s, its IKE_SA_INIT requests dropped for 100s")


def test_the_settings_default_on_and_are_validated() -> None:
    assert parse_config(psk_gateway()).tunsec.auth_ban == AuthBanSettings(10, 600.0, 600.0)
    cfg = parse_config("tunsec {\n  auth_failures = 0\n  auth_failures_window = 1h\n  auth_failures_ban = 2d\n}\n"
                       + psk_gateway())
    assert cfg.tunsec.auth_ban == AuthBanSettings(0, 3600.0, 172800.0)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("auth_failures", "-1", "failed authentications (0: no ban)"),
    ("auth_failures_window", "0s", "must be 1s to 7d"),
    ("auth_failures_ban", "8d", "must be 1s to 7d"),
    ("auth_failures_ban", "soon", "not a duration"),
])
def test_bad_settings_name_line_and_key(key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(f"tunsec {{\n  log_level = info\n  {key} = {value}\n}}\n", "t.conf")
    (issue,) = err.value.errors
    assert (issue.file, issue.line, issue.key) == ("t.conf", 3, f"tunsec.{key}")
    assert message in issue.message


def test_max_zero_lifts_the_bans_in_force_until_set_again() -> None:
    """What a reload setting auth_failures = 0 does (the daemon hands the table the new settings)."""
    t = _table()
    for now in (0.0, 1.0, 2.0):
        t.failed("198.51.100.7", now)
    t.settings = AuthBanSettings(0, 60.0, 100.0)
    assert not t.refuses(INIT, "198.51.100.7", 3.0) and t.bans(3.0) == []
    t.settings = AuthBanSettings(3, 60.0, 100.0)
    assert t.refuses(INIT, "198.51.100.7", 4.0)


def test_a_reload_may_change_the_settings() -> None:
    old = parse_config(psk_gateway()).tunsec
    new = parse_config("tunsec {\n  auth_failures = 0\n}\n" + psk_gateway()).tunsec
    assert restart_keys(old, new) == []


def test_a_flood_of_bans_never_lifts_a_ban_in_force() -> None:
    """Review revban F4: the oldest ban was evicted once the table held only bans (a /52's 4096 /64s
    banned lifted the attacker's own first ban).  Now a new source is not counted, and that is counted."""
    t = AuthBan(AuthBanSettings(max=1, window=600.0, ban=600.0), cap=4)
    t.failed("198.51.100.0", 0.0)   # (IPv4: an IPv6 /64's failures count into its /56 and /48 too)
    for i in range(1, 5):
        t.failed(f"198.51.100.{i}", 1.0)
    assert t.refuses(INIT, "198.51.100.0", 2.0), "the first source's ban was evicted by newer bans"
    assert (len(t), t.uncounted, [b.source for b in t.bans(2.0)][:1]) == (4, 1, ["198.51.100.0"])
    # once a ban is over, a new source is counted again
    assert t.failed("198.51.100.9", 601.0) is not None and t.refuses(INIT, "198.51.100.9", 602.0)


def test_a_repeat_offenders_strikes_survive_other_sources_failures() -> None:
    """Review revban F5: its strikes lived in the counting table, where cap - 1 other sources failing
    pushed them out: its next ban was as short as its first."""
    t = AuthBan(AuthBanSettings(max=1, window=600.0, ban=10.0), cap=8)
    assert t.failed("198.51.100.7", 0.0) is not None        # banned 10 s
    assert not t.refuses(INIT, "198.51.100.7", 10.0)        # over
    for i in range(8):                                       # 8 other sources, banned too
        t.failed(f"2001:db8:0:{i:x}::1", 10.5)
    assert t.bans(11.0)[0].until == 20.5                     # (they fill the table: none lifted for it)
    ban = t.failed("198.51.100.7", 21.0)
    assert ban is not None and ban.until - 21.0 == 20.0, f"second ban {ban.until - 21.0 if ban else None}s, not 20s"


def test_the_strikes_kept_are_bounded() -> None:
    t = AuthBan(AuthBanSettings(max=1, window=600.0, ban=1.0), cap=4)
    for i in range(100):   # 100 sources banned once each, every ban over by the next one
        t.failed(f"198.51.100.{i}", float(2 * i))
    t.bans(1000.0)
    assert len(t._strikes) == STRIKES_PER_SOURCE * 4 and len(t) == 0


def test_an_ipv6_attacker_rotating_over_the_64s_of_its_56_is_banned_as_the_56(
        caplog: pytest.LogCaptureFixture) -> None:
    """Review revban F3: a source is one /64 and nothing aggregated above it: a /56 (256 /64s) got
    256 x (max - 1) = 2304 guesses per window, and was never banned."""
    t = AuthBan()   # the defaults: 10 in 10 min
    now = 0.0
    with caplog.at_level(logging.ERROR, logger="tunsec.ike"):
        for i in range(256):
            for _ in range(t.settings.max - 1):
                t.failed(f"2001:db8:0:{i:x}::1", now)
                now += 0.1
    assert [b.source for b in t.bans(now)] == ["2001:db8::/56"]
    assert t.refuses(INIT, "2001:db8:0:ff:1::1", now) and not t.refuses(INIT, "2001:db8:0:100::1", now)
    # the line names the wider prefix (the fail2ban filter's <SUBNET>); banned at 4 x max failures
    assert [r.getMessage().split(":")[0:2] for r in caplog.records if r.getMessage().startswith("banned")] \
        == [["banned", " AUTHENTICATION_FAILED from 2001"]]
    # not as a /64's (review revban2 F3): its parts that failed (five /64s of 9, 9, 9, 9, 4), the threshold
    assert "from 2001:db8::/56: 5 of its /64s failed authentication 40 times in 3s (a /56 is banned at 4 x " \
        "auth_failures of its parts)" in caplog.text


def test_the_48_of_an_ipv6_attacker_rotating_over_its_56s_is_banned() -> None:
    t = AuthBan()
    now = 0.0
    for i in range(16 * 10 - 1):   # 159 failures over 159 /64s in 40 /56s: no /64 nor /56 banned yet
        t.failed(f"2001:db8:0:{(i // 4) << 8 | i % 4:x}::1", now)
        now += 0.1
    assert t.bans(now) == []
    t.failed("2001:db8:0:ff00::1", now)
    assert [b.source for b in t.bans(now)] == ["2001:db8::/48"]


def test_link_local_and_ipv4_sources_are_not_widened() -> None:
    t = AuthBan(AuthBanSettings(max=1, window=600.0, ban=600.0))
    t.failed("fe80::1%eth0", 0.0)
    t.failed("198.51.100.7", 0.0)
    assert sorted(b.source for b in t.bans(1.0)) == ["198.51.100.7", "fe80::/64%eth0"]


def test_unban_lifts_the_bans_covering_a_target_and_forgets_their_counts_and_strikes(
        caplog: pytest.LogCaptureFixture) -> None:
    """`tunsec unban`: an address lifts the ban of the /64 (and the /56) holding it, the source counts
    from nothing again and its next ban is not doubled; other sources' bans stay."""
    t = _table(max=1)
    t.failed("198.51.100.7", 0.0)
    for i in range(5):   # five /64s of one /56: the /64s, then the /56 (4 x max, unbanned parts)
        t.failed(f"2001:db8:1:{i}::1", 1.0)
    t.failed("fe80::1%eth0", 2.0)
    assert {b.source for b in t.bans(3.0)} >= {"198.51.100.7", "2001:db8:1::/56", "2001:db8:1:4::/64",
                                               "fe80::/64%eth0"}
    assert t.lift("192.0.2.1") == []
    with caplog.at_level(logging.WARNING, logger="tunsec.ike"):
        assert sorted(t.lift("2001:db8:1:4::99")) == ["2001:db8:1:4::/64", "2001:db8:1::/56"]
    assert "ban of 2001:db8:1:4::/64 lifted by the operator" in caplog.text
    assert not t.refuses(INIT, "2001:db8:1:4::5", 3.0)
    assert t.refuses(INIT, "2001:db8:1:3::5", 3.0)      # its own /64's ban stays: it did not cover it
    assert t.refuses(INIT, "198.51.100.7", 3.0)
    assert t.lift("fe80::1%eth1") == [] and t.lift("fe80::1%eth0") == ["fe80::/64%eth0"]
    assert t.lift("198.51.100.0/24") == ["198.51.100.7"]
    # counted afresh, with no strike: the next ban is ban seconds, not doubled
    ban = t.failed("198.51.100.7", 10.0)
    assert ban is not None and ban.until == 110.0
    for bad in ("", "example.org", "198.51.100.300", "2001:db8::/129"):
        with pytest.raises(ValueError):
            t.lift(bad)


def _in_48(n: int) -> str:
    """A host in the n-th /64 of 2001:db8:77::/48."""
    return str(ipaddress.IPv6Network("2001:db8:77::/48").network_address + (n << 64) + 1)


def test_a_wider_prefix_someone_authenticated_from_is_not_banned_for_an_attackers_64s() -> None:
    """Review revban2 F1: one attacker rotating over 16 /64s in 4 /56s of a carrier's /48 (a /64 per
    device) banned the /48, its other customers with it.  Once a client of that /48 authenticated, its
    /48 (and its /56) are someone's shared ones: the attacker's /64s and /56s are banned, not the /48."""
    t = AuthBan(AuthBanSettings(max=5, window=600.0, ban=600.0))
    t.succeeded(_in_48(0xAB01), 900.0)   # a customer of the same carrier, its own /56 and /64
    now = 1000.0
    for s56 in range(4):
        for s64 in range(4):
            for _ in range(5):
                t.failed(_in_48((s56 << 8) + s64), now)
                now += 1.0
    assert not t.refuses(INIT, _in_48(0xAB01), now)
    assert not t.refuses(INIT, _in_48(0x0A05), now)   # another /56 of it nobody failed from
    assert t.refuses(INIT, _in_48(0x0205), now)       # an unused /64 of one of the attacker's /56s
    banned = {b.source for b in t.bans(now)}
    assert len(banned) == 20 and not any(b.endswith("/48") for b in banned), banned
    # a day later with no success since, the /48 counts its parts again
    t2 = AuthBan(AuthBanSettings(max=5, window=600.0, ban=600.0))
    t2.succeeded(_in_48(0xAB01), 0.0)
    now = 90000.0
    for s56 in range(4):
        for s64 in range(4):
            for _ in range(5):
                t2.failed(_in_48((s56 << 8) + s64), now)
                now += 1.0
    assert t2.refuses(INIT, _in_48(0xAB01), now)


def test_a_wider_bans_line_counts_the_parts_failing_in_their_window(caplog: pytest.LogCaptureFixture) -> None:
    """Review revban2 F3: "N of its /64s" are those whose failures are within their window or banned,
    not one whose count went stale (still in the table)."""
    t = _table(max=3, window=60.0)
    with caplog.at_level(logging.ERROR, logger="tunsec.ike"):
        t.failed("2001:db8:0:1::1", 0.0)             # stale by the time of the ban: not a part of it
        for i in range(2, 8):                        # six /64s, two failures each: 12 = 4 x max
            for _ in range(2):
                t.failed(f"2001:db8:0:{i}::1", 100.0)
    assert [b.source for b in t.bans(100.0)] == ["2001:db8::/56"]
    assert "from 2001:db8::/56: 6 of its /64s failed authentication 12 times in 0s" in caplog.text, caplog.text


def test_one_uncounted_ipv6_failure_is_counted_once() -> None:
    """Review revbanobs F2: a global IPv6 failure is filed under its /64, /56 and /48; with the table
    full of bans, one failure not counted added 3 to `uncounted` (the metric says failures)."""
    ban = AuthBan(AuthBanSettings(max=1, window=600.0, ban=600.0), cap=4)
    for i in range(4):   # the table full of bans in force (IPv4 sources: one key each)
        assert ban.failed(f"198.51.100.{i}", 0.0) is not None
    assert len(ban.bans(1.0)) == 4
    ban.failed("198.51.100.9", 1.0)
    assert ban.uncounted == 1
    ban.failed("2001:db8:1:2::5", 1.0)
    assert ban.uncounted == 2, ban.uncounted
