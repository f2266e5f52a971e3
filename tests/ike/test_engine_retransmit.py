"""Retransmitted requests at a responder (RFC 7296 §2.1), two engines in memory on a fake clock.

The stored response goes out again only for a byte-identical copy of the request answered, and
at most MAX_RESENDS times: a datagram with the right SPIs and message ID alone, sent from a
spoofed address, must not turn the gateway into a reflector of its responses (the review's PoC,
an attacker with its own IKE_SA_INIT or with the SPIs of an established IKE SA).
"""

from __future__ import annotations

from test_engine import A, B, make_net

from tunsec.ike.constants import ExchangeType, HeaderFlag
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.message import Message, decode_message
from tunsec.ike.sa import State
from tunsec.ike.sa_responder import MAX_RESENDS
from tunsec.ike.testing import Network, Sent

VICTIM = "203.0.113.9"


def _established() -> tuple[Network, IkeEndpoint, IkeEndpoint, Sent, Sent]:
    """A and B set up; A's IKE_AUTH request and B's response as they went over the wire."""
    net, a, b = make_net()
    a.initiate("a-to-b", "net", net.now)
    net.run()
    assert b.sas[0].state is State.ESTABLISHED
    request = next(s for s in net.log if s.src[0] == A and decode_message(s.data).exchange == ExchangeType.IKE_AUTH)
    response = next(s for s in net.log if s.src[0] == B and decode_message(s.data).exchange == ExchangeType.IKE_AUTH)
    return net, a, b, request, response


def _to_victim(net: Network, b: IkeEndpoint, data: bytes, port: int = 4500) -> list[Sent]:
    """Deliver ``data`` to B as if from the victim; what B sends the victim."""
    net.deliver(Sent(net.now, (VICTIM, port), (B, port), data))
    return [s for s in net.collect() if s.dst[0] == VICTIM]


def test_a_forged_header_after_ike_auth_is_not_answered_and_counted() -> None:
    """The PoC: 28 bytes with the SPIs of an established IKE SA and the message ID answered last."""
    net, a, b, _, _ = _established()
    (gw,) = b.sas
    forged = Message(gw.spi_i, gw.spi_r, ExchangeType.IKE_AUTH, int(HeaderFlag.INITIATOR), 1, ()).encode()
    assert len(forged) == 28
    for _ in range(20):
        assert _to_victim(net, b, forged) == []
    assert b.stats.retransmit_not_identical == 20
    assert b.stats.retransmit_limit == 0
    # the IKE SA is untouched: a liveness check still goes through
    a.sas[0].send_liveness()
    net.run(until=net.now + 1)
    assert gw.state is State.ESTABLISHED and a.sas[0].state is State.ESTABLISHED


def test_a_forged_header_after_ike_sa_init_is_not_answered_and_counted() -> None:
    """The PoC's off-path attacker: its own IKE_SA_INIT tells it SPIr; then headers with message ID 0
    from the victim's address must not make the half-open SA send its IKE_SA_INIT response there."""
    net, a, b = make_net()
    a.initiate("a-to-b", "net", net.now)
    net.step()   # the IKE_SA_INIT request reaches B
    response = next(s for s in net.collect() if s.src[0] == B)
    (half_open,) = b.sas
    assert half_open.is_half_open
    spi_i, spi_r = response.data[0:8], response.data[8:16]
    for exchange in (ExchangeType.IKE_AUTH, ExchangeType.IKE_SA_INIT):
        forged = Message(spi_i, spi_r, exchange, int(HeaderFlag.INITIATOR), 0, ()).encode()
        for port in (500, 4500):
            assert _to_victim(net, b, forged, port) == []
    # (an IKE_SA_INIT request never reaches an SA: the endpoint finds a copy by its bytes and address,
    # and drops this one as no well-formed request; the others come from an address the peer does
    # not have before authentication: dropped before their bytes are looked at, sa_responder.foreign)
    assert (b.stats.preauth_elsewhere, b.stats.retransmit_not_identical, b.stats.malformed) == (2, 0, 2)


def test_a_copy_of_the_init_request_is_answered_with_the_stored_response() -> None:
    net, a, b = make_net()
    a.initiate("a-to-b", "net", net.now)
    request = next(s for s in net.collect() if s.src[0] == A)
    net.deliver(request)
    first = [s.data for s in net.collect() if s.src[0] == B]
    net.deliver(request)   # A's retransmission: the endpoint finds the half-open SA by its bytes
    assert [s.data for s in net.collect() if s.src[0] == B] == first
    assert len(b.sas) == 1 and b.stats.retransmit_not_identical == 0


def test_a_copy_of_the_auth_request_is_answered_also_from_a_new_port_and_address() -> None:
    """A NAT that rebinds gives the peer a new port (or address) between retransmissions; RFC 7296
    §2.1 has the bytes identical only from the IKE header on, so the copy is answered where it came
    from. A copy needs the peer's request, so only one who saw it can send it, and MAX_RESENDS
    bounds what that reflects (test below)."""
    net, _, b, request, response = _established()
    for src in ((A, 4500), (A, 61001), (VICTIM, 4500)):
        net.deliver(Sent(net.now, src, (B, 4500), request.data))
        assert [(s.dst, s.data) for s in net.collect()] == [(src, response.data)]
    assert b.stats.retransmit_not_identical == 0
    # one bit changed anywhere (here in the ICV) is no copy: not answered, and nothing decrypted
    changed = bytearray(request.data)
    changed[-1] ^= 1
    assert _to_victim(net, b, bytes(changed)) == []
    assert b.stats.retransmit_not_identical == 1


def test_a_response_is_sent_again_at_most_max_resends_times() -> None:
    net, a, b, request, response = _established()
    answered = [s.data for _ in range(MAX_RESENDS + 5) for s in _to_victim(net, b, request.data)]
    assert answered == [response.data] * MAX_RESENDS
    assert b.stats.retransmit_limit == 5
    # the next request is answered, and its own retransmissions are counted afresh
    a.sas[0].send_liveness()
    informational = net.collect()
    (liveness,) = [s for s in informational if s.src[0] == A]
    net.deliver(liveness)
    assert len([s for s in net.collect() if s.src[0] == B]) == 1
    assert sum(len(_to_victim(net, b, liveness.data)) for _ in range(MAX_RESENDS + 1)) == MAX_RESENDS
    assert b.stats.retransmit_limit == 6


def test_the_ike_sa_a_rekey_makes_refuses_forgeries_too_and_counts_them_at_the_endpoint() -> None:
    """The new IKE SA of a rekey (RFC 7296 §2.18) answers its first request and keeps it as the
    others do; its refusals land in the endpoint's counters, not in a private copy."""
    net, a, b, _, _ = _established()
    (old,) = b.sas
    a.sas[0].rekey()
    net.run(until=net.now + 1)
    (new,) = [sa for sa in b.sas if sa.state is State.ESTABLISHED]
    assert new.spi_r != old.spi_r
    a_new = next(sa for sa in a.sas if sa.state is State.ESTABLISHED)
    a_new.send_liveness()
    (liveness,) = [s for s in net.collect() if s.src[0] == A]
    net.deliver(liveness)
    assert len([s for s in net.collect() if s.src[0] == B]) == 1
    forged = Message(new.spi_i, new.spi_r, ExchangeType.INFORMATIONAL, int(HeaderFlag.INITIATOR),
                     decode_message(liveness.data).message_id, ()).encode()
    assert _to_victim(net, b, forged) == []
    assert len(_to_victim(net, b, liveness.data)) == 1
    assert b.stats.retransmit_not_identical == 1
