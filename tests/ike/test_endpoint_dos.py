"""Unauthenticated IKE datagrams at a responder (RFC 7296 §2.6), on a fake clock.

Nothing is kept for a datagram that is not a well-formed IKE_SA_INIT request;
half-open responder SAs are counted, capped and reaped; COOKIEs are demanded
above a threshold, bound to the source address, port, SPIi and Ni, with a secret
that rotates; the work per datagram does not grow with the number of SAs; and an
established peer is not disturbed.  Per source address: test_endpoint_dos_sources.py.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from endpoint_dos_data import (
    TIMEOUT,
    A,
    B,
    cfg,
    cookie_for,
    cookie_of,
    hostile,
    init_request,
    with_cookie,
    with_spi,
)

from tunsec.ike.constants import NotifyType
from tunsec.ike.endpoint import DosLimits, IkeEndpoint
from tunsec.ike.events import ChildSaUp, IkeSaUp
from tunsec.ike.message import Message, NotifyPayload, decode_message
from tunsec.ike.sa import IkeSa, State
from tunsec.ike.testing import Network


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


def test_previous_secret_accepted_for_one_rotation_then_refused() -> None:
    b = IkeEndpoint([cfg(False)], limits=DosLimits(cookie_threshold=0))
    request = init_request()
    addr = (A, 500)
    cookie = cookie_for(b, request, addr, 1.0)
    b.rotate_cookie_secret()
    b.rotate_cookie_secret()
    b.receive(with_cookie(request, cookie), addr, 1.0)
    assert b.sa_count == 0  # two rotations ago: refused

    cookie = cookie_for(b, request, addr, 2.0)
    b.rotate_cookie_secret()
    b.receive(with_cookie(request, cookie), addr, 2.0)
    assert b.sa_count == 1  # one rotation ago: still good


def test_secret_rotates_with_time() -> None:
    lifetime = 60.0
    b = IkeEndpoint([cfg(False, half_open_timeout=1e6)],
                    limits=DosLimits(cookie_threshold=0, cookie_lifetime=lifetime))
    request = init_request()
    one, two, three = (with_spi(request, i) for i in (1, 2, 3))
    first = cookie_for(b, one, (A, 500), 0.0)
    assert cookie_for(b, one, (A, 500), lifetime - 1) == first  # same secret within the period
    second = cookie_for(b, two, (A, 500), lifetime + 1)
    assert second[:4] != first[:4]  # a new secret (version) after it
    b.receive(with_cookie(one, first), (A, 500), lifetime + 1)
    assert b.sa_count == 1  # the previous secret is still accepted
    cookie_for(b, three, (A, 500), 2 * lifetime + 2)  # the next rotation
    b.receive(with_cookie(one, first), (A, 501), 2 * lifetime + 2)
    assert b.sa_count == 1  # (another port: a new request, and its cookie is two secrets old)
    b.receive(with_cookie(two, second), (A, 500), 2 * lifetime + 2)
    assert b.sa_count == 2  # one rotation old: accepted
    stale = cookie_for(b, three, (A, 502), 2 * lifetime + 2)
    b.receive(with_cookie(three, first[:4] + stale[4:]), (A, 502), 2 * lifetime + 2)
    assert b.sa_count == 2  # the first secret's version is no longer accepted at all


def test_old_cookie_refused_after_two_periods() -> None:
    lifetime = 60.0
    b = IkeEndpoint([cfg(False)], limits=DosLimits(cookie_threshold=0, cookie_lifetime=lifetime))
    request = init_request()
    cookie = cookie_for(b, request, (A, 500), 0.0)
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


def test_sa_for_names_the_ike_sa_receive_hands_a_datagram_to() -> None:
    """What the IKE service asks before holding a datagram (SpiPool.receive): the SA by our SPI as
    receive routes it (the responder's SPI from the initiator, ours as initiator in a response);
    nothing for IKE_SA_INIT requests, bad headers and SPIs we do not have."""
    net = Network()
    a = net.add(A, IkeEndpoint([cfg(True)]))
    b = net.add(B, IkeEndpoint([cfg(False, peer=A)]))
    a.initiate("conn", "net", net.now)
    (request,) = a.datagrams_to_send(net.now)
    assert b.sa_for(request.data) is None
    b.receive(request.data, (A, 500), net.now, (B, 500))
    (response,) = b.datagrams_to_send(net.now)
    assert a.sa_for(response.data) is a.sas[0] and b.sa_for(response.data) is None
    a.receive(response.data, (B, 500), net.now, (A, 500))
    (auth,) = a.datagrams_to_send(net.now)
    assert b.sa_for(auth.data) is b.sas[0] and a.sa_for(auth.data) is None
    for name, data in hostile(request.data).items():
        assert b.sa_for(data) is None, name
    assert b.sa_for(auth.data[:-1]) is None                               # the header's length is wrong
    assert b.sa_for(auth.data[:8] + bytes(8) + auth.data[16:]) is None    # another responder SPI
