"""Engine pairs: INVALID_KE_PAYLOAD, COOKIE, certificates, CREATE_CHILD_SA, robustness."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.constants import ExchangeType, NotifyType
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import (
    AuthFailed,
    ChildSaDown,
    ChildSaUp,
    DownReason,
    Event,
    IkeSaUp,
    NegotiationFailed,
    SpiUnused,
)
from tunsec.ike.exchanges.create_child_sa import MAX_RETRIES
from tunsec.ike.identity import Identity
from tunsec.ike.message import NotifyPayload, decode_header, decode_message
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.secret import Secret
from tunsec.ike.state import SpiUnavailable
from tunsec.ike.testing import EPOCH, Issued, Network, Sent, make_ca, make_cert

A, B, C = "192.0.2.1", "192.0.2.2", "192.0.2.3"
PSK = Secret(b"a shared secret of some length")
E = TypeVar("E")
NOW = EPOCH + datetime.timedelta(days=30)


def only(events: list[Event], kind: type[E]) -> list[E]:
    return [e for e in events if isinstance(e, kind)]


def cfg(initiator: bool, proposals: str = "aes256gcm16-prfsha384-ecp384", **kw: Any) -> IkeConfig:
    local_ts, remote_ts = ("10.1.0.0/16", "10.2.0.0/16") if initiator else ("10.2.0.0/16", "10.1.0.0/16")
    esp = kw.pop("esp", "aes128gcm16")
    children = (
        child_config("net", local_ts, remote_ts, esp),
        child_config("web", local_ts.replace("0.0/16", "9.0/24"), remote_ts.replace("0.0/16", "9.0/24"), esp),
    )
    ids = ("moon.example", "sun.example") if initiator else ("sun.example", "moon.example")
    base = IkeConfig(
        "conn",
        LocalAuth("psk", Identity.parse(ids[0])),
        RemoteAuth("psk", Identity.parse(ids[1])),
        parse_proposals(proposals),
        children,
        psk=PSK,
        local_addr=A if initiator else B,
        remote_addr=B if initiator else None,
    )
    return dataclasses.replace(base, **kw)


def net_of(a_cfg: IkeConfig, b_cfg: IkeConfig, **endpoint_kw: Any) -> tuple[Network, IkeEndpoint, IkeEndpoint]:
    net = Network()
    a = net.add(A, IkeEndpoint([a_cfg], wall_clock=lambda: NOW))
    b = net.add(B, IkeEndpoint([b_cfg], wall_clock=lambda: NOW, **endpoint_kw))
    return net, a, b


def notifies(data: bytes) -> list[int]:
    return [p.type for p in decode_message(data).payloads if isinstance(p, NotifyPayload)]


# ------------------------------------------------------------------ INVALID_KE and COOKIE


def test_invalid_ke_retry_with_requested_group() -> None:
    net, a, b = net_of(
        cfg(True, "aes256gcm16-prfsha384-ecp256-ecp384"),
        cfg(False, "aes256gcm16-prfsha384-ecp384"),
    )
    a.initiate("conn", "net", net.now)
    net.run()
    assert only(net.take(A), ChildSaUp) and only(net.take(B), ChildSaUp)
    assert NotifyType.INVALID_KE_PAYLOAD in notifies(net.log[1].data)
    retry = decode_message(net.log[2].data)
    assert retry.message_id == 0
    ke = next(p for p in retry.payloads if type(p).__name__ == "KePayload")
    assert ke.group == 20  # type: ignore[union-attr]
    assert len(b.sas) == 1 and net.now == 0.0


def test_common_group_in_ke_avoids_invalid_ke() -> None:
    net, a, _ = net_of(
        cfg(True, "aes256gcm16-prfsha384-ecp256-ecp384"),
        cfg(False, "aes256gcm16-prfsha384-ecp384-ecp256"),
    )
    a.initiate("conn", "net", net.now)
    net.run()
    assert only(net.take(A), ChildSaUp)
    assert len(net.log) == 4  # the responder took the initiator's KE group (ecp256)


def test_cookie_demanded_and_answered() -> None:
    net, a, b = net_of(cfg(True), cfg(False), cookie_threshold=0)
    a.initiate("conn", "net", net.now)
    net.run()
    assert only(net.take(A), ChildSaUp) and only(net.take(B), ChildSaUp)
    first_reply = decode_message(net.log[1].data)
    assert [p.type for p in first_reply.payloads] == [NotifyType.COOKIE]  # type: ignore[union-attr]
    assert first_reply.spi_r == bytes(8)
    retry = decode_message(net.log[2].data)
    assert isinstance(retry.payloads[0], NotifyPayload) and retry.payloads[0].type == NotifyType.COOKIE
    assert retry.spi_i == decode_message(net.log[0].data).spi_i
    assert len(b.sas) == 1


def test_cookie_and_invalid_ke_together() -> None:
    net, a, _b = net_of(
        cfg(True, "aes256gcm16-prfsha384-ecp256-curve25519"),
        cfg(False, "aes256gcm16-prfsha384-curve25519"),
        cookie_threshold=0,
    )
    a.initiate("conn", "net", net.now)
    net.run()
    assert only(net.take(A), ChildSaUp)
    exchanges = [decode_header(s.data).exchange for s in net.log]
    assert exchanges.count(ExchangeType.IKE_SA_INIT) == 6  # cookie, INVALID_KE (with cookie), success


def test_no_state_for_requests_without_cookie() -> None:
    net, a, b = net_of(cfg(True), cfg(False), cookie_threshold=0)
    a.initiate("conn", "net", net.now)
    # deliver only the first request to the responder
    first = a.datagrams_to_send(net.now)[0]
    b.receive(first.data, (A, 500), net.now)
    assert not b.sas and b.half_open == 0
    forged = bytearray(first.data)
    b.receive(bytes(forged), (A, 500), net.now)
    assert not b.sas


def test_half_open_timeout() -> None:
    net, a, b = net_of(cfg(True), cfg(False))
    net.drop = lambda sent: sent.src[0] == A and sent.dst[1] == 4500  # IKE_AUTH never arrives
    a.initiate("conn", "net", net.now)
    net.run(until=31.0)
    assert not b.sas
    assert b.half_open == 0


# ------------------------------------------------------------------ certificates


def pubkey_cfg(initiator: bool, me: Issued, ca: Issued, my_id: str, peer_id: str, **kw: Any) -> IkeConfig:
    return cfg(
        initiator,
        psk=None,
        local=LocalAuth("pubkey", Identity.parse(my_id), me.cert, (), me.key, **kw),
        remote=RemoteAuth("pubkey", Identity.parse(peer_id), (ca.cert,)),
    )


@pytest.mark.parametrize("kind", ["rsa", "ecdsa", "ecdsa384"])
def test_certificate_auth(kind: str) -> None:
    ca = make_ca(kind=kind)
    moon = make_cert(ca, "moon", ["moon.example"], kind=kind)
    sun = make_cert(ca, "sun", ["sun.example"], kind=kind)
    net, a, _ = net_of(
        pubkey_cfg(True, moon, ca, "moon.example", "sun.example"),
        pubkey_cfg(False, sun, ca, "sun.example", "moon.example"),
    )
    a.initiate("conn", "net", net.now)
    net.run()
    ev_a, ev_b = net.take(A), net.take(B)
    assert only(ev_a, ChildSaUp) and only(ev_b, ChildSaUp), (ev_a, ev_b)
    # RFC 7427 (method 14) since both announced SIGNATURE_HASH_ALGORITHMS
    assert NotifyType.SIGNATURE_HASH_ALGORITHMS in notifies(net.log[0].data)


def test_certificate_auth_dn_ids_intermediate_and_pss() -> None:
    root = make_ca(kind="rsa")
    inter = make_ca("sub CA", kind="rsa", issuer=root)
    moon = make_cert(inter, "moon", kind="rsa")
    sun = make_cert(root, "sun", kind="ecdsa")
    init = pubkey_cfg(True, moon, root, "C=CH, O=tunsec test, CN=moon", "C=CH, O=tunsec test, CN=sun", rsa_pss=True)
    init = dataclasses.replace(init, local=dataclasses.replace(init.local, intermediates=(inter.cert,)))
    resp = pubkey_cfg(False, sun, root, "C=CH, O=tunsec test, CN=sun", "%any")
    net, a, _ = net_of(init, resp)
    a.initiate("conn", "net", net.now)
    net.run()
    ups = only(net.take(B), IkeSaUp)
    assert ups and str(ups[0].remote_id) == "C=CH, O=tunsec test, CN=moon"


def test_untrusted_certificate_fails_on_both_sides() -> None:
    ca, rogue = make_ca(), make_ca("rogue CA")
    moon = make_cert(rogue, "moon", ["moon.example"])
    sun = make_cert(ca, "sun", ["sun.example"])
    net, a, _ = net_of(
        pubkey_cfg(True, moon, ca, "moon.example", "sun.example"),
        pubkey_cfg(False, sun, ca, "sun.example", "moon.example"),
    )
    a.initiate("conn", "net", net.now)
    net.run()
    fa, fb = only(net.take(A), AuthFailed), only(net.take(B), AuthFailed)
    assert fa[0].by_peer and not fb[0].by_peer and "not trusted" in fb[0].reason


def test_initiator_rejects_responder_certificate() -> None:
    ca, rogue = make_ca(), make_ca("rogue CA")
    moon = make_cert(ca, "moon", ["moon.example"])
    sun = make_cert(rogue, "sun", ["sun.example"])
    net, a, b = net_of(
        pubkey_cfg(True, moon, ca, "moon.example", "sun.example"),
        pubkey_cfg(False, sun, ca, "sun.example", "moon.example"),
    )
    a.initiate("conn", "net", net.now)
    net.run()
    ev_a, ev_b = net.take(A), net.take(B)
    assert not only(ev_a, AuthFailed)[0].by_peer
    assert only(ev_b, AuthFailed)[0].by_peer  # told by the INFORMATIONAL AUTHENTICATION_FAILED
    assert not a.sas and not b.sas


def test_mixed_pubkey_and_psk() -> None:
    ca = make_ca()
    sun = make_cert(ca, "sun", ["sun.example"])
    init = dataclasses.replace(cfg(True), remote=RemoteAuth("pubkey", Identity.parse("sun.example"), (ca.cert,)))
    resp = dataclasses.replace(
        cfg(False), local=LocalAuth("pubkey", Identity.parse("sun.example"), sun.cert, (), sun.key)
    )
    net, a, _ = net_of(init, resp)
    a.initiate("conn", "net", net.now)
    net.run()
    assert only(net.take(A), ChildSaUp)


# ------------------------------------------------------------------ CREATE_CHILD_SA


def _established(esp: str = "aes128gcm16") -> tuple[Network, IkeEndpoint, IkeEndpoint]:
    net, a, b = net_of(cfg(True, esp=esp), cfg(False, esp=esp))
    a.initiate("conn", "net", net.now)
    net.run()
    assert only(net.take(A), ChildSaUp) and only(net.take(B), ChildSaUp)
    return net, a, b


@pytest.mark.parametrize("esp", ["aes128gcm16", "aes256gcm16-ecp256", "aes128gcm16-curve25519"])
def test_additional_child_sa(esp: str) -> None:
    net, a, _b = _established(esp)
    a.sas[0].initiate("web")
    net.run()
    ca, cb = only(net.take(A), ChildSaUp), only(net.take(B), ChildSaUp)
    assert len(ca) == 1 and len(cb) == 1
    assert (
        ca[0].child == "web"
        and ca[0].name == "conn"
        and ca[0].key_in == cb[0].key_out
        and ca[0].key_out == cb[0].key_in
    )
    assert [str(t) for t in ca[0].local_ts] == ["10.1.9.0/24"]
    assert len(a.sas[0].children) == 2


def test_responder_initiates_child_sa() -> None:
    net, _a, b = _established()
    b.sas[0].initiate("web")
    net.run()
    assert len(only(net.take(A), ChildSaUp)) == 1 and len(only(net.take(B), ChildSaUp)) == 1


@pytest.mark.parametrize("side", ["initiator", "responder"])
def test_rekey_child_sa(side: str) -> None:
    net, a, b = _established("aes128gcm16-ecp256")
    sa = (a if side == "initiator" else b).sas[0]
    old = sa.children[0]
    sa.rekey_child(old.unique_id)
    net.run()
    for ip in (A, B):
        events = net.take(ip)
        ups, downs = only(events, ChildSaUp), only(events, ChildSaDown)
        assert len(ups) == 1 and len(downs) == 1
        assert ups[0].rekey_of is not None and downs[0].reason is DownReason.REKEYED
        # the service orders its installs by this: who sent the CREATE_CHILD_SA request
        assert ups[0].initiator is ((ip == A) == (side == "initiator"))
        assert events.index(ups[0]) < events.index(downs[0])  # make before break
    assert len(a.sas[0].children) == 1 and a.sas[0].children[0].unique_id != old.unique_id


def test_create_child_no_proposal() -> None:
    net, a, b = _established()
    b.sas[0]._st.config = dataclasses.replace(  # the responder's policy changed meanwhile
        b.sas[0]._st.config, children=(child_config("web", "10.2.9.0/24", "10.1.9.0/24", "aes256gcm16"),)
    )
    a.sas[0].initiate("web")
    net.run()
    fa, fb = only(net.take(A), NegotiationFailed), only(net.take(B), NegotiationFailed)
    assert fa[0].reason == fb[0].reason == "NO_PROPOSAL_CHOSEN"
    assert len(a.sas) == 1


def test_spi_allocator_exhausted() -> None:
    def empty() -> int:
        raise SpiUnavailable("pool empty")

    net = Network()
    a = net.add(A, IkeEndpoint([cfg(True)]))
    net.add(B, IkeEndpoint([cfg(False)], spi_allocator=empty))
    a.initiate("conn", "net", net.now)
    net.run()
    ev_a, ev_b = net.take(A), net.take(B)
    assert only(ev_a, IkeSaUp) and only(ev_b, IkeSaUp)
    # A asks again (test_child_retry), a bounded number of times, then reports the failure once
    assert [f.reason for f in only(ev_a, NegotiationFailed)] == ["TEMPORARY_FAILURE"]
    assert only(ev_b, NegotiationFailed)[0].reason == "TEMPORARY_FAILURE"
    assert len(only(ev_a, SpiUnused)) == 1 + MAX_RETRIES   # each try's inbound SPI goes back


# ------------------------------------------------------------------ robustness


def test_garbage_and_replays_are_ignored() -> None:
    net, _a, b = _established()
    sa_b = b.sas[0]
    for sent in list(net.log):
        b.receive(sent.data, sent.src, net.now)  # replays of everything
        b.receive(sent.data[:-1], sent.src, net.now)
        b.receive(b"\x00" * 40, sent.src, net.now)
        tampered = bytearray(sent.data)
        tampered[-1] ^= 0xFF
        b.receive(bytes(tampered), sent.src, net.now)
    net.run()
    assert not only(net.take(B), ChildSaUp) and not net.take(A)
    assert sa_b.children and not sa_b.is_closed


# ------------------------------------------------------------------ IKE SA rekeying


@pytest.mark.parametrize("side", ["initiator", "responder"])
def test_rekey_ike_sa(side: str) -> None:
    net, a, b = _established("aes128gcm16-ecp256")
    old_a, old_b = a.sas[0], b.sas[0]
    child_ids = [c.unique_id for c in old_a.children]
    (old_a if side == "initiator" else old_b).rekey()
    net.run()
    ev_a, ev_b = net.take(A), net.take(B)
    for events in (ev_a, ev_b):
        assert [type(e).__name__ for e in events] == ["IkeSaRekeyed"]
    assert old_a.is_closed and old_b.is_closed
    new_a, new_b = a.sas[0], b.sas[0]
    assert len(a.sas) == 1 and len(b.sas) == 1
    assert (new_a.spi_i, new_a.spi_r) == (new_b.spi_i, new_b.spi_r) != (old_a.spi_i, old_a.spi_r)
    assert new_a.is_initiator == (side == "initiator")
    assert [c.unique_id for c in new_a.children] == child_ids
    # the new IKE SA works: a Child SA rekey and a delete run over it
    new_b.rekey_child(new_b.children[0].unique_id)
    net.run()
    assert len(only(net.take(A), ChildSaUp)) == 1 and len(only(net.take(B), ChildSaUp)) == 1
    new_a.delete()
    net.run()
    assert [type(e).__name__ for e in net.take(B)] == ["ChildSaDown", "IkeSaDown"]


def test_rekey_ike_sa_with_invalid_ke() -> None:
    net, a, b = net_of(
        cfg(True, "aes256gcm16-prfsha384-ecp256-ecp384"), cfg(False, "aes256gcm16-prfsha384-ecp384-ecp256")
    )
    a.initiate("conn", "net", net.now)
    net.run()
    net.take(A), net.take(B)
    # the responder's policy now wants ecp384 first and no longer accepts ecp256
    b.sas[0]._st.config = dataclasses.replace(
        b.sas[0]._st.config, proposals=parse_proposals("aes256gcm16-prfsha384-ecp384")
    )
    a.sas[0].rekey()
    net.run()
    assert [type(e).__name__ for e in net.take(A)] == ["IkeSaRekeyed"]
    assert a.sas[0]._st.suite is not None and a.sas[0]._st.suite.dh_group == 20


# ------------------------------------------------------------------ several connections, INITIAL_CONTACT


def test_responder_picks_connection_by_identity() -> None:
    carol_psk = Secret(b"carol's own secret")
    carol = dataclasses.replace(
        cfg(True), name="carol", local=LocalAuth("psk", Identity.parse("carol@example")), psk=carol_psk
    )
    moon_conn = dataclasses.replace(cfg(False), name="for-moon")
    carol_conn = dataclasses.replace(
        cfg(False), name="for-carol", remote=RemoteAuth("psk", Identity.parse("carol@example")), psk=carol_psk
    )
    net = Network()
    a = net.add(A, IkeEndpoint([carol, cfg(True)]))
    b = net.add(B, IkeEndpoint([moon_conn, carol_conn]))
    a.initiate("carol", "net", net.now)
    a.initiate("conn", "net", net.now)
    net.run()
    ups = only(net.take(B), IkeSaUp)
    assert sorted((u.name, str(u.remote_id)) for u in ups) == [
        ("for-carol", "carol@example"),
        ("for-moon", "moon.example"),
    ]
    assert sorted(sa.config.name for sa in b.sas) == ["for-carol", "for-moon"]


def test_initial_contact_replaces_old_sa() -> None:
    net, _a, b = _established()
    old_b = b.sas[0]
    # the initiator "reboots": a fresh endpoint with the same identity connects again
    net.nodes[A] = IkeEndpoint([cfg(True)], wall_clock=lambda: NOW)
    net.nodes[A].initiate("conn", "net", net.now)
    net.run()
    events = net.take(B)
    assert [type(e).__name__ for e in events] == ["IkeSaUp", "ChildSaUp", "ChildSaDown", "IkeSaDown"]
    assert events[0].initial_contact  # type: ignore[union-attr]
    assert events[3].reason is DownReason.REPLACED  # type: ignore[union-attr]
    assert old_b.is_closed and len(b.sas) == 1


def test_initial_contact_ignored_with_unique_never() -> None:
    """unique = never (initial_contact off on B's connection): strongSwan ignores INITIAL_CONTACT too."""
    net = Network()
    net.add(A, IkeEndpoint([cfg(True)], wall_clock=lambda: NOW))
    b = net.add(B, IkeEndpoint([cfg(False, initial_contact=False)], wall_clock=lambda: NOW))
    net.nodes[A].initiate("conn", "net", net.now)
    net.run()
    net.take(B)
    net.nodes[A] = IkeEndpoint([cfg(True)], wall_clock=lambda: NOW)
    net.nodes[A].initiate("conn", "net", net.now)
    net.run()
    events = net.take(B)
    assert [type(e).__name__ for e in events] == ["IkeSaUp", "ChildSaUp"]
    assert events[0].initial_contact  # type: ignore[union-attr]
    assert len(b.sas) == 2


def _keep_gateway(unique_keep: bool = True) -> tuple[Network, IkeEndpoint]:
    """B with unique = keep, and moon (same identity) established from A."""
    net = Network()
    net.add(A, IkeEndpoint([cfg(True, initial_contact=False)], wall_clock=lambda: NOW))
    b = net.add(B, IkeEndpoint([cfg(False)], wall_clock=lambda: NOW, unique_keep=lambda name: unique_keep))
    net.nodes[A].initiate("conn", "net", net.now)
    net.run()
    assert only(net.take(B), IkeSaUp)
    return net, b


def test_unique_keep_refuses_a_duplicate_in_ike_auth() -> None:
    """unique = keep: moon's identity has an IKE SA from A; the same identity from C is refused
    with AUTHENTICATION_FAILED in IKE_AUTH (as strongSwan): no IkeSaUp, no Child SA at B."""
    net, b = _keep_gateway()
    c = net.add(C, IkeEndpoint([cfg(True, initial_contact=False, local_addr=C)], wall_clock=lambda: NOW))
    c.initiate("conn", "net", net.now)
    net.run()
    at_b, at_c = net.take(B), net.take(C)
    assert [type(e).__name__ for e in at_b] == ["AuthFailed"]     # it never came up: no IkeSaDown either
    assert "already has an IKE SA from 192.0.2.1 (unique = keep)" in at_b[0].reason  # type: ignore[union-attr]
    assert only(at_c, AuthFailed) and only(at_c, AuthFailed)[0].by_peer and not only(at_c, ChildSaUp)
    assert [sa.remote_addr[0] for sa in b.sas] == [A] and len(b.sas[0].children) == 1


def test_unique_keep_yields_to_initial_contact_and_is_per_connection() -> None:
    """INITIAL_CONTACT (the peer rebooted) replaces the old SA even with unique = keep; without
    unique = keep a duplicate from another address comes up."""
    net, b = _keep_gateway()
    c = net.add(C, IkeEndpoint([cfg(True, local_addr=C)], wall_clock=lambda: NOW))   # sends INITIAL_CONTACT
    c.initiate("conn", "net", net.now)
    net.run()
    assert [type(e).__name__ for e in net.take(B)] == ["IkeSaUp", "ChildSaUp", "ChildSaDown", "IkeSaDown"]
    assert [sa.remote_addr[0] for sa in b.sas] == [C]

    net, b = _keep_gateway(unique_keep=False)
    c = net.add(C, IkeEndpoint([cfg(True, initial_contact=False, local_addr=C)], wall_clock=lambda: NOW))
    c.initiate("conn", "net", net.now)
    net.run()
    assert [type(e).__name__ for e in net.take(B)] == ["IkeSaUp", "ChildSaUp"]
    assert sorted(sa.remote_addr[0] for sa in b.sas) == [A, C]


# ------------------------------------------------------------------ timers: rekey and DPD


def _with_child_rekey(c: IkeConfig, seconds: float) -> IkeConfig:
    return dataclasses.replace(c, children=tuple(dataclasses.replace(ch, rekey_time=seconds) for ch in c.children))


def test_child_rekey_timer() -> None:
    net, a, _ = net_of(_with_child_rekey(cfg(True), 100.0), cfg(False))
    a.initiate("conn", "net", net.now)
    net.run(until=101.0)
    net.take(B)
    events = net.take(A)
    ups = only(events, ChildSaUp)
    assert len(ups) == 2 and ups[1].rekey_of == ups[0].unique_id
    assert only(events, ChildSaDown)[0].reason is DownReason.REKEYED
    rekey_time = next(s.time for s in net.log if decode_header(s.data).exchange == ExchangeType.CREATE_CHILD_SA)
    assert 90.0 <= rekey_time <= 100.0  # jittered by up to 10 %
    net.run(until=205.0)
    assert len(only(net.take(A), ChildSaUp)) == 1  # and again for the new one


def test_ike_rekey_timer() -> None:
    net, a, b = net_of(dataclasses.replace(cfg(True), rekey_time=200.0), cfg(False))
    a.initiate("conn", "net", net.now)
    net.run(until=201.0)
    assert [type(e).__name__ for e in net.take(A)][-1] == "IkeSaRekeyed"
    assert [type(e).__name__ for e in net.take(B)][-1] == "IkeSaRekeyed"
    assert len(a.sas) == 1 and len(b.sas) == 1 and a.sas[0].children


def test_dpd_keeps_checking_and_detects_a_dead_peer() -> None:
    net, a, _ = net_of(dataclasses.replace(cfg(True), dpd_delay=30.0), cfg(False))
    a.initiate("conn", "net", net.now)
    net.run(until=100.0)
    informational = [s for s in net.log if decode_header(s.data).exchange == ExchangeType.INFORMATIONAL]
    assert [round(s.time) for s in informational] == [30, 30, 60, 60, 90, 90]
    net.take(A)
    net.drop = lambda sent: True
    net.run(until=400.0)
    events = net.take(A)
    assert [type(e).__name__ for e in events] == ["PeerUnreachable", "ChildSaDown", "IkeSaDown"]


def test_create_child_invalid_ke_retry() -> None:
    net, a, _ = net_of(cfg(True, esp="aes128gcm16-ecp256-curve25519"), cfg(False, esp="aes128gcm16-curve25519"))
    a.initiate("conn", "net", net.now)
    net.run()
    net.take(A), net.take(B)
    a.sas[0].initiate("web")
    net.run()
    ca, cb = only(net.take(A), ChildSaUp), only(net.take(B), ChildSaUp)
    assert len(ca) == 1 and len(cb) == 1 and ca[0].key_in == cb[0].key_out
    ids = [decode_header(s.data).message_id for s in net.log if decode_header(s.data).exchange == 36]
    assert ids == [2, 2, 3, 3]  # the retry is a new exchange with the group the responder asked for


@pytest.mark.parametrize("seed", range(6))
def test_simultaneous_child_rekey_leaves_one_pair(seed: int) -> None:
    allocated: dict[str, list[int]] = {A: [], B: []}

    def allocator(ip: str) -> Callable[[], int]:
        def allocate() -> int:
            allocated[ip].append(0x1000 + len(allocated[A]) + len(allocated[B]) + (0x10000 if ip == B else 0))
            return allocated[ip][-1]

        return allocate

    net = Network()
    a = net.add(A, IkeEndpoint([cfg(True)], spi_allocator=allocator(A)))
    b = net.add(B, IkeEndpoint([cfg(False)], spi_allocator=allocator(B)))
    a.initiate("conn", "net", net.now)
    net.run()
    seen = {"n": 0}

    def drop(sent: Sent) -> bool:  # vary the interleaving by losing the seed-th CREATE_CHILD_SA message
        if decode_header(sent.data).exchange != ExchangeType.CREATE_CHILD_SA:
            return False
        seen["n"] += 1
        return seen["n"] == seed

    net.drop = drop
    sa_a, sa_b = a.sas[0], b.sas[0]
    sa_a.rekey_child(sa_a.children[0].unique_id)
    sa_b.rekey_child(sa_b.children[0].unique_id)
    net.run()
    ca, cb = sa_a.children, sa_b.children
    assert len(ca) == 1 and len(cb) == 1, (ca, cb)
    assert (ca[0].spi_in, ca[0].spi_out) == (cb[0].spi_out, cb[0].spi_in)
    for ip, sa in ((A, sa_a), (B, sa_b)):
        events = net.take(ip)
        gone = {e.spi_in for e in only(events, ChildSaDown)} | {e.spi for e in only(events, SpiUnused)}
        # every SPI taken from the allocator is in use, went down, or was handed back
        assert set(allocated[ip]) == gone | {sa.children[0].spi_in}
