"""MOBIKE (RFC 4555) between two engines on the fake network: negotiation, UPDATE_SA_ADDRESSES
and the return routability check, NAT detection, and what a spoofed or replayed datagram does."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
from collections.abc import Sequence

import pytest
from test_engine import A, B, initiator_cfg, only, responder_cfg
from test_engine_dynamic_ts import X
from test_engine_dynamic_ts import _up as _up_dynamic
from test_engine_eap import client as eap_client
from test_engine_eap import gateway as eap_gateway
from test_engine_eap import run as eap_run
from test_engine_vips import hosts

from tunsec.ike.constants import ExchangeType, NotifyType
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaDown, ChildSaUp, IkeSaDown, IkeSaUp, NegotiationFailed, PeerUnreachable
from tunsec.ike.exchanges import mobike
from tunsec.ike.exchanges.base import Outcome, Task, find_notify, notify
from tunsec.ike.message import NotifyPayload, Payload, decode_header
from tunsec.ike.sa import IkeSa
from tunsec.ike.state import IkeSaState, nat_hash
from tunsec.ike.testing import Network, Sent

A2, A3 = "192.0.2.11", "192.0.2.66"   # the client's new address; an attacker's
A4 = "192.0.2.12"   # the client's address after a second move
B2 = "192.0.2.3"    # another address of the gateway's
V6 = "2001:db8::11"


def _up(init_mobike: bool = True, resp_mobike: bool = True) -> tuple[Network, IkeSa, IkeSa]:
    net = Network()
    a = net.add(A, IkeEndpoint([initiator_cfg(mobike=init_mobike)]))
    b = net.add(B, IkeEndpoint([responder_cfg(mobike=resp_mobike)]))
    a.initiate("a-to-b", "net", net.now)
    net.run()
    net.take(A)
    net.take(B)
    (client,), (gateway,) = a.sas, b.sas
    return net, client, gateway


def _move(net: Network, old: str, new: str) -> None:
    """The node at ``old`` now has address ``new`` (nothing reaches ``old`` any more)."""
    net.nodes[new] = net.nodes.pop(old)
    net.events[new] = net.events.pop(old)


class _Says(Task):
    """An INFORMATIONAL request with given payloads; keeps the response."""

    exchange = ExchangeType.INFORMATIONAL

    def __init__(self, payloads: Sequence[Payload]) -> None:
        self.payloads = list(payloads)
        self.answer: Sequence[Payload] | None = None

    def build(self, st: IkeSaState) -> list[Payload]:
        return self.payloads

    def process(self, st: IkeSaState, payloads: Sequence[Payload]) -> Outcome:
        self.answer = payloads
        return Outcome.DONE


def _say(net: Network, sa: IkeSa, payloads: Sequence[Payload]) -> Sequence[Payload]:
    task = _Says(payloads)
    sa._queue.append(task)   # the test speaks through the client's own window and keys
    sa._start_next()
    sa._changed()   # the endpoint collects what it sends
    net.run(until=net.now + 1)
    assert task.answer is not None
    return task.answer


def _informational_requests(net: Network, src: str, dst: str) -> list[Sent]:
    return [s for s in net.log if s.src[0] == src and s.dst[0] == dst
            and decode_header(s.data).exchange == ExchangeType.INFORMATIONAL
            and not decode_header(s.data).is_response]


@pytest.mark.parametrize(("init", "resp"), [(True, True), (True, False), (False, True), (False, False)])
def test_mobike_is_used_only_when_both_announce_it(init: bool, resp: bool) -> None:
    net, client, gateway = _up(init, resp)
    assert client.mobike == gateway.mobike == (init and resp)
    # without MOBIKE an authenticated request from a new address moves the SA (RFC 7296 §2.23);
    # with it only UPDATE_SA_ADDRESSES does, as in strongSwan
    _move(net, A, A2)
    client.send_liveness()
    net.run(until=net.now + 1)
    assert gateway.remote_addr == ((A, 4500) if init and resp else (A2, 4500))
    assert client.update_addresses((A2, 4500)) == (init and resp)


def test_update_moves_ike_at_once_and_esp_after_the_return_routability_check() -> None:
    net, client, gateway = _up()
    _move(net, A, A2)
    assert client.update_addresses((A2, 4500))
    assert net.step()   # the UPDATE_SA_ADDRESSES request reaches the gateway
    assert gateway.remote_addr == (A2, 4500)
    assert gateway.esp_remote == (A, 4500), "ESP moved before the new address was checked"
    assert net.step()   # its response, and its COOKIE2 check to the new address
    checks = _informational_requests(net, B, A2)
    assert len(checks) == 1
    assert gateway.esp_remote == (A, 4500)
    assert net.step()   # the client answers the check
    assert gateway.esp_remote == (A2, 4500)
    net.run(until=net.now + 1)
    assert client.state.value == gateway.state.value == "established"
    assert not net.take(A2) and not net.take(B)   # no Child SA went down or was rekeyed
    assert len(gateway.children) == 1
    assert gateway.info().remote_addr == (A2, 4500)


def test_a_new_address_that_does_not_answer_never_gets_the_esp() -> None:
    """The peer claims a new address from which it cannot be reached (or which is not its own):
    the Child SAs stay at the old address; the unanswered check takes the IKE SA back there, and
    as the peer does not answer there either (it left), the IKE SA ends."""
    net, client, gateway = _up()
    _move(net, A, A2)
    net.drop = lambda s: s.dst[0] == A2   # nothing reaches the new address
    client.update_addresses((A2, 4500))
    moved = []
    for _ in range(200):
        if not net.step():
            timers = [t for t in (n.get_timer() for n in net.nodes.values()) if t is not None]
            if not timers:
                break
            net.now = min(timers)
            for node in net.nodes.values():
                node.handle_timer(net.now)
        if not gateway.is_closed and gateway.esp_remote == (A2, 4500):
            moved.append(net.now)
    assert not moved
    assert gateway.is_closed and net.nodes[B].stats.mobike_checks_failed == 1
    events = net.take(B)
    assert only(events, PeerUnreachable) and only(events, ChildSaDown) and only(events, IkeSaDown)


def test_a_forged_or_replayed_update_from_elsewhere_moves_nothing() -> None:
    net, client, gateway = _up()
    _move(net, A, A2)
    client.update_addresses((A2, 4500))
    net.run(until=net.now + 1)
    update = next(s for s in _informational_requests(net, A2, B))
    # the attacker at A3 replays the authenticated request, and sends a copy with a bad ICV
    forged = bytearray(update.data)
    forged[-1] ^= 1
    before = len(net.log)
    for data in (bytes(forged), update.data):
        net.nodes[B].receive(data, (A3, 4500), net.now, local_addr=(B, 4500))
    assert (gateway.remote_addr, gateway.esp_remote) == ((A2, 4500), (A2, 4500))
    net.run(until=net.now + 1)
    # at most the cached response again (RFC 7296 §2.1: a request with the last message ID), no new request
    assert not _informational_requests(net, B, A3)
    response = next(s.data for s in net.log[:before] if s.src[0] == B and s.dst[0] == A2
                    and decode_header(s.data).is_response)
    assert {s.data for s in net.log[before:] if s.dst[0] == A3} == {response}


def test_one_peer_never_moves_another_peers_sas() -> None:
    net = Network()
    gw = net.add(B, IkeEndpoint([responder_cfg()]))
    for ip in (A, A3):
        # two clients (no INITIAL_CONTACT: the same identity may be connected twice)
        net.add(ip, IkeEndpoint([initiator_cfg(initial_contact=False)])).initiate("a-to-b", "net", net.now)
    net.run()
    by_peer = {sa.remote_addr[0]: sa for sa in gw.sas}
    mover = net.nodes[A3].sas[0]
    _move(net, A3, A2)
    mover.update_addresses((A2, 4500))
    net.run(until=net.now + 1)
    assert by_peer[A3].esp_remote == (A2, 4500)
    assert (by_peer[A].remote_addr, by_peer[A].esp_remote) == ((A, 4500), (A, 4500))


def test_nat_detection_in_the_update_is_checked_and_answered() -> None:
    net, client, gateway = _up()
    _move(net, A, A2)
    # the client believes it is 10.0.0.5 (a NAT translates it to A2)
    client.update_addresses(("10.0.0.5", 4500))
    net.run(until=net.now + 1)
    assert gateway._st.nat_peer and not gateway._st.nat_here
    assert not client._st.nat_peer    # the gateway's hash of its own address matched
    assert gateway.esp_remote == (A2, 4500)   # ESP is in UDP anyway: a NAT changes nothing else
    # a request with NAT detection gets the gateway's hashes back: its own address and ours as it saw it
    st = client._st
    answer = _say(net, client, [notify(NotifyType.NAT_DETECTION_SOURCE_IP, nat_hash(st.spi_i, st.spi_r, (A2, 4500))),
                                notify(NotifyType.NAT_DETECTION_DESTINATION_IP, b"\0" * 20)])
    src, dst = find_notify(answer, NotifyType.NAT_DETECTION_SOURCE_IP), find_notify(
        answer, NotifyType.NAT_DETECTION_DESTINATION_IP)
    assert src is not None and src.data == nat_hash(st.spi_i, st.spi_r, (B, 4500))
    assert dst is not None and dst.data == nat_hash(st.spi_i, st.spi_r, (A2, 4500))
    assert not gateway._st.nat_peer and gateway._st.nat_here


def _no_nats(src: tuple[str, int], dst: tuple[str, int]) -> NotifyPayload:
    data = (ipaddress.ip_address(src[0]).packed + ipaddress.ip_address(dst[0]).packed
            + src[1].to_bytes(2, "big") + dst[1].to_bytes(2, "big"))
    return notify(NotifyType.NO_NATS_ALLOWED, data)


def test_no_nats_allowed() -> None:
    net, client, gateway = _up()
    _move(net, A, A2)
    # the client saw other addresses than arrived: a NAT is in the way, and it allows none
    answer = _say(net, client, [notify(NotifyType.UPDATE_SA_ADDRESSES), _no_nats(("10.0.0.5", 4500), (B, 4500))])
    assert find_notify(answer, NotifyType.UNEXPECTED_NAT_DETECTED) is not None
    assert gateway.remote_addr == (A, 4500)
    answer = _say(net, client, [notify(NotifyType.UPDATE_SA_ADDRESSES), _no_nats((A2, 4500), (B, 4500))])
    assert find_notify(answer, NotifyType.UNEXPECTED_NAT_DETECTED) is None
    assert gateway.remote_addr == (A2, 4500)


def test_cookie2_is_echoed_within_its_bounds() -> None:
    net, client, _ = _up()
    for size, echoed in ((8, True), (64, True), (7, False), (65, False)):
        answer = _say(net, client, [notify(NotifyType.COOKIE2, bytes([size]) * size)])
        got = find_notify(answer, NotifyType.COOKIE2)
        assert (got.data if got else None) == (bytes([size]) * size if echoed else None)


def test_an_address_of_another_family_is_unacceptable() -> None:
    net, client, gateway = _up()
    net.nodes[V6] = net.nodes.pop(A)
    net.events[V6] = net.events.pop(A)
    client.update_addresses()
    net.run(until=net.now + 1)
    assert gateway.remote_addr == (A, 4500)
    assert not _informational_requests(net, B, V6)   # no check: refused outright


def test_refused_moves_asked_for_again_and_again_are_logged_a_few_times(caplog: pytest.LogCaptureFixture) -> None:
    """An authenticated client asks 12 times to move to an address of another family: each refused
    (UNACCEPTABLE_ADDRESSES), 5 lines a minute logged (a fake clock); the next minute's first line
    counts the 7 held back."""
    clock = [0.0]
    net, client, gateway = _up()
    gateway._st.peer_logs.clock = lambda: clock[0]   # the gateway endpoint's limiters (peer_logs.py)
    _move(net, A, V6)

    def refused() -> list[str]:
        return [r.getMessage() for r in caplog.records if "refusing to move" in r.getMessage()]

    with caplog.at_level(logging.INFO, logger="tunsec.ike"):
        for _ in range(12):
            answer = _say(net, client, [notify(NotifyType.UPDATE_SA_ADDRESSES)])
            assert find_notify(answer, NotifyType.UNACCEPTABLE_ADDRESSES) is not None
        assert len(refused()) == 5
        clock[0] += 60.0
        _say(net, client, [notify(NotifyType.UPDATE_SA_ADDRESSES)])
    assert len(refused()) == 6 and refused()[-1].endswith("(7 more like it suppressed)")
    assert gateway.remote_addr == (A, 4500)


def test_a_fixed_remote_address_is_kept() -> None:
    net = Network()
    a = net.add(A, IkeEndpoint([initiator_cfg()]))
    b = net.add(B, IkeEndpoint([dataclasses.replace(responder_cfg(), remote_addr=A)]))
    a.initiate("a-to-b", "net", net.now)
    net.run()
    _move(net, A, A2)
    a.sas[0].update_addresses((A2, 4500))
    net.run(until=net.now + 1)
    assert b.sas[0].remote_addr == (A, 4500)


def test_address_lists_are_accepted_and_ignored() -> None:
    net, client, gateway = _up()
    answer = _say(net, client, [notify(NotifyType.ADDITIONAL_IP4_ADDRESS, bytes(4)),
                                notify(NotifyType.ADDITIONAL_IP6_ADDRESS, b"\xff" * 3),   # malformed
                                notify(NotifyType.NO_ADDITIONAL_ADDRESSES)])
    assert not [p for p in answer if isinstance(p, NotifyPayload) and p.type < 16384]
    assert gateway.state.value == "established" and gateway.remote_addr == (A, 4500)


def test_the_check_survives_an_ike_rekey() -> None:
    """The client rekeys the IKE SA while the gateway's return routability check is out: the
    new IKE SA keeps the Child SAs at the old address and checks the new one again."""
    net, client, gateway = _up()
    _move(net, A, A2)
    client.update_addresses((A2, 4500))
    assert net.step()

    def check_to_a2(s: Sent) -> bool:
        hdr = decode_header(s.data)
        return s.dst[0] == A2 and hdr.exchange == ExchangeType.INFORMATIONAL and not hdr.is_response

    net.drop = check_to_a2
    net.step()   # the check is lost
    client.rekey()
    net.run(until=net.now + 0.5)
    new = gateway.heir
    assert new is not None and gateway.is_closed
    assert new.esp_remote == (A, 4500) and new.remote_addr == (A2, 4500)
    net.drop = None
    net.run(until=net.now + 60)
    assert new.esp_remote == (A2, 4500) and len(new.children) == 1


def test_a_check_answered_on_the_rekeyed_sa_still_releases_the_successor() -> None:
    """The client's IKE rekey overtakes the answer to the gateway's check: the answer reaches the
    old IKE SA, the Child SAs belong to the new one, which must not wait for it forever."""
    net, client, gateway = _up()
    _move(net, A, A2)
    client.update_addresses((A2, 4500))
    assert net.step()          # the update reaches the gateway; its answer and its check are on the way
    client.rekey()             # queued behind the update: goes out when its answer arrives
    net.run(until=net.now + 60)
    new = gateway.heir
    assert new is not None and not new.is_closed
    assert new.esp_remote == (A2, 4500) and len(new.children) == 1


def test_mobike_is_negotiated_across_eap_rounds() -> None:
    """The client announces MOBIKE in its first IKE_AUTH request; the gateway answers in the last
    of the EAP rounds, and an update then moves the gateway's SAs."""
    net, a, b, _, _ = eap_run(eap_client(), eap_gateway("%any"))
    (cli,), (gw,) = a.sas, b.sas
    assert cli.mobike and gw.mobike
    _move(net, A, A2)
    cli.update_addresses((A2, 4500))
    net.run(until=net.now + 1)
    assert gw.esp_remote == (A2, 4500)


def test_an_update_sent_while_we_had_no_address_goes_again_when_one_comes() -> None:
    """The first update is lost (no address yet); the next address change re-sends it at once
    rather than after the retransmission backoff, and never queues a second one."""
    net, client, gateway = _up()
    _move(net, A, A2)
    net.drop = lambda s: s.src[0] == A2   # nothing leaves the client
    assert client.update_addresses()
    net.run(until=net.now + 0.1)
    assert gateway.remote_addr == (A, 4500)
    net.drop = None
    t = net.now
    assert client.update_addresses()
    assert len(client._queue) == 0   # the one in flight is sent again, no second one waits
    net.run(until=t)   # the fake clock does not move: only what is due now
    assert gateway.remote_addr == (A2, 4500)
    net.run(until=t + 1)
    assert gateway.esp_remote == (A2, 4500)


def test_the_original_initiator_sends_updates_after_the_gateway_rekeyed() -> None:
    """A rekey by the gateway makes it the new IKE SA's initiator; the client still decides on
    the addresses (RFC 4555 §3.1) and the gateway sends none."""
    net, client, gateway = _up()
    gateway.rekey()
    net.run(until=net.now + 1)
    cli, gw = client.heir, gateway.heir
    assert cli is not None and gw is not None and gw.is_initiator and not cli.is_initiator
    assert not gw.update_addresses()
    _move(net, A, A2)
    assert cli.update_addresses((A2, 4500))
    net.run(until=net.now + 1)
    assert gw.esp_remote == (A2, 4500)


@pytest.mark.parametrize("translated", [False, True])
def test_no_nats_allowed_in_the_first_ike_auth_request(monkeypatch: pytest.MonkeyPatch, translated: bool) -> None:
    """RFC 4555 §3.9: an initiator without NAT-T puts NO_NATS_ALLOWED in its first IKE_AUTH request;
    if the addresses in it are not those the request arrived with, the responder answers
    UNEXPECTED_NAT_DETECTED (to where the request came from) and no IKE SA comes up."""
    seen_src = ("10.0.0.5", 4500) if translated else (A, 4500)
    monkeypatch.setattr(mobike, "announce", lambda st: [_no_nats(seen_src, (B, 4500))])
    net = Network()
    a = net.add(A, IkeEndpoint([initiator_cfg()]))
    b = net.add(B, IkeEndpoint([responder_cfg()]))
    a.initiate("a-to-b", "net", net.now)
    net.run(until=net.now + 5)
    auth = [s for s in net.log if decode_header(s.data).exchange == ExchangeType.IKE_AUTH]
    a_events, b_events = net.take(A), net.take(B)
    if not translated:
        assert any(isinstance(ev, IkeSaUp) for ev in a_events) and any(isinstance(ev, IkeSaUp) for ev in b_events)
        return
    assert len(auth) == 2 and auth[1].dst == (A, 4500)      # one answer, to where the request came from
    assert not any(isinstance(ev, (IkeSaUp, ChildSaUp)) for ev in a_events + b_events)
    assert [ev.reason for ev in b_events if isinstance(ev, NegotiationFailed)] == ["UNEXPECTED_NAT_DETECTED"]
    assert [ev.reason for ev in a_events if isinstance(ev, NegotiationFailed)] == ["UNEXPECTED_NAT_DETECTED"]
    assert not a.sas and not b.sas


# ------------------------------------------------- review of 2026-12-03: whose answer a check counts

def _to_gateway(net: Network) -> list[Sent]:
    return [s for s in net.collect() if s.dst[0] == B]


def _deliver_from(net: Network, sent: Sequence[Sent], src: str) -> None:
    for s in sent:
        net.deliver(Sent(s.time, (src, 4500), s.dst, s.data))


def _deliver_to(net: Network, ip: str) -> None:
    for s in net.collect():
        if s.dst[0] == ip:
            net.deliver(s)


def _requests_with_id(net: Network, src: str, message_id: int) -> list[str]:
    """Where ``src`` sent its requests with ``message_id`` (each retransmission too), in order."""
    heads = [(s, decode_header(s.data)) for s in net.log if s.src[0] == src]
    return [s.dst[0] for s, h in heads if not h.is_response and h.message_id == message_id]


def test_a_check_the_peer_overtook_proves_nothing() -> None:
    """An authenticated client at A makes X (a third party) pass the check: an update from a spoofed
    X (the check goes to X, lost), one from A (ESP no longer held), the check's retransmission read
    at A and its answer held back, an update from X again, then the answer. That answer proves
    nothing; a fresh check goes to X alone; unanswered, it takes the IKE SA back to A."""
    net, client, gw = _up_dynamic(mobike=True)

    def update(src: str) -> list[Sent]:
        client.update_addresses((A, 4500))
        requests = _to_gateway(net)
        _deliver_from(net, requests, src)
        return requests

    fetch = update(X)
    net.collect()                          # the answer and the check, to X: lost
    _deliver_from(net, fetch, A)           # the client fetches the stored answer from A
    _deliver_to(net, A)
    update(A)
    _deliver_to(net, A)
    assert (gw.remote_addr, gw.esp_remote) == ((A, 4500), (A, 4500))
    net.now += 10
    net.nodes[B].handle_timer(net.now)     # the check goes on, to where the peer is now
    _deliver_to(net, A)
    held = _to_gateway(net)
    assert held and all(decode_header(s.data).is_response for s in held)
    fetch = update(X)
    net.collect()
    assert (gw.remote_addr, gw.esp_remote) == ((X, 4500), (A, 4500))
    for s in held:
        net.deliver(s)
    fresh = [s for s in net.collect() if s.src[0] == B]
    assert [s.dst[0] for s in fresh] == [X]   # a fresh check, to X only
    _deliver_from(net, fetch, A)
    _deliver_to(net, A)
    assert gw.esp_remote == (A, 4500) and gw._st.proven_addr == A
    client.initiate("net")                 # a new Child SA: the gateway's remote_ts is dynamic
    _deliver_from(net, _to_gateway(net), A)
    net.run(until=net.now + 1)
    (up,) = only(net.take(B), ChildSaUp)
    assert up.remote_ts == hosts(A) and up.remote_addr == (A, 4500)
    net.run(until=net.now + 600)
    tries = gw.config.retransmit.tries
    # the fresh check: its cookie went to X alone; unanswered, the request went on to A
    sent_to = _requests_with_id(net, B, decode_header(fresh[0].data).message_id)
    assert sent_to[: tries + 1] == [X] * (tries + 1) and set(sent_to[tries + 1:]) == {A}
    assert (gw.remote_addr, gw.esp_remote, gw.state.value) == ((A, 4500), (A, 4500), "established")
    assert net.nodes[B].stats.mobike_checks_failed == 1
    assert not only(net.take(B), IkeSaDown)


def test_an_injected_copy_of_the_update_leaves_the_ike_sa_up() -> None:
    """An on-path attacker that cannot drop injects a copy of the client's UPDATE_SA_ADDRESSES from
    a made-up source ahead of the genuine one (a retransmission then, answered, moving nothing): the
    check goes there and is never answered. The IKE SA goes back to A instead of closing."""
    net, client, gw = _up()
    client.update_addresses((A, 4500))
    requests = _to_gateway(net)
    _deliver_from(net, requests, A3)   # the injected copy, first
    for s in requests:
        net.deliver(s)                 # the genuine one
    net.run(until=net.now + 300)
    assert not only(net.take(B), IkeSaDown)
    assert (gw.remote_addr, gw.esp_remote) == ((A, 4500), (A, 4500))
    assert net.nodes[B].stats.mobike_checks_failed == 1
    assert client.state.value == gw.state.value == "established"
    # the unanswered request went on to A: the peers' windows are in step, the next request is answered
    gw.send_liveness()
    net.run(until=net.now + 300)
    assert not gw.is_closed and not only(net.take(B), PeerUnreachable)


def test_an_injected_copy_to_another_of_our_addresses_leaves_esp_leaving_from_ours() -> None:
    """The same, the copy sent to another of the gateway's addresses (B2; no local_addrs, so the IKE SA
    follows the address a request came in on): the IKE SA goes back to A and to B, so the Child SAs
    keep sending from B (IkeSa.local_ip and local_port are what the IKE service moves them to)."""
    net = Network()
    a = net.add(A, IkeEndpoint([initiator_cfg()]))
    b = net.add(B, IkeEndpoint([responder_cfg(local_addr=None)]))
    a.initiate("a-to-b", "net", net.now)
    net.run()
    net.take(A)
    net.take(B)
    (client,), (gw,) = a.sas, b.sas
    assert (gw.local_ip, gw.local_port) == (B, 4500)
    client.update_addresses((A, 4500))
    requests = _to_gateway(net)
    for s in requests:   # the injected copy, first, to B2
        b.receive(s.data, (A3, 4500), net.now, local_addr=(B2, 4500))
    assert (gw.remote_addr, gw.local_ip) == ((A3, 4500), B2)
    assert (gw.esp_remote, gw.esp_local) == ((A, 4500), (B, 4500))   # ESP waits for the check at both ends
    for s in requests:
        net.deliver(s)                 # the genuine one
    net.run(until=net.now + 300)
    assert not only(net.take(B), IkeSaDown)
    assert net.nodes[B].stats.mobike_checks_failed == 1
    assert (gw.remote_addr, gw.esp_remote) == ((A, 4500), (A, 4500))
    assert (gw.local_ip, gw.local_port) == gw.esp_local == (B, 4500)
    gw.send_liveness()
    net.run(until=net.now + 300)
    assert not gw.is_closed and not only(net.take(B), PeerUnreachable)


def test_a_peer_that_moves_on_before_the_check_arrives_is_checked_where_it_went() -> None:
    """A legitimate client: A to A2 (its update answered there), then on to A4 before the check to
    A2 arrives. The check overtaken goes on to A4, proves nothing, and a fresh one moves ESP there."""
    net, client, gw = _up()
    _move(net, A, A2)
    client.update_addresses((A2, 4500))
    assert net.step()   # the update reaches the gateway
    net.drop = lambda s: s.dst[0] == A2 and not decode_header(s.data).is_response
    assert net.step()   # its answer reaches the client; the check is lost
    net.drop = None
    _move(net, A2, A4)
    client.update_addresses((A4, 4500))
    net.run(until=net.now + 60)
    assert (gw.remote_addr, gw.esp_remote) == ((A4, 4500), (A4, 4500))
    assert gw._st.proven_addr == A4 and net.nodes[B].stats.mobike_checks_failed == 0
    assert len(gw.children) == 1 and not net.take(B)


# ------------------------------------------------- review E: our other requests while the new address is unproven

def _answered_by_client(net: Network, message_id: int) -> list[str]:
    """Where the client's answers to the gateway's request ``message_id`` came from."""
    heads = [(s, decode_header(s.data)) for s in net.log if s.dst[0] == B and not s.dropped]
    return [s.src[0] for s, h in heads if h.is_response and h.message_id == message_id]


@pytest.mark.parametrize("queued", ["invalid_spi", "rekey_child"])
def test_a_request_queued_behind_an_injected_update_goes_to_the_proven_address(queued: str) -> None:
    """revE: an injected copy of the client's update (from made-up A3) arrives while our DPD is in
    flight and another request of ours waits (an INVALID_SPI notify, which anyone spoofing ESP from
    the client can cause, or a Child SA rekey). The check goes ahead of the queued request, so
    nothing else goes to A3; unanswered there, the IKE SA goes back to A and the queued request is
    answered there. It used to be sent to A3 and close the IKE SA as unreachable."""
    net, client, gw = _up()
    client.update_addresses((A, 4500))       # the client's genuine update (it did not move)
    requests = _to_gateway(net)
    gw.send_liveness()                       # in flight to A: our window is busy
    if queued == "invalid_spi":
        assert gw.send_invalid_spi(0x1234)
    else:
        (old,) = gw.children
        gw.rekey_child(old.unique_id)
    _deliver_from(net, requests, A3)         # the injected copy, first
    for s in requests:
        net.deliver(s)                       # the genuine one (a retransmission now)
    sent: dict[int, set[str]] = {}           # the gateway's requests: message ID -> task

    def note(s: Sent) -> bool:
        head = decode_header(s.data)
        if s.src[0] == B and not head.is_response and gw._pending is not None:
            sent.setdefault(head.message_id, set()).add(type(gw._pending.task).__name__)
        return False

    net.drop = note
    net.run(until=net.now + 600)
    assert not gw.is_closed and not only(net.take(B), IkeSaDown)
    assert (gw.remote_addr, gw.esp_remote) == ((A, 4500), (A, 4500))
    assert net.nodes[B].stats.mobike_checks_failed == 1
    tries = gw.config.retransmit.tries
    # the check went first, to A3 alone; unanswered, on to A; then the queued request, to A alone
    assert sent[1] == {"ReturnRoutabilityTask"} and sent[2] != {"ReturnRoutabilityTask"}
    assert _requests_with_id(net, B, 1) == [A3] * (tries + 1) + [A]
    assert _requests_with_id(net, B, 2) == [A] and _answered_by_client(net, 2) == [A]
    assert gw._pending is None and not gw._queue
    if queued == "rekey_child":   # done: one new Child SA on both sides
        (new,), (theirs,) = gw.children, client.children
        assert new.spi_in != old.spi_in and theirs.spi_out == new.spi_in


def test_a_request_in_flight_when_an_injected_update_moved_the_sa_goes_back_to_the_proven_address() -> None:
    """revE: our DPD was sent to A and lost; then an injected copy of the client's update moves the
    IKE SA to A3, where the DPD's retransmissions go. Unanswered there, it takes the IKE SA back to A
    (whichever request it is, not only the check) and starts again there from its first try with
    the same message ID: answered, the SA stays up, and the check that waited follows at A."""
    net, client, gw = _up()
    gw.send_liveness()
    net.collect()                            # the DPD's first try, to A: lost
    client.update_addresses((A, 4500))
    requests = _to_gateway(net)
    _deliver_from(net, requests, A3)
    for s in requests:
        net.deliver(s)
    net.run(until=net.now + 600)
    tries = gw.config.retransmit.tries
    dpd = _requests_with_id(net, B, 0)
    assert dpd == [A] + [A3] * tries + [A]   # back to A, from the first try, same message ID
    assert _answered_by_client(net, 0) == [A]
    assert not gw.is_closed and not only(net.take(B), PeerUnreachable)
    assert (gw.remote_addr, gw.esp_remote) == ((A, 4500), (A, 4500))
    assert net.nodes[B].stats.mobike_checks_failed == 1
    assert _requests_with_id(net, B, 1) == [A] and _answered_by_client(net, 1) == [A]   # the check, now moot
    gw.send_liveness()                       # the windows are in step: the next request is answered
    net.run(until=net.now + 300)
    assert _answered_by_client(net, 2) == [A] and not gw.is_closed
