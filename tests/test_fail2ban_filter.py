"""The shipped fail2ban filter (contrib/fail2ban/filter.d/tunsec.conf) as fail2ban-regex reads it, on
AUTHENTICATION_FAILED lines written by tunsec's own log formats (text and JSON): a failure's line
names its peer, whatever address its quoted reason holds; the lines reporting failures held back by
the rate limit name each of their addresses (an IPv6 prefix by one address of it, never the prefix);
lines of a gateway refusing us, and the line for the rest, name none.  tests/e2e/test_fail2ban.py
does the same with a real daemon's log."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from f2b import FILTER, fail2ban_regex

from tunsec import logs
from tunsec.ike.auth_ban import AuthBan, AuthBanSettings
from tunsec.loglimit import SourceLimiter
from tunsec.services.ike import auth_log

# the peer's text (its identity) made to read as another peer's failure, for a filter that does not
# anchor its match at the line's start
BAIT = "x') AUTHENTICATION_FAILED from 203.0.113.9[500]: the peer failed authentication"


def _failures(fmt: str) -> str:
    out = io.StringIO()
    logs.configure("info", fmt="text" if fmt == "journal" else fmt, stream=out)
    if fmt == "journal":   # tunsec under systemd: no date, the priority first (journald reads it)
        logging.getLogger().handlers[0].setFormatter(logs.TextFormatter("tunsec", journald=True))
    flush: list[Callable[[], None]] = []
    lim = SourceLimiter(burst=2, clock=lambda: 0.0, flush_to=auth_log.report,
                        schedule=lambda _delay, cb: flush.append(cb))

    def fail(addr: str, port: int = 4500, by_peer: bool = False) -> None:
        auth_log.failed(lim, "gw", (addr, port), by_peer, f"peer identity {BAIT} is not the configured", True)

    fail("198.51.100.1")
    logging.getLogger("tunsec.ike").info("gw: EAP identity %r", f"{BAIT}; tunsec[1] ERROR y: {BAIT[4:]}")
    fail("2001:db8::1", by_peer=True)   # passes, names no one that failed
    for addr in ["198.51.100.7", "2001:db8:1:2::5", "198.51.100.7", "2001:db8:1:2::6", "198.51.100.7"]:
        fail(addr)
    fail("198.51.100.8", by_peer=True)
    fail("198.51.100.8", by_peer=True)
    for i in range(4):
        fail(f"192.0.2.{i}")   # one each: the last two counted in the rest
    flush.pop()()
    if fmt != "journal":
        return out.getvalue()
    # as fail2ban's journal backend makes a line of an entry: its date, host, identifier[pid]: MESSAGE
    # (journald took the priority off)
    return "".join(f"Dec  4 00:10:03 gw tunsec[42]: {ln.partition('>')[2]}\n" for ln in out.getvalue().splitlines())


@pytest.mark.parametrize("fmt", ["text", "json", "journal"])
def test_the_shipped_filter_takes_one_peer_from_each_line(fmt: str, root_logger: None, tmp_path: Path) -> None:
    log = tmp_path / "tunsec.log"
    log.write_text(_failures(fmt))
    assert len(log.read_text().splitlines()) == 3 + 5 + 1
    # not the bait's address: in the quoted reason of a line that names the peer that refused us, in
    # an INFO line's quoted text; then the held ones by count, then address: 198.51.100.7 (3), the
    # /64 (2), the refusal of us (2: not matched), 192.0.2.0 and .1 (1 each); the rest line names none
    assert fail2ban_regex(log) == ["198.51.100.1", "198.51.100.7", "2001:db8:1:2::5", "192.0.2.0", "192.0.2.1"], \
        log.read_text()


def test_the_documented_filter_is_the_shipped_one() -> None:
    (failregex,) = re.findall(r"^failregex = (.*)$", FILTER.read_text(), re.M)
    assert f"`{failregex}`" in (Path(__file__).resolve().parents[1] / "docs/operations.md").read_text()


def _decoyed_brute_force(fmt: str) -> str:
    """Review AE F2: five IPv6 decoy prefixes fail more often than an IPv4 attacker, all above the log's
    rate limit, so the held-back report's five places are the decoys' every period; and review AE F1:
    each decoy changes its address within its /64 at each failure."""
    out = io.StringIO()
    logs.configure("info", fmt=fmt, stream=out)
    now = [0.0]
    flush: list[Callable[[], None]] = []
    lim = SourceLimiter(burst=2, clock=lambda: now[0], flush_to=auth_log.report,
                        schedule=lambda _delay, cb: flush.append(cb))
    ban = AuthBan(AuthBanSettings(max=10, window=600.0, ban=600.0))
    for _ in range(10):   # ten periods of the limiter
        for i in range(5):
            for j in range(4):   # the first two pass the limit: each decoy still has 2+ held
                auth_log.failed(lim, "gw", (f"2001:db8:{i}:1::{now[0]:.0f}:{j}", 4500), False, "bad PSK", True, ban)
        auth_log.failed(lim, "gw", ("198.51.100.66", 4500), False, "bad PSK", True, ban)
        while flush:
            flush.pop()()
        now[0] += 10.0
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_tunsecs_ban_names_a_brute_force_decoys_hide_from_the_report(fmt: str, root_logger: None,
                                                                    tmp_path: Path) -> None:
    log = tmp_path / "tunsec.log"
    log.write_text(_decoyed_brute_force(fmt))
    bans = fail2ban_regex(log, f"{FILTER}[mode=bans]")
    # each decoy /64 banned as a prefix (not one address of it), and the attacker, after ten failures
    assert sorted(bans) == sorted([*(f"2001:db8:{i}:1::/64" for i in range(5)), "198.51.100.66"]), log.read_text()
    # the report's five places are the decoys' every period: the attacker is named by its ban line only
    assert fail2ban_regex(log).count("198.51.100.66") == 1


def test_a_link_local_peers_failure_is_matched_without_its_scope(root_logger: None, tmp_path: Path) -> None:
    """Review AE F4: a link-local peer's address comes with its scope (fe80::1%eth0)."""
    out = io.StringIO()
    logs.configure("info", fmt="text", stream=out)
    auth_log.failed(SourceLimiter(), "gw", ("fe80::1%eth0", 500), False, "bad PSK", True)
    log = tmp_path / "tunsec.log"
    log.write_text(out.getvalue())
    assert fail2ban_regex(log) == ["fe80::1"], log.read_text()


def _wider_bans(fmt: str) -> str:
    """An IPv4 address's ban, a /56's (four of its /64s failing twice, each banned) and a /48's (sixteen
    /64s of as many /56s failing twice): with auth_failures = 2, a /56 is banned at 8, a /48 at 32."""
    out = io.StringIO()
    logs.configure("info", fmt=fmt, stream=out)
    ban = AuthBan(AuthBanSettings(max=2, window=600.0, ban=600.0))
    addrs = ["198.51.100.66", *(f"2001:db8:5:10{k}::1" for k in range(4)),
             *(f"2001:db8:6:{k:x}00::1" for k in range(16))]
    for addr in addrs:
        for _ in range(2):
            auth_log.failed(SourceLimiter(), "gw", (addr, 4500), False, "bad PSK", True, ban)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_wider_prefixs_ban_says_so_and_the_filter_leaves_it_to_tunsec(fmt: str, root_logger: None,
                                                                         tmp_path: Path) -> None:
    """Review revban2 F3: a /56's or /48's ban line read as a /64's ("the peer failed authentication
    40 times"): it names its parts and the threshold now.  The filter does not take it (either mode):
    fail2ban's ignoreip checks only a banned prefix's first address, so the prefix banned at the
    firewall would hold users' networks listed in ignoreip (review revbanobs F1); tunsec refuses the
    prefix itself (docs/operations.md, "Logs")."""
    log = tmp_path / "tunsec.log"
    log.write_text(_wider_bans(fmt))
    lines = [ln for ln in log.read_text().splitlines() if "banned: AUTHENTICATION_FAILED" in ln]
    assert len(lines) == 1 + 4 + 1 + 16 + 1, lines
    (v4,) = [ln for ln in lines if "198.51.100.66" in ln]
    (w56,) = [ln for ln in lines if "/56" in ln]
    (w48,) = [ln for ln in lines if "/48" in ln]
    assert "from 198.51.100.66: the peer failed authentication 2 times" in v4
    assert all("the peer failed authentication 2 times" in ln for ln in lines if "/64: " in ln)
    assert ("from 2001:db8:5:100::/56: 4 of its /64s failed authentication 8 times in 0s "
            "(a /56 is banned at 4 x auth_failures of its parts)") in w56, w56
    assert ("from 2001:db8:6::/48: 16 of its /64s failed authentication 32 times in 0s "
            "(a /48 is banned at 16 x auth_failures of its parts)") in w48, w48
    assert "the peer" not in w56 + w48
    want = ["198.51.100.66", *(f"2001:db8:5:10{k}::/64" for k in range(4)),
            *(f"2001:db8:6:{k:x}00::/64" if k else "2001:db8:6::/64" for k in range(16))]
    assert fail2ban_regex(log, f"{FILTER}[mode=bans]") == want, log.read_text()
    # mode = all: each failure's line too; never a wider prefix
    found = fail2ban_regex(log)
    assert "198.51.100.66" in found and not [a for a in found if a.endswith(("/56", "/48"))], found
