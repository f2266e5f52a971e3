"""A peer's identity, sent before it is authenticated, in the responder's AUTHENTICATION_FAILED log
line (tunsec.logs, as `tunsec up` configures it): one line of printable characters, whatever the
DN holds (review of 2026-12-03, ninth session: U+2028, NEL, C1 CSI and bidi overrides passed); the
peer's real address right after AUTHENTICATION_FAILED, before anything the peer chose, whose text is
quoted as one string literal (eleventh session: a DN ending "failed from 203.0.113.9" was the only
address in the line)."""

from __future__ import annotations

import ast
import dataclasses
import io
import json
import logging
import re
from collections.abc import Callable

import pytest
from f2b import FILTER
from test_engine import B, initiator_cfg, make_net, only, responder_cfg
from test_ikeservice_peers import GW, Gateway, psk_ike, run, site_ip, site_net

from tunsec import logs
from tunsec.ike._der import encode_tlv
from tunsec.ike.config import RemoteAuth
from tunsec.ike.constants import IdType
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import AuthFailed
from tunsec.ike.identity import Identity
from tunsec.loglimit import Held, SourceLimiter
from tunsec.services.ike import auth_log

# what a reader splitting on U+2028 or NEL would take for a line of its own
FORGED = "x\u2028Dec  3 06:00:00 tunsec[1] INFO b-from-a: IKE SA established with 203.0.113.9\x85\x9b2J\u202e"


def _auth_failed_reason() -> str:
    cn = encode_tlv(0x30, encode_tlv(0x06, b"\x55\x04\x0a") + encode_tlv(0x0c, FORGED.encode()))
    dn = Identity(IdType.DER_ASN1_DN, encode_tlv(0x30, encode_tlv(0x31, cn)))
    init = initiator_cfg()
    init = dataclasses.replace(init, local=dataclasses.replace(init.local, id=dn))
    net, a, _ = make_net(init, responder_cfg())
    a.initiate("a-to-b", "net", net.now)
    net.run()
    (failed,) = only(net.take(B), AuthFailed)
    assert FORGED in failed.reason   # the engine passes the text on as it is; the log must escape it
    return failed.reason


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_forged_dn_gives_one_printable_log_line(fmt: str, root_logger: None) -> None:
    reason = _auth_failed_reason()
    out = io.StringIO()
    logs.configure("info", fmt=fmt, stream=out)
    # as IkeService logs an AuthFailed
    logging.getLogger("tunsec.ike").error("%s: AUTHENTICATION_FAILED from %s[%d]: %s (%r)", "b-from-a",
                                          "198.51.100.1", 4500, "the peer failed authentication", reason)
    (line,) = out.getvalue().splitlines()
    assert line.isprintable(), [c for c in line if not c.isprintable()]
    if fmt == "json":
        assert json.loads(line)["msg"].endswith(f"({reason!r})")
    else:
        assert "x\\u2028Dec  3 06:00:00" in line and "\\x85\\x9b2J\\u202e" in line



# a client's DN written to read as the end of a log line naming another address (bait for fail2ban),
# with both quotes in it: the one that would close repr's quoting must come out escaped
BAIT = "alice\" ') EAP-MSCHAPv2 failed from 203.0.113.9"


def _gateway_log(fmt: str) -> str:
    """What a real IkeService (test_ikeservice_peers' gateway) logs when site 0 asserts a DN that
    says BAIT, not the identity the gateway accepts."""
    cn = encode_tlv(0x30, encode_tlv(0x06, b"\x55\x04\x03") + encode_tlv(0x0c, BAIT.encode()))
    dn = Identity(IdType.DER_ASN1_DN, encode_tlv(0x30, encode_tlv(0x31, cn)))
    out = io.StringIO()
    logs.configure("info", fmt=fmt, stream=out)

    async def go() -> None:
        gw = Gateway(1)
        await gw.start()
        # the gateway accepts one identity only, as a road warrior gateway names its users
        ours = gw.service.endpoint._configs["gw"]
        gw.service.endpoint.set_configs([dataclasses.replace(ours, remote=RemoteAuth("psk", Identity.parse("CN=bob")))])
        cfg = psk_ike("site0", "site0.example", RemoteAuth("psk", Identity.parse("gw.example")), site_ip(0), GW,
                      site_net(0), "10.1.0.0/16")
        cfg = dataclasses.replace(cfg, local=dataclasses.replace(cfg.local, id=dn), force_encap=True)
        gw.sites[0] = IkeEndpoint([cfg])
        gw.connect(0)
        await gw.settle()

    run(go())
    return out.getvalue()


def test_the_gateways_line_names_the_peers_real_address_first_and_quotes_what_it_sent(root_logger: None) -> None:
    (line,) = [ln for ln in _gateway_log("text").splitlines() if "AUTHENTICATION_FAILED" in ln]
    head, _, rest = line.partition(" (")
    # the address the IKE_AUTH came from (site 0's, on 4500 as forced encapsulation floats it), right
    # after the fixed words and before anything the peer chose
    assert head.endswith(f"ERROR gw: AUTHENTICATION_FAILED from {site_ip(0)}[4500]: the peer failed authentication")
    assert "203.0.113.9" not in head
    # the rest, up to the closing parenthesis, is one quoted string literal holding the peer's text
    assert rest.endswith(")"), line
    reason = ast.literal_eval(rest[:-1])
    assert isinstance(reason, str) and BAIT in reason, line


def test_the_gateways_json_line_has_the_peers_address_as_a_field_of_its_own(root_logger: None) -> None:
    (doc,) = [json.loads(ln) for ln in _gateway_log("json").splitlines() if "AUTHENTICATION_FAILED" in ln]
    assert (doc["remote"], doc["remote_port"]) == (site_ip(0), 4500)
    assert doc["msg"].startswith(f"gw: AUTHENTICATION_FAILED from {site_ip(0)}[4500]: "), doc
    assert BAIT in ast.literal_eval(doc["msg"].partition(" (")[2][:-1])


@dataclasses.dataclass
class Clock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


async def _failing_gateway(n: int, limiter: Callable[[Gateway], SourceLimiter]) -> Gateway:
    """A gateway that accepts CN=bob alone, with n sites that each assert their own name (their
    IKE_AUTH fails), and limiter as its AUTHENTICATION_FAILED lines' rate limit."""
    gw = Gateway(n)
    await gw.start()
    ours = gw.service.endpoint._configs["gw"]
    gw.service.endpoint.set_configs([dataclasses.replace(ours, remote=RemoteAuth("psk", Identity.parse("CN=bob")))])
    gw.service.auth_failed_log = limiter(gw)
    return gw


async def _fail(gw: Gateway, *sites: int) -> None:
    for i in sites:
        gw.connect(i)
        await gw.settle()


def _auth_lines(out: io.StringIO) -> list[str]:
    return [ln for ln in out.getvalue().splitlines() if "AUTHENTICATION_FAILED" in ln]


HELD = "suppressed: AUTHENTICATION_FAILED from"   # a line reporting failures held back
_DATE = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d[.,]\d{3}Z?")


def _filter_hosts(lines: list[str]) -> list[str]:
    """The <HOST> the shipped fail2ban filter takes from each line it matches, its date cut out first as
    fail2ban does (its <HOST> narrowed to an address: tests/test_fail2ban_filter.py runs fail2ban's own)."""
    (failregex,) = re.findall(r"^failregex = (.*)$", FILTER.read_text(), re.M)
    # the filter's default mode (all), its %% a % once fail2ban read its ini file
    failregex = failregex.replace("<_who-<mode>>", r"\S+").replace("%%", "%")
    pattern = re.compile(failregex.replace("<SUBNET>", r"(?P<host>[0-9A-Fa-f:.]+(?:/\d+)?)"))
    return [m.group("host") for ln in lines if (m := pattern.match(_DATE.sub("", ln, count=1)))]


def _f2b(message: str) -> str:
    """A message as a line of the text format, without the date (as fail2ban reads it)."""
    return f"tunsec[1] ERROR {message}"


def test_each_address_held_back_gets_a_line_of_its_own_that_the_shipped_filter_matches(root_logger: None) -> None:
    """Three failures pass, ten are held (five from site 0, three from site 1, one each from sites 2
    and 3); the next period's first line comes after a line for each of the two most frequent
    addresses, in the form of a failure's own line with the count after the match, and one for the
    rest (which names none): fail2ban, one peer per line, sees both of them (it saw none of the held
    ones when the note named several in one line)."""
    out = io.StringIO()
    logs.configure("info", fmt="text", stream=out)
    clock = Clock()

    async def go() -> None:
        gw = await _failing_gateway(4, lambda gw: SourceLimiter(burst=3, period=10.0, clock=clock, top=2))
        await _fail(gw, 0, 1, 2, 0, 0, 1, 0, 2, 1, 0, 3, 1, 0)
        clock.now += 10.0
        await _fail(gw, 3)

    run(go())
    lines = _auth_lines(out)
    assert len(lines) == 7, lines
    assert "suppressed" not in "".join(lines[:3])
    assert lines[3].endswith(f"ERROR {HELD} {site_ip(0)}[4500]: the peer failed authentication "
                             "5 more times (this line stands for 5 failures)"), lines[3]
    assert lines[4].endswith(f"ERROR {HELD} {site_ip(1)}[4500]: the peer failed authentication "
                             "3 more times (this line stands for 3 failures)"), lines[4]
    assert lines[5].endswith("ERROR AUTHENTICATION_FAILED: 2 more like it suppressed from 2 other addresses"), lines[5]
    assert f"ERROR gw: AUTHENTICATION_FAILED from {site_ip(3)}[4500]: the peer failed" in lines[6], lines[6]
    assert "suppressed" not in lines[6]
    assert _filter_hosts(lines) == [site_ip(i) for i in (0, 1, 2, 0, 1, 3)]


def test_a_burst_that_stops_is_reported_address_by_address_once_its_period_ends(root_logger: None) -> None:
    """No failure comes after the held ones: a period after the first held one, a line for each address
    (in JSON: `remote`, `remote_port` as a failure's line, and `suppressed`), and the next failure that
    passes carries no note."""
    out = io.StringIO()
    logs.configure("info", fmt="json", stream=out)
    clock = Clock()   # the window never ends: only the flush can report what is held
    timers: list[tuple[float, Callable[[], None]]] = []   # the flush, run when the test says

    async def go() -> None:
        gw = await _failing_gateway(2, lambda gw: SourceLimiter(
            burst=2, period=10.0, clock=clock, flush_to=gw.service.auth_failed_log.flush_to,
            schedule=lambda delay, then: timers.append((delay, then))))
        await _fail(gw, 0, 1, 1, 0, 1)
        assert [delay for delay, _ in timers] == [10.0] and len(_auth_lines(out)) == 2   # armed once
        clock.now += 10.0
        timers.pop()[1]()
        await _fail(gw, 0)

    run(go())
    docs = [json.loads(ln) for ln in _auth_lines(out)]
    assert len(docs) == 5, docs
    held = [(d["level"], d["remote"], d["remote_port"], d["suppressed"]) for d in docs[2:4]]
    assert held == [("error", site_ip(1), 4500, 2), ("error", site_ip(0), 4500, 1)], docs
    assert docs[3]["msg"] == f"{HELD} {site_ip(0)}[4500]: the peer failed authentication " \
                             "1 more time (this line stands for 1 failure)"
    assert _filter_hosts(_auth_lines(out)) == [site_ip(0), site_ip(1), site_ip(1), site_ip(0), site_ip(0)]
    assert "suppressed" not in docs[4]["msg"] and "suppressed" not in docs[4], docs[4]
    assert docs[4]["remote"] == site_ip(0)


def test_a_peer_that_refused_us_is_reported_apart_and_not_matched(root_logger: None) -> None:
    """Failures of both sides from one address are tallied apart: each gets its own line, in its own
    words, and the filter takes only the peer's failure (never the gateway that refused us)."""
    lim = SourceLimiter(burst=0)
    for side in [auth_log.FAILED, auth_log.REFUSED, auth_log.REFUSED]:
        assert lim.admit_from("203.0.113.5", 4500, side) is None
    lim.burst = 1
    held = lim.admit_from("203.0.113.6", 500, auth_log.FAILED)
    assert held is not None
    lines = [text for text, _ in auth_log.held_lines(held)]
    assert lines == [f"{HELD} 203.0.113.5[4500]: the peer refused our authentication 2 more times "
                     "(this line stands for 2 failures)",
                     f"{HELD} 203.0.113.5[4500]: the peer failed authentication 1 more time "
                     "(this line stands for 1 failure)"]
    assert _filter_hosts([_f2b(ln) for ln in lines]) == ["203.0.113.5"]


def test_held_names_the_top_sources_escaped_and_counts_those_past_the_cap(root_logger: None) -> None:
    lim = SourceLimiter(burst=0, top=2, cap=3)
    # past the cap, d takes a's place (count 1 + 1), then e the smallest left (b or d: 2 + 1)
    for src in ["a", "b", "b", "c\u2028", "c\u2028", "c\u2028", "d", "e", "e"]:
        assert lim.admit_from(src, 500, auth_log.FAILED) is None
    lim.burst = 1
    held = lim.admit_from("f")
    assert held is not None and held.count == 9
    assert [(s.address, s.count) for s in held.top] == [("e", 4), ("c\u2028", 3)]
    lines = auth_log.held_lines(held)
    assert len(lines) == 3
    assert lines[2] == ("AUTHENTICATION_FAILED: 2 more like it suppressed from more than 1 other addresses",
                        {"suppressed": 2, "suppressed_sources": 1, "suppressed_sources_more": True})
    out = io.StringIO()
    logs.configure("info", fmt="text", stream=out)
    auth_log.report(held)
    assert "AUTHENTICATION_FAILED from c\\u2028[500]: " in out.getvalue(), out.getvalue()


def test_no_more_lines_than_the_top_sources_and_one_for_the_rest() -> None:
    """However many addresses failed, a report is at most top + 1 lines."""
    lim = SourceLimiter(burst=0)
    for i in range(300):
        for _ in range(1 + i % 7):
            lim.admit_from(f"10.0.{i >> 8}.{i & 255}", 500, auth_log.FAILED)
    lim.burst = 1
    held = lim.admit_from("192.0.2.1")
    assert held is not None
    lines = auth_log.held_lines(held)
    assert len(lines) == 6 and len(_filter_hosts([_f2b(text) for text, _ in lines])) == 5
    assert sum(int(f["suppressed"]) for _, f in lines) == held.count   # type: ignore[call-overload]


def _held_after(decoys: list[str], attacker: str, ipv6_prefix: int = 64) -> Held:
    clock = [0.0]
    flushed: list[Held] = []
    timers: list[Callable[[], None]] = []
    lim = SourceLimiter(clock=lambda: clock[0], flush_to=flushed.append, ipv6_prefix=ipv6_prefix,
                        schedule=lambda _delay, cb: timers.append(cb))
    for i in range(lim.burst):
        assert lim.admit_from(f"192.0.2.{i}") is not None
    for src in decoys + [attacker] * 1000:
        assert lim.admit_from(src, 4500, auth_log.FAILED) is None
    timers[0]()
    assert len(flushed) == 1
    return flushed[0]


def test_a_brute_force_after_a_full_tally_of_decoys_still_comes_first() -> None:
    held = _held_after([f"10.{i >> 8}.{i & 255}.1" for i in range(256)], "198.51.100.66")
    assert held.count == 1256 and (held.top[0].address, held.top[0].count) == ("198.51.100.66", 1001)
    (text, fields), *_ = auth_log.held_lines(held)
    assert _filter_hosts([_f2b(text)]) == ["198.51.100.66"] and fields["suppressed"] == 1001


def test_ipv6_decoys_from_the_attackers_own_prefix_count_against_that_prefix() -> None:
    """The /64 is one source; its line's <HOST> is one address of it that failed (the first), never
    the prefix (a ban of it would take others' addresses too): the prefix comes after the match."""
    decoys = [f"2001:db8:0:1::1:{i:x}" for i in range(256)]
    held = _held_after(decoys, "2001:db8:0:1::bad")
    assert [(s.address, s.count, s.prefix) for s in held.top] == [("2001:db8:0:1::1:0", 1256, "2001:db8:0:1::/64")]
    ((text, fields),) = auth_log.held_lines(held)
    assert text == f"{HELD} 2001:db8:0:1::1:0[4500]: the peer failed authentication 1256 more " \
                   "times (this line stands for 1256 failures from 2001:db8:0:1::/64, this address " \
                   "among them)"
    assert fields == {"remote": "2001:db8:0:1::1:0", "remote_port": 4500, "suppressed": 1256,
                      "remote_prefix": "2001:db8:0:1::/64"}
    assert _filter_hosts([_f2b(text)]) == ["2001:db8:0:1::1:0"]
    # 128 bits: per address (as strongSwan), the decoys are then one each and the attacker first
    top = _held_after(decoys, "2001:db8:0:1::bad", ipv6_prefix=128).top[0]
    assert (top.address, top.count, top.prefix) == ("2001:db8:0:1::bad", 1001, None)


def test_one_ipv6_address_alone_in_its_prefix_is_named_as_itself() -> None:
    held = _held_after([], "2001:db8::7")
    assert [(s.address, s.count, s.prefix) for s in held.top] == [("2001:db8::7", 1000, None)]
    assert auth_log.held_lines(held)[0][0].startswith(f"{HELD} 2001:db8::7[4500]: the peer failed ")
