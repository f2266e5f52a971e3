"""Two engines wired in memory with a fake clock: negotiation, failures, loss, delete."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import pytest

from tunsec.ike.config import ChildConfig, IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.constants import ExchangeType, HeaderFlag
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import (
    AuthFailed,
    ChildSaDown,
    ChildSaUp,
    DownReason,
    Event,
    IkeSaDeleting,
    IkeSaDown,
    IkeSaUp,
    NegotiationFailed,
    PeerUnreachable,
    SpiUnused,
)
from tunsec.ike.identity import Identity
from tunsec.ike.message import decode_header
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.sa import IkeSa
from tunsec.ike.secret import Secret
from tunsec.ike.testing import Network, Sent

A, B = "192.0.2.1", "192.0.2.2"
E = TypeVar("E")
PSK = Secret(b"a shared secret of some length")


def psk_config(
    name: str,
    local_id: str,
    remote_id: str,
    local_ip: str,
    remote_ip: str | None,
    children: tuple[ChildConfig, ...],
    proposals: str = "aes256gcm16-prfsha384-ecp384",
    psk: Secret = PSK,
) -> IkeConfig:
    return IkeConfig(
        name,
        LocalAuth("psk", Identity.parse(local_id)),
        RemoteAuth("psk", Identity.parse(remote_id)),
        parse_proposals(proposals),
        children,
        psk=psk,
        local_addr=local_ip,
        remote_addr=remote_ip,
    )


def initiator_cfg(**kw: Any) -> IkeConfig:
    child = child_config("net", "10.1.0.0/16", "10.2.0.0/16", str(kw.pop("esp", "aes128gcm16")))
    return dataclasses.replace(psk_config("a-to-b", "moon.example", "sun.example", A, B, (child,)), **kw)


def responder_cfg(**kw: Any) -> IkeConfig:
    child = child_config(
        "net", str(kw.pop("local_ts", "10.2.0.0/16")), "10.1.0.0/16", str(kw.pop("esp", "aes128gcm16"))
    )
    return dataclasses.replace(psk_config("b-from-a", "sun.example", "moon.example", B, None, (child,)), **kw)


def make_net(init: IkeConfig | None = None, resp: IkeConfig | None = None) -> tuple[Network, IkeEndpoint, IkeEndpoint]:
    net = Network()
    a = net.add(A, IkeEndpoint([init or initiator_cfg()]))
    b = net.add(B, IkeEndpoint([resp or responder_cfg()]))
    return net, a, b


def only(events: list[Event], kind: type[E]) -> list[E]:
    return [e for e in events if isinstance(e, kind)]


def test_psk_gcm_child_sa_up_with_crossed_keys() -> None:
    net, a, _ = make_net()
    a.initiate("a-to-b", "net", net.now)
    net.run()
    ev_a, ev_b = net.take(A), net.take(B)
    assert [type(e) for e in ev_a] == [IkeSaUp, ChildSaUp]
    assert [type(e) for e in ev_b] == [IkeSaUp, ChildSaUp]
    ca, cb = ev_a[1], ev_b[1]
    assert isinstance(ca, ChildSaUp) and isinstance(cb, ChildSaUp)
    assert (ca.spi_in, ca.spi_out) == (cb.spi_out, cb.spi_in)
    assert ca.key_in == cb.key_out and ca.key_out == cb.key_in
    assert ca.key_in != ca.key_out
    assert len(ca.key_in) == 20 and ca.alg == "aes128gcm16" and not ca.esn
    assert [str(t) for t in ca.local_ts] == ["10.1.0.0/16"] and [str(t) for t in ca.remote_ts] == ["10.2.0.0/16"]
    assert [str(t) for t in cb.local_ts] == ["10.2.0.0/16"] and [str(t) for t in cb.remote_ts] == ["10.1.0.0/16"]
    # both float to 4500 (forced UDP encapsulation)
    assert ca.remote_addr == (B, 4500) and ca.local_port == 4500
    assert cb.remote_addr == (A, 4500) and cb.local_port == 4500
    up_a, up_b = ev_a[0], ev_b[0]
    assert isinstance(up_a, IkeSaUp) and isinstance(up_b, IkeSaUp)
    assert str(up_a.remote_id) == "sun.example" and str(up_b.remote_id) == "moon.example"
    assert up_a.proposal == "IKE:aes256gcm16-prfsha384-ecp384"
    # IKE_SA_INIT on 500, everything after on 4500; four messages in all
    assert [(s.src[1], s.dst[1]) for s in net.log] == [(500, 500), (500, 500), (4500, 4500), (4500, 4500)]
    # no key material in any event's repr
    for ev in ev_a + ev_b:
        assert ca.key_in.reveal().hex() not in repr(ev)
        assert ca.key_in.reveal() not in repr(ev).encode()


def test_message_ids_and_flags() -> None:
    net, a, _ = make_net()
    a.initiate("a-to-b", "net", net.now)
    net.run()
    headers = [decode_header(s.data) for s in net.log]
    assert [(h.exchange, h.message_id) for h in headers] == [
        (ExchangeType.IKE_SA_INIT, 0),
        (ExchangeType.IKE_SA_INIT, 0),
        (ExchangeType.IKE_AUTH, 1),
        (ExchangeType.IKE_AUTH, 1),
    ]
    assert [h.flags for h in headers] == [
        HeaderFlag.INITIATOR,
        HeaderFlag.RESPONSE,
        HeaderFlag.INITIATOR,
        HeaderFlag.RESPONSE,
    ]


@pytest.mark.parametrize(
    ("ike", "esp"),
    [
        ("aes128-sha256-modp2048", "aes128gcm16"),
        ("aes256-sha384-ecp256", "aes256gcm16"),
        ("aes256-sha512-curve25519", "aes128gcm16"),
        ("aes128gcm16-prfsha256-curve448", "aes256gcm16"),
        ("aes256gcm16-prfsha512-ecp521", "aes256gcm16-esn"),
    ],
)
def test_algorithm_combinations(ike: str, esp: str) -> None:
    init = initiator_cfg(proposals=parse_proposals(ike), esp=esp)
    resp = responder_cfg(proposals=parse_proposals(ike), esp=esp)
    net, a, _ = make_net(init, resp)
    a.initiate("a-to-b", "net", net.now)
    net.run()
    ups = only(net.take(A), ChildSaUp) + only(net.take(B), ChildSaUp)
    assert len(ups) == 2
    assert ups[0].key_in == ups[1].key_out
    assert len(ups[0].key_in) == (36 if "256gcm" in esp else 20)
    assert ups[0].esn == ("esn" in esp)


def test_wrong_psk_fails_on_both_sides() -> None:
    resp = responder_cfg(psk=Secret(b"another secret entirely"))
    net, a, _ = make_net(resp=resp)
    a.initiate("a-to-b", "net", net.now)
    net.run()
    ev_a, ev_b = net.take(A), net.take(B)
    fa, fb = only(ev_a, AuthFailed), only(ev_b, AuthFailed)
    assert len(fa) == 1 and fa[0].by_peer
    assert len(fb) == 1 and not fb[0].by_peer and "PSK" in fb[0].reason
    assert not only(ev_a, ChildSaUp) and not only(ev_b, ChildSaUp) and not only(ev_b, IkeSaUp)
    assert len(only(ev_a, SpiUnused)) == 1  # the initiator's larval inbound SA is released
    assert not a.sas


def test_wrong_peer_identity_fails() -> None:
    resp = responder_cfg(remote=RemoteAuth("psk", Identity.parse("carol@example")))
    net, a, _ = make_net(resp=resp)
    a.initiate("a-to-b", "net", net.now)
    net.run()
    assert only(net.take(A), AuthFailed)[0].by_peer
    assert "identity" in only(net.take(B), AuthFailed)[0].reason


def test_no_proposal_chosen_names_both_lists() -> None:
    resp = responder_cfg(proposals=parse_proposals("aes128-sha256-modp2048"))
    net, a, b = make_net(resp=resp)
    a.initiate("a-to-b", "net", net.now)
    net.run()
    fa, fb = only(net.take(A), NegotiationFailed), only(net.take(B), NegotiationFailed)
    assert fa[0].reason == fb[0].reason == "NO_PROPOSAL_CHOSEN"
    assert fa[0].child is None
    assert "aes256gcm16-prfsha384-ecp384" in fb[0].detail and "aes128-prfsha256-sha256-modp2048" in fb[0].detail
    assert "aes256gcm16-prfsha384-ecp384" in fa[0].detail
    assert not a.sas and not b.sas


def test_esp_no_proposal_keeps_ike_sa() -> None:
    resp = responder_cfg(esp="aes256gcm16")
    net, a, b = make_net(resp=resp)
    a.initiate("a-to-b", "net", net.now)
    net.run()
    ev_a, ev_b = net.take(A), net.take(B)
    assert only(ev_a, IkeSaUp) and only(ev_b, IkeSaUp)
    fa, fb = only(ev_a, NegotiationFailed), only(ev_b, NegotiationFailed)
    assert fa[0].reason == fb[0].reason == "NO_PROPOSAL_CHOSEN"
    assert fa[0].child == "net" and fb[0].child == "net"
    assert "ESP:aes128gcm16-noesn" in fb[0].detail and "ESP:aes256gcm16-noesn" in fb[0].detail
    assert only(ev_a, SpiUnused) and not only(ev_a, ChildSaUp)
    assert len(a.sas) == 1 and len(b.sas) == 1


def test_ts_narrowing() -> None:
    init = dataclasses.replace(
        initiator_cfg(), children=(child_config("net", "10.1.0.0/16", "10.0.0.0/8", "aes128gcm16"),)
    )
    net, a, _ = make_net(init=init, resp=responder_cfg(local_ts="10.2.3.0/24"))
    a.initiate("a-to-b", "net", net.now)
    net.run()
    ca = only(net.take(A), ChildSaUp)[0]
    cb = only(net.take(B), ChildSaUp)[0]
    assert [str(t) for t in ca.remote_ts] == ["10.2.3.0/24"]
    assert [str(t) for t in cb.local_ts] == ["10.2.3.0/24"]


def test_ts_unacceptable() -> None:
    net, a, _ = make_net(resp=responder_cfg(local_ts="172.16.0.0/12"))
    a.initiate("a-to-b", "net", net.now)
    net.run()
    ev_a, ev_b = net.take(A), net.take(B)
    assert only(ev_a, NegotiationFailed)[0].reason == "TS_UNACCEPTABLE"
    assert only(ev_b, NegotiationFailed)[0].reason == "TS_UNACCEPTABLE"
    assert only(ev_a, IkeSaUp) and not only(ev_a, ChildSaUp)


def test_dynamic_ts_uses_ike_addresses() -> None:
    init = dataclasses.replace(initiator_cfg(), children=(child_config("host", esp_proposals="aes128gcm16"),))
    resp = dataclasses.replace(responder_cfg(), children=(child_config("host", esp_proposals="aes128gcm16"),))
    net, a, _ = make_net(init, resp)
    a.initiate("a-to-b", "host", net.now)
    net.run()
    ca = only(net.take(A), ChildSaUp)[0]
    assert [str(t) for t in ca.local_ts] == [f"{A}/32"] and [str(t) for t in ca.remote_ts] == [f"{B}/32"]


# ------------------------------------------------------------------ loss and retransmission


@pytest.mark.parametrize("which", [0, 1, 2, 3])
def test_single_loss_is_retransmitted(which: int) -> None:
    net, a, _ = make_net()
    counter = {"n": 0}

    def drop(sent: Sent) -> bool:
        counter["n"] += 1
        return counter["n"] - 1 == which

    net.drop = drop
    a.initiate("a-to-b", "net", net.now)
    net.run()
    assert len(only(net.take(A), ChildSaUp)) == 1
    assert len(only(net.take(B), ChildSaUp)) == 1
    assert 4.0 <= net.now < 5.0  # one retransmission after the 4 s timeout
    # exactly one extra datagram; a lost response is resent byte for byte from storage
    assert len(net.log) == 5 + which % 2  # a lost response costs a request and a response
    if which % 2:
        lost = next(s for s in net.log if s.dropped)
        assert [s.data for s in net.log].count(lost.data) == 2


def test_peer_gone_gives_up_after_backoff() -> None:
    net, a, _ = make_net()
    net.drop = lambda sent: sent.src[0] == A
    sa = a.initiate("a-to-b", "net", net.now)
    net.run()
    sends = [s.time for s in net.log if s.src[0] == A]
    expected, t = [], 0.0
    for attempt in range(6):
        expected.append(t)
        t += 4.0 * 1.8**attempt
    assert sends == pytest.approx(expected)
    assert net.now == pytest.approx(t)  # gave up one more back-off after the last retransmission
    events = net.take(A)
    assert [type(e) for e in events] == [PeerUnreachable]
    assert sa.is_closed and not a.sas


def test_peer_gone_after_established() -> None:
    net, a, _ = make_net()
    sa = a.initiate("a-to-b", "net", net.now)
    net.run()
    net.take(A)
    net.drop = lambda sent: True
    sa.send_liveness()
    net.run()
    events = net.take(A)
    assert [type(e) for e in events] == [PeerUnreachable, ChildSaDown, IkeSaDown]
    assert {e.reason for e in events if isinstance(e, ChildSaDown | IkeSaDown)} == {DownReason.DEAD_PEER}


# ------------------------------------------------------------------ delete


def _up() -> tuple[Network, IkeEndpoint, IkeEndpoint]:
    net, a, b = make_net()
    a.initiate("a-to-b", "net", net.now)
    net.run()
    net.take(A)
    net.take(B)
    return net, a, b


@pytest.mark.parametrize("side", ["initiator", "responder"])
def test_delete_ike_sa(side: str) -> None:
    net, a, b = _up()
    (a if side == "initiator" else b).sas[0].delete(net.now)
    net.run()
    for ip in (A, B):
        events = net.take(ip)
        deleter = A if side == "initiator" else B
        # the deleter says when it began (its accounting session ends then: review revdelete F1)
        begun = [IkeSaDeleting] if ip == deleter else []
        assert [type(e) for e in events] == [ChildSaDown, *begun, IkeSaDown]
        want = DownReason.DELETED if ip == deleter else DownReason.DELETED_BY_PEER
        assert {e.reason for e in events if isinstance(e, ChildSaDown | IkeSaDown)} == {want}
    assert not a.sas and not b.sas


@pytest.mark.parametrize("side", ["initiator", "responder"])
def test_delete_child_sa(side: str) -> None:
    net, a, b = _up()
    sa = (a if side == "initiator" else b).sas[0]
    sa.delete_child(sa.children[0].unique_id)
    net.run()
    da, db = only(net.take(A), ChildSaDown), only(net.take(B), ChildSaDown)
    assert len(da) == 1 and len(db) == 1
    assert da[0].spi_in == db[0].spi_out and da[0].spi_out == db[0].spi_in
    assert len(a.sas) == 1 and len(b.sas) == 1 and not a.sas[0].children


def test_bare_ike_sa_objects_without_endpoint() -> None:
    """The IkeSa API on its own: two objects, a fake clock, hand-carried datagrams."""
    now = 0.0
    init = IkeSa(initiator_cfg(), True, now)
    resp = IkeSa(responder_cfg(), False, now, remote_addr=(A, 500))
    init.initiate("net")
    for _ in range(4):
        for data, addr in init.datagrams_to_send(now):
            assert addr[0] == B
            resp.receive(data, (A, init.local_port), now, local_addr=addr)
        for data, addr in resp.datagrams_to_send(now):
            assert addr[0] == A
            init.receive(data, (B, resp.local_port), now, local_addr=addr)
    events_i = []
    while (ev := init.next_event()) is not None:
        events_i.append(ev)
    events_r = []
    while (ev := resp.next_event()) is not None:
        events_r.append(ev)
    assert [type(e) for e in events_i] == [IkeSaUp, ChildSaUp]
    assert [type(e) for e in events_r] == [IkeSaUp, ChildSaUp]
    assert init.get_timer() is None and resp.get_timer() is None
    assert init.local_port == resp.local_port == 4500


@pytest.mark.parametrize("ike", ["aes128gcm16-prfsha256-curve25519"])
def test_ipv6_outer_and_inner(ike: str) -> None:
    a6, b6 = "2001:db8::1", "2001:db8::2"
    init = dataclasses.replace(
        initiator_cfg(proposals=parse_proposals(ike)),
        local_addr=a6,
        remote_addr=b6,
        children=(child_config("net", "fd00:1::/64", "fd00:2::/64", "aes128gcm16"),),
    )
    resp = dataclasses.replace(
        responder_cfg(proposals=parse_proposals(ike)),
        local_addr=b6,
        children=(child_config("net", "fd00:2::/64", "fd00:1::/64", "aes128gcm16"),),
    )
    net = Network()
    a = net.add(a6, IkeEndpoint([init]))
    net.add(b6, IkeEndpoint([resp]))
    a.initiate("a-to-b", "net", net.now)
    net.run()
    up = only(net.take(a6), ChildSaUp)[0]
    assert [str(t) for t in up.remote_ts] == ["fd00:2::/64"] and up.remote_addr == (b6, 4500)


def test_info_snapshot_has_no_keys() -> None:
    _net, a, b = _up()
    info = a.sas[0].info()
    assert info.state == "established" and info.is_initiator and info.local_port == 4500
    assert info.proposal == "IKE:aes256gcm16-prfsha384-ecp384"
    assert [c.alg for c in info.children] == ["aes128gcm16"]
    assert str(info.remote_id) == "sun.example"
    st = a.sas[0]._st
    assert st.keys is not None
    state_repr = repr(st) + repr(a.sas[0]._pending) + repr(PSK)  # the whole negotiated state
    assert st.tx is not None and st.rx is not None
    # an established SA keeps SK_d and its SK crypters' keys (SK_pi/SK_pr are gone: forget_setup)
    for raw in (st.keys.d.reveal(), st.tx._gcm_key, st.rx._gcm_key, PSK.reveal()):
        key = Secret(raw)
        for text in (repr(info), state_repr):
            assert key.reveal().hex() not in text and repr(key.reveal())[2:-1] not in text
    assert not b.sas[0].info().is_initiator
