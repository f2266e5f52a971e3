"""rand_time, over_time and send_cert as the engine acts on them (two engines, fake clock).

Each test shows the behaviour on the wire or in the events, never a stored value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from test_engine_more import NOW, A, B, cfg, only, pubkey_cfg

from tunsec.ike.config import IkeConfig
from tunsec.ike.constants import ExchangeType
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaDown, ChildSaUp, DownReason, IkeSaDown, IkeSaRekeyed, PeerUnreachable
from tunsec.ike.message import CertPayload, decode_header, decode_message
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.sa import State
from tunsec.ike.sk import decrypt_message
from tunsec.ike.testing import Network, Sent, make_ca, make_cert

Jitter = Callable[[float], float]


def fixed(fraction: float) -> Jitter:
    """A jitter that always takes ``fraction`` of the allowed spread."""
    return lambda bound: bound * fraction


def network(a_cfg: IkeConfig, b_cfg: IkeConfig, jitter_a: Jitter) -> Network:
    """A (with ``jitter_a``) and B (rekeys exactly at rekey_time, if it has one)."""
    net = Network()
    net.add(A, IkeEndpoint([a_cfg], wall_clock=lambda: NOW, jitter=jitter_a))
    net.add(B, IkeEndpoint([b_cfg], wall_clock=lambda: NOW, jitter=fixed(0.0)))
    return net


def requests(net: Network, src: str, exchange: ExchangeType) -> list[float]:
    """When ``src`` sent a request of ``exchange`` (responses and retransmissions left out)."""
    times = []
    for s in net.log:
        hdr = decode_header(s.data)
        if s.src[0] == src and hdr.exchange == exchange and not hdr.is_response:
            times.append(s.time)
    return times


def with_child(c: IkeConfig, **kw: float | None) -> IkeConfig:
    return dataclasses.replace(c, children=tuple(dataclasses.replace(ch, **kw) for ch in c.children))


# ------------------------------------------------------------------ rand_time


@pytest.mark.parametrize("fraction", [0.0, 0.5, 1.0])
def test_child_rekey_fires_rand_time_early(fraction: float) -> None:
    """rekey_time 100 s, rand_time 30 s: the rekey goes out at 100 - 30 * fraction, within [70, 100]."""
    net = network(with_child(cfg(True), rekey_time=100.0, rand_time=30.0), cfg(False), fixed(fraction))
    net.nodes[A].initiate("conn", "net", net.now)
    net.run(until=100.5)
    (sent,) = requests(net, A, ExchangeType.CREATE_CHILD_SA)
    assert sent == pytest.approx(100.0 - 30.0 * fraction)
    ups = only(net.take(A), ChildSaUp)
    assert len(ups) == 2 and ups[1].rekey_of == ups[0].unique_id


def test_child_rand_time_larger_than_the_default_spread() -> None:
    """rand_time is not capped at strongSwan's 10 % default: 50 s of a 100 s rekey_time are used."""
    net = network(with_child(cfg(True), rekey_time=100.0, rand_time=50.0), cfg(False), fixed(1.0))
    net.nodes[A].initiate("conn", "net", net.now)
    net.run(until=60.0)
    assert requests(net, A, ExchangeType.CREATE_CHILD_SA) == [pytest.approx(50.0)]


def test_child_rand_time_defaults_to_ten_percent() -> None:
    net = network(with_child(cfg(True), rekey_time=100.0), cfg(False), fixed(1.0))
    net.nodes[A].initiate("conn", "net", net.now)
    net.run(until=100.5)
    assert requests(net, A, ExchangeType.CREATE_CHILD_SA) == [pytest.approx(90.0)]


def test_ike_rekey_fires_rand_time_early() -> None:
    a_cfg = dataclasses.replace(cfg(True), rekey_time=200.0, rand_time=40.0)
    net = network(a_cfg, cfg(False), fixed(0.25))
    net.nodes[A].initiate("conn", "net", net.now)
    net.run(until=200.5)
    assert requests(net, A, ExchangeType.CREATE_CHILD_SA) == [pytest.approx(190.0)]
    assert only(net.take(A), IkeSaRekeyed)


def test_zero_rand_time_rekeys_exactly_on_time() -> None:
    a_cfg = dataclasses.replace(cfg(True), rekey_time=200.0, rand_time=0.0)
    net = network(a_cfg, cfg(False), fixed(1.0))
    net.nodes[A].initiate("conn", "net", net.now)
    net.run(until=200.5)
    assert requests(net, A, ExchangeType.CREATE_CHILD_SA) == [pytest.approx(200.0)]


# ------------------------------------------------------------------ over_time


def _rekey_requests(net: Network, src: str) -> list[Sent]:
    """The CREATE_CHILD_SA requests ``src`` sent, retransmissions included."""
    return [s for s in net.log if s.src[0] == src and not decode_header(s.data).is_response
            and decode_header(s.data).exchange == ExchangeType.CREATE_CHILD_SA]


def _first_two_rekeys_lost(net: Network) -> Callable[[Sent], bool]:
    """A drop filter: A's first two CREATE_CHILD_SA requests are lost (the log holds those sent before)."""

    def lost(sent: Sent) -> bool:
        hdr = decode_header(sent.data)
        rekey = sent.src[0] == A and hdr.exchange == ExchangeType.CREATE_CHILD_SA and not hdr.is_response
        return rekey and len(_rekey_requests(net, A)) < 2

    return lost


def test_an_unanswered_rekey_holds_an_expired_ike_sa_only_until_it_gives_up() -> None:
    """The peer never answers the rekey: past the hard lifetime (rekey + over_time) the IKE SA still
    waits for that exchange, as strongSwan queues its DELETE behind it, but starts nothing else, and
    closes when the retransmissions give up (reason EXPIRED: the service reestablishes it), its Child
    SAs with it: never later than the rekey's retransmission timeout after the hard lifetime."""
    a_cfg = dataclasses.replace(cfg(True), rekey_time=200.0, rand_time=20.0, over_time=50.0)
    retransmit = a_cfg.retransmit
    give_up = 190.0 + sum(retransmit.delay(i) for i in range(retransmit.tries + 1))
    assert give_up > 240.0 + 1.0                     # the rekey is still retransmitted at the hard lifetime
    net = network(a_cfg, cfg(False), fixed(0.5))
    net.nodes[A].initiate("conn", "net", net.now)
    net.run(until=100.0)
    net.take(A)
    old = net.nodes[A].sas[0]
    net.drop = lambda sent: sent.src[0] == A         # nothing of A's arrives any more
    net.run(until=240.1)                             # past the hard lifetime
    rekey = _rekey_requests(net, A)
    assert rekey[0].time == pytest.approx(190.0)
    assert not only(net.take(A), IkeSaDown) and not old.is_closed    # the rekey may still save it
    net.run(until=give_up - 0.1)
    assert not only(net.take(A), IkeSaDown)
    late = [s for s in net.log if s.src[0] == A and s.time > 240.0]
    assert late and {s.data for s in late} == {rekey[0].data}     # the rekey, retransmitted; no DELETE yet
    net.run(until=give_up + 0.1)
    events = net.take(A)
    assert [d.reason for d in only(events, IkeSaDown)] == [DownReason.EXPIRED]
    assert {d.reason for d in only(events, ChildSaDown)} == {DownReason.EXPIRED}
    assert not only(events, PeerUnreachable)         # an expired SA, not a dead peer (dpd_action)
    assert old.is_closed and not net.nodes[A].sas


def test_a_rekey_answered_after_the_hard_lifetime_saves_the_child_sas() -> None:
    """The rekey's first two transmissions are lost; the answer to the third comes after the hard
    lifetime. The rekey completes (strongSwan's queued DELETE waits behind it): the successor carries
    the Child SAs, and the expired SA tells the peer DELETE and closes at once (not after the
    REKEYED linger): its end still comes with the exchange that was in flight."""
    a_cfg = dataclasses.replace(cfg(True), rekey_time=200.0, rand_time=20.0, over_time=5.0)
    net = network(a_cfg, cfg(False), fixed(0.5))     # A rekeys at 190, its hard lifetime is 195
    net.nodes[A].initiate("conn", "net", net.now)
    net.run(until=100.0)
    net.take(A)
    (old,) = net.nodes[A].sas
    (b_old,) = net.nodes[B].sas
    children = {c.name for c in old.children}
    net.drop = _first_two_rekeys_lost(net)
    net.run(until=196.0)
    assert not old.is_closed and old.state is State.ESTABLISHED
    answered = 190.0 + a_cfg.retransmit.delay(0) + a_cfg.retransmit.delay(1)
    net.run(until=answered + 1.0)
    events = net.take(A)
    assert len(only(events, IkeSaRekeyed)) == 1
    assert not only(events, IkeSaDown) and not only(events, ChildSaDown)
    (new,) = net.nodes[A].sas
    assert new is old.heir and new.state is State.ESTABLISHED and new.local_spi != old.local_spi
    assert {c.name for c in new.children} == children
    assert old.is_closed                             # at the answer, not REKEYED_LINGER later
    spis = (old.spi_i, old.spi_r)
    deletes = [s for s in net.log if s.src[0] == A and decode_header(s.data).exchange == ExchangeType.INFORMATIONAL
               and (decode_header(s.data).spi_i, decode_header(s.data).spi_r) == spis]
    assert [s.time for s in deletes] == [pytest.approx(answered)]
    assert b_old.is_closed                           # the peer heard the DELETE: its old SA went at once too
    assert [sa.local_spi for sa in net.nodes[B].sas] == [new.spi_r]


def test_past_the_hard_lifetime_a_refused_rekey_is_not_sent_again() -> None:
    """The answer to the rekey, after the hard lifetime, asks for another DH group (INVALID_KE_PAYLOAD).
    Sending it again would be a new exchange with its own retransmissions, and a peer could ask for
    one group after the other forever: the expired SA closes at that answer instead (reason EXPIRED,
    its DELETE sent once)."""
    proposals = "aes256gcm16-prfsha384-ecp384-ecp256"
    a_cfg = dataclasses.replace(cfg(True, proposals), rekey_time=200.0, rand_time=20.0, over_time=5.0)
    net = network(a_cfg, cfg(False, proposals), fixed(0.5))     # A rekeys at 190, its hard lifetime is 195
    net.nodes[A].initiate("conn", "net", net.now)
    net.run(until=100.0)
    net.take(A)
    (old,) = net.nodes[A].sas
    (b_sa,) = net.nodes[B].sas
    b_sa._st.config = dataclasses.replace(b_sa._st.config, proposals=parse_proposals("aes256gcm16-prfsha384-ecp256"))
    net.drop = _first_two_rekeys_lost(net)
    net.run(until=196.0)
    assert not old.is_closed                         # the rekey is still in flight
    answered = 190.0 + a_cfg.retransmit.delay(0) + a_cfg.retransmit.delay(1)
    net.run(until=answered + 30.0)
    events = net.take(A)
    assert [d.reason for d in only(events, IkeSaDown)] == [DownReason.EXPIRED]
    assert not only(events, IkeSaRekeyed)
    assert len({decode_header(s.data).message_id for s in _rekey_requests(net, A)}) == 1   # never sent again
    spis = (old.spi_i, old.spi_r)
    deletes = [s for s in net.log if s.src[0] == A and decode_header(s.data).exchange == ExchangeType.INFORMATIONAL
               and (decode_header(s.data).spi_i, decode_header(s.data).spi_r) == spis]
    assert [s.time for s in deletes] == [pytest.approx(answered)]


def test_a_successful_rekey_resets_the_hard_lifetime() -> None:
    a_cfg = dataclasses.replace(cfg(True), rekey_time=200.0, rand_time=0.0, over_time=50.0)
    net = network(a_cfg, cfg(False), fixed(0.0))
    net.nodes[A].initiate("conn", "net", net.now)
    net.run(until=500.0)
    events = net.take(A)
    assert len(only(events, IkeSaRekeyed)) == 2      # at 200 and 400, never expired
    assert not only(events, IkeSaDown)


# ------------------------------------------------------------------ send_cert


def _certs_sent(net: Network, src: str) -> list[int]:
    """How many CERT payloads ``src`` put in each IKE_AUTH message it sent."""
    sa = net.events[src][0][0]
    crypter = sa._st.tx     # the test opens the sender's own messages with its keys
    assert crypter is not None
    counts = []
    for s in net.log:
        if s.src[0] != src or decode_header(s.data).exchange != ExchangeType.IKE_AUTH:
            continue
        msg = decode_message(s.data)
        counts.append(len([p for p in decrypt_message(s.data, msg, crypter) if isinstance(p, CertPayload)]))
    return counts


@pytest.mark.parametrize(
    ("send_cert", "peer_certreq", "sent"),
    [
        ("ifasked", True, 1),
        ("ifasked", False, 0),
        ("always", False, 1),
        ("always", True, 1),
        ("never", True, 0),
    ],
)
def test_send_cert(send_cert: str, peer_certreq: bool, sent: int) -> None:
    """The responder B (pubkey) sends its certificate per send_cert and whether A asked (CERTREQ).
    Without the certificate A cannot verify B, so the outcome shows on the wire, not in a field."""
    ca = make_ca()
    moon, sun = make_cert(ca, "moon", ["moon.example"]), make_cert(ca, "sun", ["sun.example"])
    a_cfg = dataclasses.replace(pubkey_cfg(True, moon, ca, "moon.example", "sun.example"),
                                send_certreq=peer_certreq, send_cert="always")
    b_cfg = dataclasses.replace(pubkey_cfg(False, sun, ca, "sun.example", "moon.example"), send_cert=send_cert)
    net = network(a_cfg, b_cfg, fixed(0.0))
    net.nodes[A].initiate("conn", "net", net.now)
    net.run(until=1.0)
    assert _certs_sent(net, B) == [sent]
    assert bool(only(net.take(A), ChildSaUp)) is bool(sent)   # no certificate: A cannot authenticate B
