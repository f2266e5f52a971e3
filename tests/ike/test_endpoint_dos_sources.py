"""Half-open SAs and COOKIEs per source address at a responder, on a fake clock: one busy address
(or IPv6 /64) is held to block_threshold and cookie_threshold_ip while others are answered, the
per-address table stays bounded, and the cookie calm-down is per address group."""

from __future__ import annotations

import pytest
from endpoint_dos_data import (
    TIMEOUT,
    A,
    B,
    cfg,
    cookie_for,
    cookie_of,
    init_request,
    with_cookie,
    with_spi,
)

from tunsec.ike.dos_source import source_key
from tunsec.ike.endpoint import COOKIE_CALMDOWN_DELAY, DosLimits, IkeEndpoint, calmdown_bucket
from tunsec.ike.events import ChildSaUp
from tunsec.ike.message import decode_message
from tunsec.ike.testing import Network

# ---------------------------------------------------------------------- per source address


def _answer(b: IkeEndpoint, now: float) -> tuple[str, bytes]:
    """What the endpoint answered to the one request just given: "sa" (an IKE_SA_INIT response
    with our SPI), "cookie" (and the cookie), or "nothing"."""
    replies = b.datagrams_to_send(now)
    if not replies:
        return "nothing", b""
    (reply,) = replies
    if decode_message(reply.data).spi_r != bytes(8):
        return "sa", b""
    return "cookie", cookie_of(reply.data)


def _other_buckets(ip: str, n: int) -> list[str]:
    """n addresses whose COOKIE calm-down time is not kept with ip's (str hashes differ per run)."""
    return [o for o in (f"198.51.100.{i}" for i in range(1, 255)) if calmdown_bucket(o) != calmdown_bucket(ip)][:n]


def _persistent(b: IkeEndpoint, request: bytes, ip: str, n: int, now: float) -> list[str]:
    """n requests from ``ip`` (each from its own port, under its own SPIi) by a host that returns
    every COOKIE it is sent, as a real client would: what each finally got."""
    out = []
    for i in range(n):
        data, src = with_spi(request, i), (ip, 1000 + i)
        b.receive(data, src, now)
        got, cookie = _answer(b, now)
        if got == "cookie":
            b.receive(with_cookie(data, cookie), src, now)
            got = "cookie, then " + _answer(b, now)[0]
        out.append(got)
    return out


def test_one_address_above_block_threshold_is_dropped_while_another_is_answered() -> None:
    b = IkeEndpoint([cfg(False)])   # strongSwan's defaults: cookie_threshold_ip 3, block_threshold 5
    request = init_request()
    got = _persistent(b, request, "203.0.113.66", 8, 1.0)
    # three answered at once, two more after a COOKIE round trip, then nothing (even with a COOKIE)
    assert got == ["sa"] * 3 + ["cookie, then sa"] * 2 + ["cookie, then nothing"] * 3
    assert b.half_open == b.half_open_from("203.0.113.66") == 5
    assert b.stats.block_threshold == 3 and b.stats.half_open_limit == 0
    # everybody else is answered at once: one busy address has no effect on them (but on those
    # whose calm-down time it shares, as in strongSwan: see test_cookies_calm_down_...)
    for i, ip in enumerate(_other_buckets("203.0.113.66", 20)):
        b.receive(with_spi(request, 100 + i), (ip, 500), 1.0)
        assert _answer(b, 1.0)[0] == "sa"
    assert b.half_open == 25 and b.half_open_addresses == 21


def test_cookie_threshold_ip_demands_a_cookie_from_the_busy_address_only() -> None:
    b = IkeEndpoint([cfg(False)], limits=DosLimits(cookie_threshold_ip=2, block_threshold=100))
    request = init_request()
    busy = "203.0.113.66"
    quiet = _other_buckets(busy, 1)[0]
    for i in range(2):
        b.receive(with_spi(request, i), (busy, 1000 + i), 1.0)
        assert _answer(b, 1.0)[0] == "sa"
    for i in range(2, 10):   # spoofed ports change nothing: the address is what counts
        b.receive(with_spi(request, i), (busy, 1000 + i), 1.0)
        assert _answer(b, 1.0)[0] == "cookie"
    b.receive(with_spi(request, 50), (quiet, 500), 1.0)
    assert _answer(b, 1.0)[0] == "sa"
    b.receive(with_spi(request, 51), (quiet, 501), 1.0)
    assert _answer(b, 1.0)[0] == "sa"
    assert b.stats.cookies_sent == 8 and b.half_open_from(busy) == 2 and b.half_open_from(quiet) == 2
    # the quiet address reaches the threshold in turn; the busy one's half-open SAs time out and it
    # is answered at once again
    b.receive(with_spi(request, 52), (quiet, 502), 1.0)
    assert _answer(b, 1.0)[0] == "cookie"
    b.handle_timer(1.0 + TIMEOUT)
    assert b.half_open == 0 and b.half_open_addresses == 0
    b.receive(with_spi(request, 60), (busy, 2000), 40.0)
    assert _answer(b, 40.0)[0] == "sa"


def test_a_cookie_returning_client_behind_a_busy_address_gets_through() -> None:
    """A real initiator at A while A (its NAT, or someone spoofing it) holds cookie_threshold_ip
    half-open SAs at B: B demands a COOKIE, the initiator returns it, and the tunnel comes up.
    A spoofer cannot push A to block_threshold: it never sees the COOKIEs sent to A."""
    net = Network()
    a = net.add(A, IkeEndpoint([cfg(True)]))
    b = net.add(B, IkeEndpoint([cfg(False)]))
    request = init_request()
    for i in range(10):
        b.receive(with_spi(request, i), (A, 600 + i), net.now)   # other hosts behind A's NAT, or a spoofer
    b.datagrams_to_send(net.now)
    assert b.half_open_from(A) == 3 and b.stats.cookies_sent == 7
    a.initiate("conn", "net", net.now)
    net.run(until=net.now + 5)
    assert any(isinstance(e, ChildSaUp) for e in net.take(B))
    assert b.stats.cookies_sent == 8 and b.stats.block_threshold == 0
    # the authenticated SA left A's count; the three others leave it when they time out
    assert b.half_open_from(A) == 3 and b.half_open == 3 and b.sa_count == 4
    net.run(until=net.now + TIMEOUT + 1)
    assert b.half_open == 0 and b.half_open_addresses == 0 and b.sa_count == 1


def test_per_address_counts_stay_bounded_with_spoofed_sources() -> None:
    """Every request from another spoofed source (an IPv6 /64 each: the unit counted): the table holds
    only sources with half-open SAs (never more than the half-open SAs themselves) and is empty again
    when they time out."""
    b = IkeEndpoint([cfg(False)], limits=DosLimits(cookie_threshold=50, half_open_limit=80))
    request = init_request()
    for i in range(5000):
        b.receive(with_spi(request, i), (f"2001:db8:{i:x}::1", 500), 1.0 + i / 10_000)   # each its own /64
        b.datagrams_to_send(1.0)
        assert b.half_open_addresses == b.half_open <= 50
    assert b.stats.cookies_sent == 4950
    # valid COOKIEs from other spoofed addresses: up to half_open_limit, then dropped
    for i in range(5000, 5100):
        src = (f"2001:db8:1:{i:x}::1", 500)
        data = with_spi(request, i)
        b.receive(with_cookie(data, cookie_for(b, data, src, 2.0)), src, 2.0)
    b.datagrams_to_send(2.0)
    assert b.half_open == b.half_open_addresses == 80 and b.stats.half_open_limit == 70
    b.handle_timer(2.0 + TIMEOUT)
    assert b.half_open == 0 and b.half_open_addresses == 0 and b.sa_count == 0


def test_status_shows_the_per_address_half_open_table_as_it_is_now() -> None:
    """tunsec status (and its metrics): how many addresses hold half-open SAs and the most one
    holds, read from the endpoint at status time: they rise with requests and fall as the SAs
    authenticate or time out."""
    from types import SimpleNamespace

    from tunsec import metrics
    from tunsec.eventcounts import EventCounts
    from tunsec.services.ike import status as ike_status

    b = IkeEndpoint([cfg(False)], limits=DosLimits(cookie_threshold_ip=10, block_threshold=20))
    request = init_request()
    held = SimpleNamespace(held_waiting=0, held_total=0, held_dropped=0, held_dropped_half_open=0, spi_waits=0,
                           waiting_max_half_open=0, returned=0, install_waits=0,
                           install_holds=0, install_hold_seconds=0.0, install_hold_max=0.0, esp_on_ike_port=0,
                           natt_unanswered=0, natt_other_port=0, gate=None, late_returned=0)

    def shown() -> tuple[int, int, int, float, float]:
        doc = ike_status.status([], [], b, held, held, held, {}, EventCounts())  # type: ignore[arg-type]
        gauges = {m.name: m.samples[0].value for m in metrics.state_families(doc, False)
                  if m.name.startswith("tunsec_ike_half_open")}
        return (doc["ike_half_open"], doc["ike_half_open_addresses"], doc["ike_half_open_max_per_address"],
                gauges["tunsec_ike_half_open_addresses"], gauges["tunsec_ike_half_open_max_per_address"])

    assert shown() == (0, 0, 0, 0, 0)
    for i in range(4):
        b.receive(with_spi(request, i), ("203.0.113.66", 1000 + i), 1.0)
        b.receive(with_spi(request, 100 + i), (f"198.51.100.{i + 1}", 500), 1.0)
    b.receive(with_spi(request, 200), ("198.51.100.1", 501), 5.0)
    b.datagrams_to_send(5.0)
    assert shown() == (9, 5, 4, 5, 4)
    b.handle_timer(1.0 + TIMEOUT)      # all but the one made at 5.0 time out
    assert shown() == (1, 1, 1, 1, 1)
    b.handle_timer(5.0 + TIMEOUT)
    assert shown() == (0, 0, 0, 0, 0)


def test_cookies_calm_down_for_ten_seconds_after_the_threshold_was_last_reached() -> None:
    """strongSwan's calm-down (receiver.c cookie_required): once cookie_threshold is reached,
    COOKIEs stay demanded until it has not been for COOKIE_CALMDOWN_DELAY seconds, however far
    the half-open count falls meanwhile (no flapping between answers with and without one to a
    client's retransmissions); requests during the calm-down do not extend it."""
    assert COOKIE_CALMDOWN_DELAY == 10.0
    b = IkeEndpoint([cfg(False)], limits=DosLimits(cookie_threshold=3, cookie_threshold_ip=100, block_threshold=200))
    request = init_request()
    n = iter(range(1000))

    def ask(now: float, ip: str = "198.51.100.7") -> str:
        i = next(n)
        b.receive(with_spi(request, i), (ip, 1000 + i), now)
        return _answer(b, now)[0]

    assert [ask(1.0, f"198.51.100.{i}") for i in range(1, 4)] == ["sa"] * 3
    assert ask(30.5) == "cookie"           # 3 half-open: the threshold is reached (last at 30.5)
    b.handle_timer(1.0 + TIMEOUT)          # the three time out
    assert b.half_open == 0
    assert ask(31.0) == "cookie" and ask(40.4) == "cookie"   # below it, but within the calm-down
    # a COOKIE returned during the calm-down is taken as ever
    src, data = ("198.51.100.8", 600), with_spi(request, 900)
    b.receive(data, src, 40.4)
    b.receive(with_cookie(data, _answer(b, 40.4)[1]), src, 40.4)
    assert _answer(b, 40.4)[0] == "sa"
    assert ask(40.5) == "sa"               # 10 s after 30.5, not after the requests since
    assert b.stats.cookies_sent == 4


def test_cookies_calm_down_per_address_in_strongswans_groups_of_addresses() -> None:
    """The same for cookie_threshold_ip (strongSwan keeps the time for 32 groups of addresses,
    by hash): the busy address, and those of its group, are asked for COOKIEs for
    COOKIE_CALMDOWN_DELAY seconds after it last reached the threshold; other addresses are not."""
    b = IkeEndpoint([cfg(False)], limits=DosLimits(cookie_threshold=1000, cookie_threshold_ip=2, block_threshold=100))
    request = init_request()
    busy = "203.0.113.66"
    other = _other_buckets(busy, 1)[0]
    same = next(o for o in (f"198.51.100.{i}" for i in range(1, 255)) if calmdown_bucket(o) == calmdown_bucket(busy))
    n = iter(range(1000))

    def ask(now: float, ip: str) -> str:
        i = next(n)
        b.receive(with_spi(request, i), (ip, 1000 + i), now)
        return _answer(b, now)[0]

    assert [ask(1.0, busy), ask(1.0, busy), ask(30.5, busy)] == ["sa", "sa", "cookie"]
    b.handle_timer(1.0 + TIMEOUT)
    assert b.half_open_from(busy) == 0
    assert [ask(35.0, busy), ask(35.0, same), ask(35.0, other)] == ["cookie", "cookie", "sa"]
    assert [ask(40.5, busy), ask(40.5, same)] == ["sa", "sa"]


# ---------------------------------------------------------------------- IPv6 sources: per prefix


def _in_64(prefix: str, n: int) -> list[str]:
    """n addresses of the /64 ``prefix`` (its first four groups), all different, as a host that has
    the /64 can send from (2^64 of them): fresh interface IDs, not a counter in the last group."""
    return [f"{prefix}:{(i * 40503) & 0xFFFF:x}:{i:x}:{(i * 7919) & 0xFFFF:x}:{i + 1:x}" for i in range(n)]


def _other_prefix_buckets(key: str, candidates: list[str]) -> list[str]:
    """The candidates whose COOKIE calm-down group is not ``key``'s (str hashes differ per run)."""
    return [c for c in candidates if calmdown_bucket(source_key(c)) != calmdown_bucket(key)]


def test_an_ipv6_host_rotating_addresses_in_its_64_is_held_to_block_threshold() -> None:
    """Each request from another address of one /64, each COOKIE returned: counted as one source, so
    asked for COOKIEs above cookie_threshold_ip and dropped at block_threshold, as one IPv4 address
    is (per address, 2^64 addresses would each start from zero and fill half_open_limit)."""
    b = IkeEndpoint([cfg(False)])   # cookie_threshold_ip 3, block_threshold 5, ipv6_source_prefix 64
    request = init_request()
    got = []
    for i, ip in enumerate(_in_64("2001:db8:1:2", 8)):
        data, src = with_spi(request, i), (ip, 500)
        b.receive(data, src, 1.0)
        answer, cookie = _answer(b, 1.0)
        if answer == "cookie":   # returned from the same address, as the cookie is bound to it
            b.receive(with_cookie(data, cookie), src, 1.0)
            answer = "cookie, then " + _answer(b, 1.0)[0]
        got.append(answer)
    assert got == ["sa"] * 3 + ["cookie, then sa"] * 2 + ["cookie, then nothing"] * 3
    assert b.half_open == b.half_open_from("2001:db8:1:2::1") == 5 and b.half_open_addresses == 1
    assert b.stats.block_threshold == 3 and b.half_open_busiest() == "2001:db8:1:2::/64"
    # many more from other addresses of the /64 (more than half_open_limit): not one more half-open SA
    for i, ip in enumerate(_in_64("2001:db8:1:2", 2000)[8:]):
        b.receive(with_spi(request, 100 + i), (ip, 500), 2.0)
    b.datagrams_to_send(2.0)
    assert b.half_open == 5 and b.half_open_addresses == 1


def test_two_ipv6_64s_are_counted_apart() -> None:
    """A /64 at block_threshold leaves the next /64 (and IPv4) alone: each has its own count."""
    b = IkeEndpoint([cfg(False)])
    request = init_request()
    busy = "2001:db8:1:2::/64"
    for i, ip in enumerate(_in_64("2001:db8:1:2", 10)):
        b.receive(with_spi(request, i), (ip, 500), 1.0)
    b.datagrams_to_send(1.0)
    assert b.half_open_from("2001:db8:1:2::99") == 3   # the rest were asked for COOKIEs
    neighbours = _other_prefix_buckets(busy, [f"2001:db8:1:{j:x}::5" for j in range(3, 100)])
    quiet = neighbours[0]
    quiet_64 = ":".join(quiet.split(":")[:4])
    answers = []
    for i, ip in enumerate(_in_64(quiet_64, 3)):
        b.receive(with_spi(request, 50 + i), (ip, 500), 1.0)
        answers.append(_answer(b, 1.0)[0])
    v4 = next(ip for ip in _other_prefix_buckets(busy, [f"192.0.2.{i}" for i in range(1, 255)])
              if calmdown_bucket(ip) != calmdown_bucket(source_key(quiet)))
    b.receive(with_spi(request, 60), (v4, 500), 1.0)
    answers.append(_answer(b, 1.0)[0])
    assert answers == ["sa"] * 4
    assert b.half_open_from(quiet) == 3 and b.half_open_from(v4) == 1 and b.half_open_addresses == 3
    assert b.half_open_busiest() in (busy, f"{quiet_64}::/64")


def test_ipv4_mapped_ipv6_sources_count_as_their_ipv4_address() -> None:
    """::ffff:a.b.c.d is the IPv4 host a.b.c.d: counted with it (not as a 2^64th of ::ffff:0:0/96,
    and not all of IPv4 as one ::/64, which one host would then lock out)."""
    b = IkeEndpoint([cfg(False)])
    request = init_request()
    host = "192.0.2.7"
    for i, ip in enumerate([host, f"::ffff:{host}", host, f"::ffff:{host}", f"::ffff:{host}"]):
        b.receive(with_spi(request, i), (ip, 1000 + i), 1.0)
    b.datagrams_to_send(1.0)
    assert b.half_open_from(host) == b.half_open_from(f"::ffff:{host}") == 3 and b.half_open_busiest() == host
    assert b.stats.cookies_sent == 2
    # other IPv4 hosts, mapped: each its own count, answered at once
    others = _other_prefix_buckets(host, [f"::ffff:198.51.100.{i}" for i in range(1, 255)])[:10]
    for i, ip in enumerate(others):
        b.receive(with_spi(request, 100 + i), (ip, 500), 1.0)
        assert _answer(b, 1.0)[0] == "sa", ip
    assert b.half_open_addresses == 11 and b.half_open_most_from_one() == 3


@pytest.mark.parametrize(("ip", "prefix", "key"), [
    ("192.0.2.1", 64, "192.0.2.1"),
    ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 64, "2001:db8:1:2::/64"),
    ("2001:db8:1:2::1", 56, "2001:db8:1::/56"),
    ("2001:db8:1:2::1", 128, "2001:db8:1:2::1/128"),
    ("::ffff:192.0.2.1", 64, "192.0.2.1"),
    ("::ffff:192.0.2.1", 128, "192.0.2.1"),
    ("fe80::1:2%eth0", 64, "fe80::/64%eth0"),   # link-local: one /64 per link, not one for all links
])
def test_source_key(ip: str, prefix: int, key: str) -> None:
    assert source_key(ip, prefix) == key


def test_ipv6_source_prefix_128_counts_per_address_as_strongswan() -> None:
    b = IkeEndpoint([cfg(False)], limits=DosLimits(ipv6_source_prefix=128))
    request = init_request()
    for i, ip in enumerate(_in_64("2001:db8:1:2", 10)):
        b.receive(with_spi(request, i), (ip, 500), 1.0)
        assert _answer(b, 1.0)[0] == "sa"
    assert b.half_open == b.half_open_addresses == 10


def test_status_names_the_busiest_source_by_its_prefix() -> None:
    """tunsec status (--json and text) names the source holding the most half-open SAs: an IPv6
    one by its prefix, the unit its limits count (not one of the addresses it rotates through)."""
    from types import SimpleNamespace

    from tunsec.eventcounts import EventCounts
    from tunsec.services.ike import status as ike_status
    from tunsec.status import render

    b = IkeEndpoint([cfg(False)], limits=DosLimits(cookie_threshold_ip=10, block_threshold=20))
    request = init_request()
    held = SimpleNamespace(held_waiting=0, held_total=0, held_dropped=0, held_dropped_half_open=0, spi_waits=0,
                           waiting_max_half_open=0, returned=0, install_waits=0,
                           install_holds=0, install_hold_seconds=0.0, install_hold_max=0.0, esp_on_ike_port=0,
                           natt_unanswered=0, natt_other_port=0, gate=None, late_returned=0)
    for i, ip in enumerate([*_in_64("2001:db8:1:2", 4), "198.51.100.1", "::ffff:198.51.100.2"]):
        b.receive(with_spi(request, i), (ip, 1000 + i), 1.0)
    b.datagrams_to_send(1.0)
    doc = ike_status.status([], [], b, held, held, held, {}, EventCounts())  # type: ignore[arg-type]
    assert (doc["ike_half_open"], doc["ike_half_open_addresses"], doc["ike_half_open_max_per_address"],
            doc["ike_half_open_busiest"]) == (6, 3, 4, "2001:db8:1:2::/64")
    base = {"tun": {"name": "tunsec0", "mtu": 1400, "offloads": []}, "worker": {"pid": 1, "restarts": 0},
            "uptime_seconds": 1, "udp_offloads": [], "sas": [], "tunnels": [], "policies": [], "drops": {}}
    (line,) = [x for x in render({**base, **doc}).splitlines() if x.startswith("IKE: ")]
    assert line.startswith("IKE: 6 half-open from 3 addresses or IPv6 prefixes (at most 4 from one: "
                           "2001:db8:1:2::/64); unauthenticated: ")
    b.handle_timer(1.0 + TIMEOUT)
    doc = ike_status.status([], [], b, held, held, held, {}, EventCounts())  # type: ignore[arg-type]
    assert doc["ike_half_open_busiest"] == "" and doc["ike_half_open_max_per_address"] == 0
