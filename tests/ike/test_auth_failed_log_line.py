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
from collections.abc import Callable, Iterator

import pytest
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

# what a reader splitting on U+2028 or NEL would take for a line of its own
FORGED = "x\u2028Dec  3 06:00:00 tunsec[1] INFO b-from-a: IKE SA established with 203.0.113.9\x85\x9b2J\u202e"


@pytest.fixture
def root_logger() -> Iterator[None]:
    """logs.configure replaces the root logger's handlers and a few logging flags: put them back."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level, (logging._srcfile, logging.logThreads, logging.logMultiprocessing)
    yield
    for h in root.handlers[:]:
        root.removeHandler(h)
    for h in saved[0]:
        root.addHandler(h)
    root.setLevel(saved[1])
    logging._srcfile, logging.logThreads, logging.logMultiprocessing = saved[2]


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


def test_the_note_on_suppressed_failures_names_the_addresses_they_came_from(root_logger: None) -> None:
    """Three failures pass, ten are held (five from site 0, three from site 1, one each from sites 2 and
    3); the next period's first line names the two most frequent addresses with their counts and
    counts the rest: an operator chasing a brute force sees who, not only how many."""
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
    assert len(lines) == 4, lines
    assert [site_ip(0) in lines[0], site_ip(1) in lines[1], site_ip(2) in lines[2]] == [True] * 3
    assert "suppressed" not in "".join(lines[:3])
    assert f"ERROR gw: AUTHENTICATION_FAILED from {site_ip(3)}[4500]: the peer failed" in lines[3], lines[3]
    assert lines[3].endswith(f") (10 more like it suppressed: 5 from {site_ip(0)}, 3 from {site_ip(1)} and 2 from 2 "
                             "other addresses)"), lines[3]


def test_a_burst_that_stops_is_summed_up_with_its_addresses_once_its_period_ends(root_logger: None) -> None:
    """No failure comes after the held ones: one line a period after the first held one names them
    (in JSON: `suppressed`, `suppressed_from`), and the next failure that passes carries no note."""
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
    assert len(docs) == 4, docs
    summary = docs[2]
    assert summary["msg"] == f"AUTHENTICATION_FAILED: 3 more like it suppressed: 2 from {site_ip(1)} and 1 from " \
                             f"{site_ip(0)}", summary
    assert (summary["level"], summary["suppressed"], summary["suppressed_from"]) == \
        ("error", 3, {site_ip(1): 2, site_ip(0): 1})
    assert "suppressed" not in docs[3]["msg"] and "suppressed" not in docs[3], docs[3]
    assert docs[3]["remote"] == site_ip(0)


def test_held_names_the_top_sources_escaped_and_counts_those_past_the_cap() -> None:
    lim = SourceLimiter(burst=0, top=2, cap=3)
    # past the cap, d takes a's place (count 1 + 1), then e the smallest left (b or d: 2 + 1)
    for src in ["a", "b", "b", "c\u2028", "c\u2028", "c\u2028", "d", "e", "e"]:
        assert lim.admit_from(src) is None
    lim.burst = 1
    held = lim.admit_from("f")
    assert held is not None and held.count == 9
    assert held.suffix() == " (9 more like it suppressed: 4 from e, 3 from c\\u2028 and 2 from more than 1 other " \
                            "addresses)"
    assert held.fields() == {"suppressed": 9, "suppressed_from": {"e": 4, "c\u2028": 3}}


def _held_after(decoys: list[str], attacker: str, ipv6_prefix: int = 64) -> Held:
    clock = [0.0]
    flushed: list[Held] = []
    timers: list[Callable[[], None]] = []
    lim = SourceLimiter(clock=lambda: clock[0], flush_to=flushed.append, ipv6_prefix=ipv6_prefix,
                        schedule=lambda _delay, cb: timers.append(cb))
    for i in range(lim.burst):
        assert lim.admit_from(f"192.0.2.{i}") is not None
    for src in decoys + [attacker] * 1000:
        assert lim.admit_from(src) is None
    timers[0]()
    assert len(flushed) == 1
    return flushed[0]


def test_a_brute_force_after_a_full_tally_of_decoys_still_comes_first() -> None:
    held = _held_after([f"10.{i >> 8}.{i & 255}.1" for i in range(256)], "198.51.100.66")
    assert held.count == 1256 and held.top[0] == ("198.51.100.66", 1001)
    assert held.sources().startswith("1001 from 198.51.100.66, ")


def test_ipv6_decoys_from_the_attackers_own_prefix_count_against_that_prefix() -> None:
    decoys = [f"2001:db8:0:1::1:{i:x}" for i in range(256)]
    held = _held_after(decoys, "2001:db8:0:1::bad")
    assert held.top == (("2001:db8:0:1::/64 (e.g. 2001:db8:0:1::1:0)", 1256),)
    line = f"AUTHENTICATION_FAILED: {held.count} more like it suppressed: {held.sources()}"
    assert line == "AUTHENTICATION_FAILED: 1256 more like it suppressed: 1256 from 2001:db8:0:1::/64 " \
                   "(e.g. 2001:db8:0:1::1:0)"
    # 128 bits: per address (as strongSwan), the decoys are then one each and the attacker first
    assert _held_after(decoys, "2001:db8:0:1::bad", ipv6_prefix=128).top[0] == ("2001:db8:0:1::bad", 1001)


def test_one_ipv6_address_alone_in_its_prefix_is_named_as_itself() -> None:
    held = _held_after([], "2001:db8::7")
    assert held.top == (("2001:db8::7", 1000),)
