"""An authenticated peer that abuses its IKE SA, two engines on a fake clock: IKE SA rekeys that
never delete the old SA (bounded by sa_successor.MAX_UNDELETED), a Delete payload of thousands of
SPIs (bounded work, informational.SPARE_SPIS), and requests from a spoofed source (followed only
for a peer behind a NAT, RFC 7296 §2.23, within remote_addrs; the first IKE_AUTH only on a responder
while CONNECTING; before authentication nothing is answered to another IP)."""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Sequence

import pytest
from test_engine_eap import NOW as EAP_NOW
from test_engine_eap import client as eap_client
from test_engine_eap import gateway as eap_gateway
from test_engine_more import A, B, cfg, only

from tunsec.ike.constants import ExchangeType, ProtocolId
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaDown, IkeSaRekeyed, NegotiationFailed
from tunsec.ike.exchanges.base import Outcome, Task
from tunsec.ike.exchanges.informational import SPARE_SPIS
from tunsec.ike.message import DeletePayload, Payload, decode_header
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.sa import IkeSa, State
from tunsec.ike.sa_successor import MAX_UNDELETED
from tunsec.ike.state import IkeSaState
from tunsec.ike.testing import EPOCH, Network, Sent

PROPS = "aes256gcm16-prfsha256-curve25519"
SPOOFED = ("203.0.113.9", 4500)


def _pair(**a_kw: object) -> tuple[Network, IkeEndpoint, IkeEndpoint]:
    net = Network()
    a = net.add(A, IkeEndpoint([cfg(True, PROPS, **a_kw)], random.Random(1).randbytes, wall_clock=lambda: EPOCH))
    b = net.add(B, IkeEndpoint([cfg(False, PROPS)], random.Random(2).randbytes, wall_clock=lambda: EPOCH))
    a.initiate("conn", "net", net.now)
    net.run()
    return net, a, b


def _established(endpoint: IkeEndpoint) -> IkeSa:
    (sa,) = [s for s in endpoint.sas if s.state is State.ESTABLISHED]
    return sa


def _states(endpoint: IkeEndpoint) -> dict[str, int]:
    states: dict[str, int] = {}
    for sa in endpoint.sas:
        states[sa.state.value] = states.get(sa.state.value, 0) + 1
    return states


def _deletes(sent: Sent) -> bool:
    hdr = decode_header(sent.data)
    return hdr.exchange == ExchangeType.INFORMATIONAL and not hdr.is_response


def _deletes_from_a(sent: Sent) -> bool:
    hdr = decode_header(sent.data)
    return sent.src[0] == A and hdr.exchange == ExchangeType.INFORMATIONAL and not hdr.is_response


# ------------------------------------------------------------------ IKE SA rekeys that never delete


def test_a_rekey_flood_leaves_at_most_max_undeleted_sas_until_the_deletes_come() -> None:
    """A rekeys its IKE SA, then the new one, and so on, and never lets a DELETE through: B keeps
    MAX_UNDELETED replaced SAs and refuses the next rekey with TEMPORARY_FAILURE (counted); once
    A's DELETEs arrive, its rekey (retried) goes through again."""
    net, a, b = _pair()
    net.drop = _deletes_from_a
    for _ in range(10):
        _established(a).rekey()
        while net.step():   # no timers: A's retries and B's lingering stay where they are
            pass
    assert _states(b) == {"established": 1, "rekeyed": MAX_UNDELETED}
    assert len(only([e for _, e in net.events[B]], IkeSaRekeyed)) == MAX_UNDELETED
    refused = [s for s in net.log if s.src[0] == B and decode_header(s.data).exchange == ExchangeType.CREATE_CHILD_SA]
    assert b.stats.ike_rekeys_refused >= 1 and len(refused) == MAX_UNDELETED + b.stats.ike_rekeys_refused
    survivor = _established(b)
    assert len(survivor.children) == 1   # the Child SA went along, untouched
    # the DELETEs get through (A retransmits them): B's replaced SAs go, and A's next rekey is served
    net.drop = None
    net.run(until=net.now + 40)   # before B would let them go by itself (REKEYED_LINGER)
    assert _states(b) == {"established": 1}
    assert _established(b) is not survivor
    assert len(only([e for _, e in net.events[B]], IkeSaRekeyed)) == MAX_UNDELETED + 1


def test_rekeys_that_delete_the_old_sa_are_never_refused() -> None:
    net, a, b = _pair()
    for _ in range(5):
        _established(a).rekey()
        net.run(until=net.now + 1)
    assert b.stats.ike_rekeys_refused == 0
    assert _states(b) == {"established": 1}
    assert len(only([e for _, e in net.events[B]], IkeSaRekeyed)) == 5


@pytest.mark.parametrize("seed", range(4))
def test_a_collision_as_the_first_rekey_counts_its_redundant_sa_in_the_lineage(seed: int) -> None:
    """Both sides rekey the IKE SA at once as its first rekey (RFC 7296 §2.8.2) and no DELETE gets
    through: the old IKE SA and the collision's redundant one are both counted in the one lineage
    the survivor carries on (MAX_UNDELETED), on either side, so the next rekey is refused
    (TEMPORARY_FAILURE) until the DELETEs come; then it passes.  (Had the redundant SA a line of its
    own, the survivor's would count one and the rekey would pass: review rev7, b812429.)"""
    net = Network()
    a = net.add(A, IkeEndpoint([cfg(True, PROPS)], random.Random(seed).randbytes, wall_clock=lambda: EPOCH))
    b = net.add(B, IkeEndpoint([cfg(False, PROPS)], random.Random(seed + 100).randbytes, wall_clock=lambda: EPOCH))
    a.initiate("conn", "net", net.now)
    net.run()
    net.drop = _deletes   # either side's
    old_a, old_b = _established(a), _established(b)
    old_a.rekey()
    old_b.rekey()
    while net.step():
        pass
    for side in (a, b):
        assert _states(side) == {"established": 1, "rekeyed": 2}
        lines = {id(sa._undeleted) for sa in side.sas}
        assert len(lines) == 1 and _established(side)._undeleted is not None
        assert _established(side)._undeleted.count == MAX_UNDELETED
    _established(a).rekey()
    while net.step():
        pass
    assert b.stats.ike_rekeys_refused == 1 and _states(b) == {"established": 1, "rekeyed": 2}
    net.drop = None
    net.run(until=net.now + 40)   # the DELETEs are retransmitted, A's rekey retried
    assert _states(b) == {"established": 1}
    assert len(only([e for _, e in net.events[B]], IkeSaRekeyed)) == 2


def test_a_refused_ike_rekey_is_marked_as_the_peers_request_only_on_the_side_that_refused() -> None:
    """A proposes only a PRF B does not take in its IKE SA rekey: B refuses (NO_PROPOSAL_CHOSEN)
    and says it refused the peer's request (``peer_request``: the service rate-limits the line, A may
    ask again at will); A's own failed rekey is not marked (its line always logs)."""
    net, a, b = _pair()
    sa = _established(a)
    sa._st.config = dataclasses.replace(sa._st.config, proposals=parse_proposals("aes256gcm16-prfsha512-curve25519"))
    net.take(A)
    net.take(B)
    sa.rekey()
    net.run(until=net.now + 1)
    (theirs,) = only(net.take(B), NegotiationFailed)
    (ours,) = only(net.take(A), NegotiationFailed)
    assert (theirs.reason, theirs.peer_request) == ("NO_PROPOSAL_CHOSEN", True)
    assert (ours.reason, ours.peer_request) == ("NO_PROPOSAL_CHOSEN", False)
    assert _states(b) == {"established": 1}


# ------------------------------------------------------------------ a Delete payload of many SPIs


class _Delete(Task):
    """An INFORMATIONAL with the Delete payloads a test chooses (a legitimate peer lists its SAs once)."""

    exchange = ExchangeType.INFORMATIONAL

    def __init__(self, deletes: Sequence[DeletePayload]) -> None:
        self._deletes = list(deletes)
        self.answer: list[Payload] = []

    def build(self, st: IkeSaState) -> list[Payload]:
        return list(self._deletes)

    def process(self, st: IkeSaState, payloads: Sequence[Payload]) -> Outcome:
        self.answer = list(payloads)
        return Outcome.DONE


def test_a_delete_of_many_junk_spis_deletes_exactly_the_real_ones_with_bounded_work() -> None:
    """B's Child SAs send to A's inbound SPIs: A lists two of its three (one twice) among junk, in
    two payloads.  B deletes exactly those two and answers with their SPIs; of the rest it looks at
    no more than it has Child SAs plus SPARE_SPIS, and counts the others as ignored."""
    net, a, b = _pair()
    sa = _established(a)
    for child in ("web", "net"):
        sa.initiate(child)
    net.run()
    real = [c.spi_in for c in sa.children]
    assert len(real) == 3
    spi = lambda n: n.to_bytes(4, "big")  # noqa: E731
    # 8 KB of SPIs in one datagram (under the 10,000 bytes strongSwan's charon.max_packet allows)
    junk = [spi(0x7000_0000 + i) for i in range(2000)]
    first = DeletePayload(ProtocolId.ESP, 4, (*junk[:5], spi(real[0]), spi(real[0]), *junk[5:8], spi(real[1]),
                                              *junk[8:1500]))
    second = DeletePayload(ProtocolId.ESP, 4, tuple(junk[1500:]))
    task = _Delete([first, second])
    sa._st.peer_fragmentation = False
    sa._queue.append(task)   # the peer's request, as A's engine sends any
    sa._start_next()
    a._touch(sa)
    net.run(until=net.now + 1)
    gone = only([e for _, e in net.events[B]], ChildSaDown)
    assert sorted(e.spi_out for e in gone) == sorted(real[:2])
    assert [c.spi_out for c in _established(b).children] == [real[2]]
    (answer,) = [p for p in task.answer if isinstance(p, DeletePayload)]
    assert sorted(answer.spis) == sorted(spi(e.spi_in) for e in gone)
    looked_at = len(first.spis) + len(second.spis) - b.stats.delete_spis_ignored
    assert looked_at == 3 + SPARE_SPIS


# ------------------------------------------------------------------ spoofed sources (RFC 7296 §2.23)


def _spoofed_liveness(net: Network, a: IkeEndpoint) -> None:
    """A's next request reaches B from SPOOFED (A's own doing, or an on-path attacker's copy sent first)."""
    _established(a).send_liveness()
    for sent in net.collect():
        net.deliver(dataclasses.replace(sent, src=SPOOFED) if sent.src[0] == A else sent)
    net.run(until=net.now + 1)


def test_a_peer_seen_without_nat_is_not_moved_by_a_spoofed_source() -> None:
    """A sends the genuine NAT detection hash (a strongSwan peer with encap = no): B saw no NAT in
    front of it, follows it to port 4500 after IKE_SA_INIT (the first IKE_AUTH request), and never
    to the source of a later request."""
    net, a, b = _pair(mobike=False, force_encap=False)
    sa = _established(b)
    assert sa.remote_addr == (A, 4500) and sa.esp_remote == (A, 4500)
    _spoofed_liveness(net, a)
    assert sa.remote_addr == (A, 4500) and sa.esp_remote == (A, 4500)
    assert [c.remote_ts for c in sa.children]   # still up, where it was


def test_a_peer_behind_a_nat_is_followed_to_its_new_mapping() -> None:
    """A forces encapsulation (its random hash says: NAT), as tunsec and strongSwan's encap = yes do:
    B follows the source of its authenticated requests (NAT rebinding)."""
    net, a, b = _pair(mobike=False)
    sa = _established(b)
    _spoofed_liveness(net, a)
    assert sa.remote_addr == SPOOFED and sa.esp_remote == SPOOFED


def test_the_nat_detection_hashes_are_checked_in_ike_sa_init() -> None:
    _, a, b = _pair(force_encap=False)
    assert not _established(b)._st.nat_peer   # A's hash is genuine
    assert _established(a)._st.nat_peer       # B forces encapsulation: its hash is random


class _Says(Task):
    """An authenticated request of the exchange type a test chooses, with nothing in it."""

    def __init__(self, exchange: int) -> None:
        self.exchange = exchange

    def build(self, st: IkeSaState) -> list[Payload]:
        return []

    def process(self, st: IkeSaState, payloads: Sequence[Payload]) -> Outcome:
        return Outcome.DONE


def _spoofed_request(net: Network, sa: IkeSa, task: Task, src: str) -> None:
    """``sa``'s next request (``task``) reaches its peer from SPOOFED; what ``src`` sends otherwise does not change."""
    sa._queue.append(task)
    sa._start_next()
    sa._changed()
    for sent in net.collect():
        net.deliver(dataclasses.replace(sent, src=SPOOFED) if sent.src[0] == src else sent)
    net.run(until=net.now + 1)


def test_an_ike_auth_numbered_1_on_a_rekeyed_ike_sa_moves_nothing() -> None:
    """Message IDs start at 0 again on the IKE SA a rekey makes: A, seen without NAT, sends request 0
    (a liveness check), then an empty "IKE_AUTH" numbered 1 from a spoofed source.  It is answered
    (INVALID_SYNTAX), and B's IKE SA and Child SA stay where A is (only a responder's first IKE_AUTH,
    while CONNECTING, floats)."""
    net, a, b = _pair(mobike=False, force_encap=False)
    _established(a).rekey()
    net.run(until=net.now + 1)
    client, gw = _established(a), _established(b)
    assert not gw._st.nat_peer and gw._peer_id == 0
    client.send_liveness()
    net.run(until=net.now + 1)
    _spoofed_request(net, client, _Says(ExchangeType.IKE_AUTH), A)
    answers = [s for s in net.log if s.dst == SPOOFED]
    assert len(answers) == 1 and decode_header(answers[0].data).message_id == 1   # answered where it came from
    assert gw.remote_addr == (A, 4500) and gw.esp_remote == (A, 4500)
    assert gw.state is State.ESTABLISHED and len(gw.children) == 1


def test_an_ike_auth_numbered_1_on_an_ike_sa_we_initiated_moves_nothing() -> None:
    """The responder's own requests on an IKE SA we initiated are numbered from 0: B's second one,
    an "IKE_AUTH", from a spoofed source, does not move A's IKE SA (A is no responder)."""
    net = Network()
    a = net.add(A, IkeEndpoint([cfg(True, PROPS, mobike=False, force_encap=False)], random.Random(1).randbytes,
                               wall_clock=lambda: EPOCH))
    b = net.add(B, IkeEndpoint([cfg(False, PROPS, mobike=False, force_encap=False)], random.Random(2).randbytes,
                               wall_clock=lambda: EPOCH))
    a.initiate("conn", "net", net.now)
    net.run()
    hub, spoke = _established(a), _established(b)
    spoke.send_liveness()
    net.run(until=net.now + 1)
    _spoofed_request(net, spoke, _Says(ExchangeType.IKE_AUTH), B)
    assert [decode_header(s.data).message_id for s in net.log if s.dst == SPOOFED] == [1]
    assert hub.remote_addr == (B, 4500) and hub.esp_remote == (B, 4500)


def test_a_nat_peer_is_not_followed_outside_remote_addrs() -> None:
    """A's connection names B in remote_addrs; B looks NAT'd to A (it forces encapsulation), so A
    follows B's requests to a new port, never to an address outside remote_addrs (as a MOBIKE update
    would be refused): counted, and not answered there (review revmobfix F1: answered, a peer that
    really moved would keep an IKE SA whose ESP goes elsewhere; test_engine_float_refused.py)."""
    net, a, b = _pair(mobike=False)
    hub, spoke = _established(a), _established(b)
    assert hub._st.nat_peer
    spoke.send_liveness()
    for sent in net.collect():
        net.deliver(dataclasses.replace(sent, src=(B, 61000)) if sent.src[0] == B else sent)
    net.run(until=net.now + 1)
    assert hub.remote_addr == (B, 61000)   # rebinding: followed
    _spoofed_request(net, spoke, _Says(ExchangeType.INFORMATIONAL), B)
    assert hub.remote_addr == (B, 61000) and a.stats.floats_refused == 1
    assert not [s for s in net.log if s.dst == SPOOFED]


def test_a_first_ike_auth_from_another_ip_than_its_ike_sa_init_is_logged_naming_both(
        caplog: pytest.LogCaptureFixture) -> None:
    """A client behind a NAT that maps port 500 and port 4500 to different public IPs (some CGNATs):
    its IKE_AUTH comes from another IP than its IKE_SA_INIT.  Not answered (an unauthenticated
    initiator could aim the answers at a victim), but an INFO line names both IPs, so the operator
    can tell it from a lost client; copies are not logged again beyond the limiter's burst."""
    net = Network()
    a = net.add(A, IkeEndpoint([eap_client()], wall_clock=lambda: EAP_NOW))
    b = net.add(B, IkeEndpoint([eap_gateway()], wall_clock=lambda: EAP_NOW))
    b.peer_logs.burst = 1   # read as the kind's limiter is made, at its first line
    a.initiate("rw", "net", net.now)
    net.step()
    net.step()
    auth = [s for s in net.collect() if s.dst[0] == B]
    with caplog.at_level(logging.INFO, "tunsec.ike.sa_responder"):
        for _ in range(3):
            for s in auth:
                net.deliver(dataclasses.replace(s, src=SPOOFED))
    assert not [s for s in net.collect() if s.dst == SPOOFED]
    assert b.stats.preauth_elsewhere == 3 * len(auth)
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(lines) == 1, lines
    assert "first IKE_AUTH from another IP than its IKE_SA_INIT: not answered" in lines[0]
    assert SPOOFED[0] in lines[0] and A in lines[0]


def test_an_unauthenticated_initiator_cannot_aim_the_first_eap_answer_at_a_victim() -> None:
    """An initiator runs IKE_SA_INIT from its own address, then sends its first IKE_AUTH, and copies
    of it, from a victim's: before authentication the gateway answers requests only from the IKE_SA_INIT's
    IP (the port may change: 500 to 4500), and copies only to where the request's answer went.  The
    victim gets nothing, the refusals are counted, and the initiator itself still gets through."""
    net = Network()
    a = net.add(A, IkeEndpoint([eap_client()], wall_clock=lambda: EAP_NOW))
    b = net.add(B, IkeEndpoint([eap_gateway()], wall_clock=lambda: EAP_NOW))
    a.initiate("rw", "net", net.now)
    net.step()   # IKE_SA_INIT request A -> B
    net.step()   # its answer B -> A
    auth = [s for s in net.collect() if s.dst[0] == B]
    assert auth and all(decode_header(s.data).exchange == ExchangeType.IKE_AUTH for s in auth)
    for _ in range(1 + 8 + 3):   # the request, then copies (past MAX_RESENDS)
        for s in auth:
            net.deliver(dataclasses.replace(s, src=SPOOFED))
    assert not [s for s in net.collect() if s.dst == SPOOFED]
    assert b.stats.preauth_elsewhere == 12 * len(auth)
    (gw,) = b.sas
    assert gw.remote_addr[0] == A and gw.state is State.CONNECTING
    # the initiator from its own address: answered; a copy from another of its ports is not
    for s in auth:
        net.deliver(s)
    assert [s.dst for s in net.collect() if s.src[0] == B] == [auth[0].src]
    for s in auth:
        net.deliver(dataclasses.replace(s, src=(A, 61001)))
    assert not net.collect() and b.stats.preauth_elsewhere == 13 * len(auth)
    for s in auth:
        net.deliver(s)   # a copy from where the answer went: answered again (it was lost)
    assert [s.dst for s in net.collect() if s.src[0] == B] == [auth[0].src]
    net.run(until=net.now + 5)
    assert _established(a).peer_id is not None and _established(b).remote_addr[0] == A
