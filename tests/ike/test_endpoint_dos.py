"""Unauthenticated IKE datagrams at a responder (RFC 7296 §2.6), on a fake clock.

Nothing is kept for a datagram that is not a well-formed IKE_SA_INIT request;
half-open responder SAs are counted (in all and per source address), capped and
reaped; COOKIEs are demanded above a threshold (in all, or from one address),
bound to the source address, port, SPIi and Ni, with a secret that rotates; and
the work per datagram does not grow with the number of SAs.
"""

from __future__ import annotations

import dataclasses
import struct
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.constants import ExchangeType, HeaderFlag, NotifyType
from tunsec.ike.dos_source import source_key
from tunsec.ike.endpoint import COOKIE_CALMDOWN_DELAY, DosLimits, IkeEndpoint, calmdown_bucket
from tunsec.ike.events import ChildSaUp, IkeSaUp
from tunsec.ike.identity import Identity
from tunsec.ike.message import Message, NotifyPayload, decode_message
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.sa import IkeSa, State
from tunsec.ike.secret import Secret
from tunsec.ike.testing import Network, Sent

A, B = "192.0.2.1", "192.0.2.2"
PSK = Secret(b"a shared secret of some length")
TIMEOUT = 30.0


def cfg(initiator: bool, peer: str | None = None, **kw: Any) -> IkeConfig:
    local_ts, remote_ts = ("10.1.0.0/16", "10.2.0.0/16") if initiator else ("10.2.0.0/16", "10.1.0.0/16")
    ids = ("moon.example", "sun.example") if initiator else ("sun.example", "moon.example")
    base = IkeConfig(
        "conn",
        LocalAuth("psk", Identity.parse(ids[0])),
        RemoteAuth("psk", Identity.parse(ids[1])),
        parse_proposals("aes128gcm16-prfsha256-curve25519"),
        (child_config("net", local_ts, remote_ts, "aes128gcm16"),),
        psk=PSK,
        local_addr=A if initiator else B,
        remote_addr=B if initiator else peer,
        half_open_timeout=TIMEOUT,
    )
    return dataclasses.replace(base, **kw)


def init_request() -> bytes:
    """A genuine IKE_SA_INIT request, as an initiator sends it."""
    a = IkeEndpoint([cfg(True)])
    a.initiate("conn", "net", 0.0)
    (first,) = a.datagrams_to_send(0.0)
    return first.data


def with_spi(request: bytes, i: int) -> bytes:
    """The same request under another SPIi (IKE_SA_INIT is not integrity protected)."""
    return struct.pack("!Q", 0x1000 + i) + request[8:]


def with_cookie(request: bytes, cookie: bytes) -> bytes:
    msg = decode_message(request)
    return dataclasses.replace(msg, payloads=(NotifyPayload(NotifyType.COOKIE, cookie), *msg.payloads)).encode()


def cookie_of(reply: bytes) -> bytes:
    msg = decode_message(reply)
    assert msg.is_response and msg.spi_r == bytes(8)
    (payload,) = msg.payloads
    assert isinstance(payload, NotifyPayload) and payload.type == NotifyType.COOKIE
    return payload.data


def patched(request: bytes, *, offset: int, data: bytes) -> bytes:
    out = bytearray(request)
    out[offset : offset + len(data)] = data
    return bytes(out)


def header(exchange: int, flags: int, msg_id: int = 0, spi_i: bytes = b"\x01" * 8, spi_r: bytes = bytes(8),
           next_payload: int = 0, body: bytes = b"") -> bytes:
    return spi_i + spi_r + struct.pack("!BBBBII", next_payload, 0x20, exchange, flags, msg_id, 28 + len(body)) + body


def hostile(request: bytes) -> dict[str, bytes]:
    """Datagrams of many shapes, none of them a well-formed IKE_SA_INIT request."""
    init = int(HeaderFlag.INITIATOR)
    msg = decode_message(request)
    no_ke = dataclasses.replace(msg, payloads=tuple(p for p in msg.payloads if type(p).__name__ != "KePayload"))
    no_nonce = dataclasses.replace(msg, payloads=tuple(p for p in msg.payloads if type(p).__name__ != "NoncePayload"))
    garbage = request + b"\x00" * 4
    return {
        "empty": b"",
        "truncated header": request[:20],
        "truncated body": request[:-5],
        "28 bytes, SA announced, no body": header(ExchangeType.IKE_SA_INIT, init, next_payload=33),
        "28 bytes, no payload": header(ExchangeType.IKE_SA_INIT, init),
        "28 bytes, bogus payload type": header(ExchangeType.IKE_SA_INIT, init, next_payload=200),
        "non-zero message id": patched(request, offset=20, data=struct.pack("!I", 1)),
        "non-zero SPIr": patched(request, offset=8, data=b"\x02" * 8),
        "zero SPIi": patched(request, offset=0, data=bytes(8)),
        "response flag": patched(request, offset=19, data=bytes([init | HeaderFlag.RESPONSE])),
        "IKEv1 version": patched(request, offset=17, data=b"\x10"),
        "no KE": no_ke.encode(),
        "no Nonce": no_nonce.encode(),
        "trailing bytes (length field covers them)": patched(
            garbage, offset=24, data=struct.pack("!I", len(garbage))
        ),
        "IKE_AUTH to an unknown SPI": header(ExchangeType.IKE_AUTH, init, 1, spi_r=b"\x03" * 8, next_payload=46,
                                             body=b"\x00\x00\x00\x14" + b"\x00" * 16),
        "INFORMATIONAL response to an unknown SPI": header(ExchangeType.INFORMATIONAL, HeaderFlag.RESPONSE, 5,
                                                           spi_r=b"\x04" * 8),
        "CREATE_CHILD_SA to an unknown SPI": header(ExchangeType.CREATE_CHILD_SA, init, 2, spi_r=b"\x05" * 8),
        "IKE_SA_INIT response to nothing": header(ExchangeType.IKE_SA_INIT, HeaderFlag.RESPONSE, spi_r=b"\x06" * 8),
    }


def test_hostile_datagrams_from_the_configured_peer_leave_no_state() -> None:
    request = init_request()
    b = IkeEndpoint([cfg(False, peer=A)])
    for name, data in hostile(request).items():
        for port in (500, 4500, 31337):
            b.receive(data, (A, port), 1.0, (B, 500))
        assert b.sa_count == 0 and b.half_open == 0, name
        assert b.get_timer() is None, name
    assert b.datagrams_to_send(1.0) == []
    dropped = b.stats.malformed + b.stats.unknown_spi
    assert dropped == 3 * len(hostile(request))
    # the genuine request still works, once
    b.receive(request, (A, 500), 2.0, (B, 500))
    assert b.sa_count == 1 and b.half_open == 1


def test_requests_from_unconfigured_addresses_leave_no_state() -> None:
    b = IkeEndpoint([cfg(False, peer=A)])
    request = init_request()
    for i in range(50):
        b.receive(with_spi(request, i), (f"198.51.100.{i + 1}", 500), 1.0)
    assert b.sa_count == 0 and b.stats.no_connection == 50 and not b.datagrams_to_send(1.0)


def test_half_open_sas_are_counted_capped_and_reaped() -> None:
    b = IkeEndpoint([cfg(False)], limits=DosLimits(cookie_threshold=1000, half_open_limit=20))
    request = init_request()
    for i in range(50):
        b.receive(with_spi(request, i), (f"198.51.100.{i + 1}", 500), float(i) / 10)
    assert b.half_open == b.sa_count == 20
    assert b.stats.half_open_limit == 30
    assert len(b.datagrams_to_send(5.0)) == 20  # only the accepted ones were answered
    assert all(sa.state is State.CONNECTING for sa in b.sas)
    # nothing fires before the timeout ...
    b.handle_timer(TIMEOUT - 1)
    assert b.half_open == 20
    # ... and after it nothing is left, not even an index entry or a timer
    now = b.get_timer()
    while now is not None:
        b.handle_timer(now)
        now = b.get_timer()
    assert b.sa_count == 0 and b.half_open == 0 and b.stats.half_open_closed == 20
    assert not b._by_init and not b._deadline  # the indexes must not leak
    # room again for new requests
    b.receive(with_spi(request, 99), ("198.51.100.99", 500), 100.0)
    assert b.half_open == 1


def test_a_retransmitted_request_is_answered_from_the_same_sa() -> None:
    b = IkeEndpoint([cfg(False)])
    request = init_request()
    b.receive(request, (A, 500), 1.0)
    (first,) = b.datagrams_to_send(1.0)
    b.receive(request, (A, 500), 2.0)
    (again,) = b.datagrams_to_send(2.0)
    assert again.data == first.data and b.sa_count == 1


def _fill(b: IkeEndpoint, n: int, request: bytes, now: float = 1.0) -> None:
    for i in range(n):
        b.receive(with_spi(request, 10_000 + i), (f"198.51.100.{i % 250 + 1}", 1000 + i), now)
    b.datagrams_to_send(now)


def test_cookie_demanded_above_the_threshold_and_bound_to_address_port_spi_and_nonce() -> None:
    b = IkeEndpoint([cfg(False)], limits=DosLimits(cookie_threshold=3))
    request = init_request()
    _fill(b, 3, request)
    c = ("203.0.113.7", 500)
    b.receive(request, c, 2.0)
    (reply,) = b.datagrams_to_send(2.0)
    assert b.sa_count == 3 and b.stats.cookies_sent == 1
    cookie = cookie_of(reply.data)
    assert reply.addr == c and decode_message(reply.data).spi_i == request[:8]

    # the same cookie from another port, another address, under another SPIi or nonce: refused
    for data, src in [
        (with_cookie(request, cookie), (c[0], 501)),
        (with_cookie(request, cookie), ("203.0.113.8", 500)),
        (with_cookie(with_spi(request, 7), cookie), c),
        (with_cookie(request, cookie[:-1] + bytes([cookie[-1] ^ 1])), c),
        (with_cookie(request, b"\x00"), c),
    ]:
        b.receive(data, src, 2.0)
        assert b.sa_count == 3
    assert b.stats.cookie_refused == 5
    assert all(cookie_of(d.data) for d in b.datagrams_to_send(2.0))  # each got a fresh COOKIE, nothing else

    # the right one from the right place: a half-open SA
    b.receive(with_cookie(request, cookie), c, 3.0)
    assert b.sa_count == 4 and b.half_open == 4
    (answer,) = b.datagrams_to_send(3.0)
    assert decode_message(answer.data).spi_r != bytes(8)


def test_nonce_is_bound_into_the_cookie() -> None:
    b = IkeEndpoint([cfg(False)], limits=DosLimits(cookie_threshold=0))
    request = init_request()
    b.receive(request, (A, 500), 1.0)
    cookie = cookie_of(b.datagrams_to_send(1.0)[0].data)
    other = decode_message(init_request())  # another initiator's nonce (and KE) under the same SPIi
    forged = Message(request[:8], bytes(8), other.exchange, other.flags, 0,
                     (NotifyPayload(NotifyType.COOKIE, cookie), *other.payloads)).encode()
    b.receive(forged, (A, 500), 1.0)
    assert b.sa_count == 0 and b.stats.cookie_refused == 1


def _cookie_for(b: IkeEndpoint, request: bytes, addr: tuple[str, int], now: float) -> bytes:
    b.datagrams_to_send(now)
    b.receive(request, addr, now)
    replies = b.datagrams_to_send(now)
    assert len(replies) == 1
    return cookie_of(replies[0].data)


def test_previous_secret_accepted_for_one_rotation_then_refused() -> None:
    b = IkeEndpoint([cfg(False)], limits=DosLimits(cookie_threshold=0))
    request = init_request()
    addr = (A, 500)
    cookie = _cookie_for(b, request, addr, 1.0)
    b.rotate_cookie_secret()
    b.rotate_cookie_secret()
    b.receive(with_cookie(request, cookie), addr, 1.0)
    assert b.sa_count == 0  # two rotations ago: refused

    cookie = _cookie_for(b, request, addr, 2.0)
    b.rotate_cookie_secret()
    b.receive(with_cookie(request, cookie), addr, 2.0)
    assert b.sa_count == 1  # one rotation ago: still good


def test_secret_rotates_with_time() -> None:
    lifetime = 60.0
    b = IkeEndpoint([cfg(False, half_open_timeout=1e6)],
                    limits=DosLimits(cookie_threshold=0, cookie_lifetime=lifetime))
    request = init_request()
    one, two, three = (with_spi(request, i) for i in (1, 2, 3))
    first = _cookie_for(b, one, (A, 500), 0.0)
    assert _cookie_for(b, one, (A, 500), lifetime - 1) == first  # same secret within the period
    second = _cookie_for(b, two, (A, 500), lifetime + 1)
    assert second[:4] != first[:4]  # a new secret (version) after it
    b.receive(with_cookie(one, first), (A, 500), lifetime + 1)
    assert b.sa_count == 1  # the previous secret is still accepted
    _cookie_for(b, three, (A, 500), 2 * lifetime + 2)  # the next rotation
    b.receive(with_cookie(one, first), (A, 501), 2 * lifetime + 2)
    assert b.sa_count == 1  # (another port: a new request, and its cookie is two secrets old)
    b.receive(with_cookie(two, second), (A, 500), 2 * lifetime + 2)
    assert b.sa_count == 2  # one rotation old: accepted
    stale = _cookie_for(b, three, (A, 502), 2 * lifetime + 2)
    b.receive(with_cookie(three, first[:4] + stale[4:]), (A, 502), 2 * lifetime + 2)
    assert b.sa_count == 2  # the first secret's version is no longer accepted at all


def test_old_cookie_refused_after_two_periods() -> None:
    lifetime = 60.0
    b = IkeEndpoint([cfg(False)], limits=DosLimits(cookie_threshold=0, cookie_lifetime=lifetime))
    request = init_request()
    cookie = _cookie_for(b, request, (A, 500), 0.0)
    b.receive(with_cookie(request, cookie), (A, 500), 2.5 * lifetime)  # idle for two periods: both secrets new
    assert b.sa_count == 0 and b.stats.cookie_refused == 1


def test_the_flood_is_cookie_answered_and_creates_nothing() -> None:
    b = IkeEndpoint([cfg(False)], limits=DosLimits(cookie_threshold=5))
    request = init_request()
    _fill(b, 5, request)
    for i in range(500):
        b.receive(with_spi(request, 50_000 + i), (f"198.51.100.{i % 250 + 1}", 2000 + i), 2.0)
    assert b.sa_count == 5 and b.stats.cookies_sent == 500
    assert all(len(d.data) < len(request) for d in b.datagrams_to_send(2.0))  # no amplification


# ---------------------------------------------------------------------- cost per datagram


@pytest.fixture
def visits(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """How often any IkeSa method that the endpoint calls per SA is entered."""
    counts: Counter[str] = Counter()
    for name in ("get_timer", "handle_timer", "datagrams_to_send", "next_event", "take_successor", "receive"):
        original: Callable[..., Any] = getattr(IkeSa, name)

        def counting(self: IkeSa, *args: Any, _name: str = name, _orig: Callable[..., Any] = original,
                     **kw: Any) -> Any:
            counts[_name] += 1
            return _orig(self, *args, **kw)

        monkeypatch.setattr(IkeSa, name, counting)
    yield counts


def _flood_cost(n: int, visits: Counter[str]) -> Counter[str]:
    # (the five new ones come from one address: its own limits are above them too)
    b = IkeEndpoint([cfg(False)], limits=DosLimits(cookie_threshold=n + 10, half_open_limit=n + 10,
                                                   cookie_threshold_ip=n + 10, block_threshold=n + 10))
    request = init_request()
    _fill(b, n, request)
    datagrams = list(hostile(request).values())
    datagrams += [with_spi(request, 10_000)]  # a retransmission of a known request
    datagrams += [with_spi(request, 90_000 + i) for i in range(5)]  # five new ones
    visits.clear()
    for i, data in enumerate(datagrams):
        # what the daemon does per datagram: receive, send, look at the timer
        b.receive(data, ("198.51.100.1", 1000), 2.0 + i / 1000)
        b.datagrams_to_send(2.0)
        b.handle_timer(2.0)
        b.get_timer()
    assert b.sa_count == n + 5
    return visits.copy()


def test_per_datagram_work_does_not_grow_with_the_number_of_sas(visits: Counter[str]) -> None:
    small, large = _flood_cost(5, visits), _flood_cost(200, visits)
    assert small == large
    assert sum(small.values()) > 0


def test_timers_fire_per_sa_without_scanning(visits: Counter[str]) -> None:
    b = IkeEndpoint([cfg(False)], limits=DosLimits(cookie_threshold=1000, cookie_threshold_ip=1000,
                                                   block_threshold=1000))
    request = init_request()
    for i in range(100):
        b.receive(with_spi(request, i), (A, 1000 + i), float(i))
    b.datagrams_to_send(100.0)
    visits.clear()
    b.handle_timer(TIMEOUT + 9.5)  # the ten oldest time out
    assert b.sa_count == 90 and visits["handle_timer"] == 10


# ---------------------------------------------------------------------- an established peer is not disturbed


def test_established_sa_survives_a_flood_and_a_fresh_initiation_works() -> None:
    net = Network()
    a = net.add(A, IkeEndpoint([cfg(True)]))
    b = net.add(B, IkeEndpoint([cfg(False, peer=A)], limits=DosLimits(cookie_threshold=5, half_open_limit=50)))
    a.initiate("conn", "net", net.now)
    net.run()
    assert [type(e) for e in net.take(B)].count(ChildSaUp) == 1
    assert b.half_open == 0 and b.sa_count == 1
    established = b.sas[0]

    request = init_request()
    for i in range(200):
        for data in hostile(request).values():
            b.receive(data, (A, 500 + i), net.now)
        # spoofed from the configured peer's address: above its per-address threshold only cookies
        b.receive(with_spi(request, i), (A, 500 + i), net.now)
    assert b.half_open == b.limits.cookie_threshold_ip == 3 and b.sa_count == 4
    net.run(until=net.now + TIMEOUT + 1)
    assert b.sas == [established] and established.state is State.ESTABLISHED and b.half_open == 0

    # the tunnel still works: a liveness check is answered, then a restart of the initiator
    a.sas[0].send_liveness()
    net.run(until=net.now + 1)
    assert established.state is State.ESTABLISHED
    a.sas[0].delete(net.now)
    net.run(until=net.now + 1)
    assert b.sa_count == 0
    net.take(A)
    a.initiate("conn", "net", net.now)
    net.run(until=net.now + 1)
    events = net.take(A)
    assert any(isinstance(e, IkeSaUp) for e in events) and any(isinstance(e, ChildSaUp) for e in events)
    assert b.sa_count == 1 and b.half_open == 0


def test_authenticated_sa_leaves_the_half_open_count() -> None:
    net = Network()
    a = net.add(A, IkeEndpoint([cfg(True)]))
    b = net.add(B, IkeEndpoint([cfg(False)]))
    a.initiate("conn", "net", net.now)
    (request,) = a.datagrams_to_send(net.now)
    b.receive(request.data, (A, 500), net.now, (B, 500))
    assert b.half_open == 1
    (response,) = b.datagrams_to_send(net.now)
    a.receive(response.data, (B, 500), net.now, (A, 500))
    net.run()
    assert any(isinstance(e, ChildSaUp) for e in net.take(B))
    assert b.half_open == 0 and b.sa_count == 1
    # its IKE_SA_INIT request is still known (a late retransmission), as that SA's only
    assert list(b._by_init.values()) == b.sas and list(b._init_of) == [b.sas[0].local_spi]


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
        b.receive(with_cookie(data, _cookie_for(b, data, src, 2.0)), src, 2.0)
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
    held = SimpleNamespace(held_waiting=0, held_total=0, held_dropped=0, spi_waits=0, returned=0, install_waits=0,
                           install_holds=0, install_hold_seconds=0.0, install_hold_max=0.0, esp_on_ike_port=0,
                           natt_unanswered=0)

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
    held = SimpleNamespace(held_waiting=0, held_total=0, held_dropped=0, spi_waits=0, returned=0, install_waits=0,
                           install_holds=0, install_hold_seconds=0.0, install_hold_max=0.0, esp_on_ike_port=0,
                           natt_unanswered=0)
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


# ---------------------------------------------------------------------- late IKE_SA_INIT retransmissions


def _established(b_limits: DosLimits | None = None) -> tuple[Network, IkeEndpoint, IkeEndpoint, Sent]:
    """A set up with B; and A's IKE_SA_INIT request as it went over the wire."""
    net = Network()
    a = net.add(A, IkeEndpoint([cfg(True)]))
    b = net.add(B, IkeEndpoint([cfg(False, peer=A)], limits=b_limits))
    a.initiate("conn", "net", net.now)
    net.run()
    assert [type(e) for e in net.take(B)].count(IkeSaUp) == 1
    request = next(s for s in net.log if s.src[0] == A)
    assert decode_message(request.data).exchange == ExchangeType.IKE_SA_INIT
    return net, a, b, request


def test_a_late_init_retransmission_reaches_the_authenticated_sa_and_is_dropped_counted() -> None:
    """A client that waited longer than its retransmission timeout for the IKE_SA_INIT answer (an
    overloaded gateway) sends the request again after all: that is no new negotiation (no second
    IKE SA, no x25519, no answer with a SPIr the client ignores), it is dropped and counted."""
    net, a, b, request = _established()
    (established,) = b.sas
    net.now += 5.0
    b.receive(request.data, request.src, net.now, request.dst)
    assert b.sas == [established] and established.state is State.ESTABLISHED
    assert b.half_open == 0 and b.datagrams_to_send(net.now) == []
    assert b.stats.late_init_retransmits == 1
    assert not net.take(B)
    # the IKE SA still works
    a.sas[0].send_liveness()
    net.run(until=net.now + 1)
    assert established.state is State.ESTABLISHED and a.sas[0].state is State.ESTABLISHED


def test_the_request_is_forgotten_with_its_ike_sa() -> None:
    """The entry goes when the IKE SA goes (nothing accumulates per client that came and went):
    the same request afterwards is a request like any other, as at strongSwan."""
    net, a, b, request = _established()
    a.sas[0].delete(net.now)
    net.run(until=net.now + 1)
    assert b.sa_count == 0 and not b._by_init and not b._init_of
    b.receive(request.data, request.src, net.now, request.dst)
    assert b.half_open == b.sa_count == 1 and b.stats.late_init_retransmits == 0


@pytest.mark.parametrize("rekeyer", ["initiator", "responder"])
def test_a_rekeyed_ike_sa_forgets_the_request_when_the_old_sa_goes(rekeyer: str) -> None:
    """The new IKE SA of a rekey has other SPIs and was made by no IKE_SA_INIT: it has no entry;
    the old SA keeps its own while it lingers, and it goes with it."""
    net, a, b, request = _established()
    (old,) = b.sas
    (a.sas[0] if rekeyer == "initiator" else old).rekey()
    net.step()
    net.step()   # request and response: the new IKE SA is up, the old one lingers (or is being deleted)
    assert len(b.sas) == 2 and not old.is_half_open
    b.receive(request.data, request.src, net.now, request.dst)
    assert b.stats.late_init_retransmits == 1 and len(b.sas) == 2 and b.half_open == 0
    net.run()
    (new,) = b.sas
    assert new is not old and new.state is State.ESTABLISHED and old.is_closed
    assert not b._by_init and not b._init_of


def test_a_client_restarting_with_a_new_spi_from_the_same_address_negotiates() -> None:
    net, _, b, _ = _established()
    restarted = net.add(A, IkeEndpoint([cfg(True)]))
    restarted.initiate("conn", "net", net.now)
    net.run()
    assert any(isinstance(e, IkeSaUp) for e in net.take(A))
    assert restarted.sas[0].state is State.ESTABLISHED and b.stats.late_init_retransmits == 0
    # INITIAL_CONTACT replaced the old IKE SA, and its entry went with it
    (sa,) = b.sas
    assert sa.spi_i == restarted.sas[0].spi_i and list(b._by_init.values()) == [sa]


def test_a_new_request_that_reuses_the_spi_from_the_same_address_is_a_new_negotiation() -> None:
    """As at strongSwan (which keys by a hash of the request): only the same request is a
    retransmission; another one under the same SPIi (new nonce, new KE) is answered by a new SA."""
    net, _, b, request = _established()
    (established,) = b.sas
    other = IkeEndpoint([cfg(True)])
    other.initiate("conn", "net", net.now)
    (fresh,) = other.datagrams_to_send(net.now)
    reused = request.data[:8] + fresh.data[8:]
    b.receive(reused, request.src, net.now, request.dst)
    (answer,) = b.datagrams_to_send(net.now)
    msg = decode_message(answer.data)
    assert msg.spi_i == request.data[:8] and msg.spi_r not in (bytes(8), established.local_spi)
    assert b.half_open == 1 and b.sa_count == 2 and b.stats.late_init_retransmits == 0
    # both requests are known, each for its own SA
    b.receive(reused, request.src, net.now, request.dst)
    (again,) = b.datagrams_to_send(net.now)
    assert again.data == answer.data
    b.receive(request.data, request.src, net.now, request.dst)
    assert b.datagrams_to_send(net.now) == [] and b.stats.late_init_retransmits == 1 and b.sa_count == 2
