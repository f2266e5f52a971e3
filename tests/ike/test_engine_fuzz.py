"""Whatever arrives from the network, the engine never raises."""

from __future__ import annotations

import dataclasses
import datetime

from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.identity import Identity
from tunsec.ike.message import (
    Attribute,
    AuthPayload,
    CertPayload,
    DeletePayload,
    IdPayload,
    KePayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    Proposal,
    SaPayload,
    TrafficSelector,
    Transform,
    TsPayload,
)
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.secret import Secret
from tunsec.ike.testing import EPOCH, Network, make_ca, make_cert

A, B = "192.0.2.1", "192.0.2.2"


def _cfg(initiator: bool) -> IkeConfig:
    ids = ("moon", "sun") if initiator else ("sun", "moon")
    ts = ("10.1.0.0/16", "10.2.0.0/16") if initiator else ("10.2.0.0/16", "10.1.0.0/16")
    return IkeConfig(
        "c",
        LocalAuth("psk", Identity.parse(ids[0])),
        RemoteAuth("psk", Identity.parse(ids[1])),
        parse_proposals("aes128-sha256-ecp256"),
        (child_config("net", ts[0], ts[1], "aes128gcm16"),),
        psk=Secret(b"fuzzing secret"),
        local_addr=A if initiator else B,
        remote_addr=B if initiator else None,
    )


def _transcript() -> list[bytes]:
    net = Network()
    a = net.add(A, IkeEndpoint([_cfg(True)]))
    net.add(B, IkeEndpoint([_cfg(False)]))
    sa = a.initiate("c", "net", net.now)
    net.run()
    sa.rekey_child(sa.children[0].unique_id)
    net.run()
    sa.delete()
    net.run()
    return [s.data for s in net.log]


TRANSCRIPT = _transcript()


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.data())
def test_mutated_datagrams_never_raise(data: st.DataObject) -> None:
    net = Network()
    a = net.add(A, IkeEndpoint([_cfg(True)]))
    b = net.add(B, IkeEndpoint([_cfg(False)]))
    a.initiate("c", "net", net.now)
    net.run()
    for _ in range(data.draw(st.integers(1, 8))):
        raw = bytearray(data.draw(st.sampled_from(TRANSCRIPT)))
        for _ in range(data.draw(st.integers(0, 3))):
            pos = data.draw(st.integers(0, len(raw) - 1))
            raw[pos] = data.draw(st.integers(0, 255))
        cut = data.draw(st.integers(0, len(raw)))
        target = data.draw(st.sampled_from([a, b]))
        target.receive(bytes(raw[:cut] if data.draw(st.booleans()) else raw), (A if target is b else B, 4500), 1.0)
        target.handle_timer(data.draw(st.floats(0, 500)))
    net.run()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_to_a_responder(raw: bytes) -> None:
    b = IkeEndpoint([_cfg(False)])
    b.receive(raw, (A, 500), 0.0)
    b.receive(b"\x00" * 8 + raw, (A, 500), 0.0)
    b.datagrams_to_send(0.0)


# ---------------------------------------------------------------- authenticated garbage

u8 = st.integers(0, 255)
u16 = st.integers(0, 0xFFFF)
_transforms = st.builds(
    Transform,
    st.integers(1, 6),
    st.sampled_from([0, 1, 5, 12, 14, 19, 20, 31, 999]),
    st.lists(st.builds(Attribute, st.just(14), st.sampled_from([128, 256, 7])), max_size=1).map(tuple),
)
_proposals = st.builds(
    Proposal,
    u8,
    st.sampled_from([1, 2, 3, 9]),
    st.sampled_from([b"", b"\x00\x00\x01\x00", b"\x01" * 8, b"\x02\x02"]),
    st.lists(_transforms, max_size=5).map(tuple),
)
_selectors = st.builds(
    TrafficSelector,
    st.just(7),
    st.sampled_from([0, 6, 17]),
    u16,
    u16,
    st.binary(min_size=4, max_size=4),
    st.binary(min_size=4, max_size=4),
)
_payloads: st.SearchStrategy[Payload] = st.one_of(
    st.builds(SaPayload, st.lists(_proposals, min_size=1, max_size=3).map(tuple)),
    st.builds(KePayload, st.sampled_from([19, 14, 31, 2]), st.binary(max_size=80)),
    st.builds(NoncePayload, st.binary(min_size=16, max_size=40)),
    st.builds(TsPayload, st.booleans(), st.lists(_selectors, max_size=3).map(tuple)),
    st.builds(
        NotifyPayload,
        st.sampled_from([16393, 24, 17, 16384, 43, 7]),
        st.binary(max_size=4),
        st.sampled_from([0, 1, 3]),
        st.sampled_from([b"", b"\x00\x00\x01\x00", b"\x12\x34\x56\x78"]),
    ),
    st.builds(DeletePayload, st.sampled_from([1, 3]), st.sampled_from([0, 4]), st.just(())),
    st.builds(IdPayload, st.booleans(), st.sampled_from([1, 2, 9, 11]), st.binary(max_size=20)),
    st.builds(AuthPayload, st.sampled_from([2, 14, 1]), st.binary(max_size=40)),
)


def _established() -> tuple[Network, IkeEndpoint, IkeEndpoint]:
    net = Network()
    a = net.add(A, IkeEndpoint([_cfg(True)]))
    b = net.add(B, IkeEndpoint([_cfg(False)]))
    a.initiate("c", "net", net.now)
    net.run()
    return net, a, b


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from([35, 36, 37, 43]), st.lists(_payloads, max_size=6)), min_size=1, max_size=3),
    st.booleans(),
)
def test_authenticated_garbage_requests_never_raise(requests: list[tuple[int, list[Payload]]], real: bool) -> None:
    net, a, b = _established()
    sender = a.sas[0]
    for exchange, payloads in requests:
        if real and sender.children:  # sometimes name a real Child SA
            spi = sender.children[0].spi_in.to_bytes(4, "big")
            payloads = [*payloads, DeletePayload(3, 4, (spi,)), NotifyPayload(16393, b"", 3, spi)]
        data = sender._encode(exchange, sender._next_id, payloads, response=False)
        sender._next_id += 1
        for datagram in data:  # one, or its fragments
            b.receive(datagram, (A, 4500), 1.0)
        net.run()
    # the responder's window never stalls: a liveness check still gets through
    if b.sas:
        sender.send_liveness()
        net.run()
        assert not [e for e in net.take(A) if type(e).__name__ == "PeerUnreachable"]


# ---------------------------------------------------------------- hostile IKE_AUTH with certificates

_CA = make_ca()
_MOON = make_cert(_CA, "moon", ["moon"])
_SUN = make_cert(_CA, "sun", ["sun"])
_certs = st.one_of(
    st.binary(max_size=120),
    st.just(_MOON.cert.public_bytes(Encoding.DER)),
    st.just(_CA.cert.public_bytes(Encoding.DER)),
    st.just(_MOON.cert.public_bytes(Encoding.DER)[:-7]),
)


def _pubkey_cfg(initiator: bool) -> IkeConfig:
    me, ids = (_MOON, ("moon", "sun")) if initiator else (_SUN, ("sun", "moon"))
    return dataclasses.replace(
        _cfg(initiator),
        psk=None,
        local=LocalAuth("pubkey", Identity.parse(ids[0]), me.cert, (), me.key),
        remote=RemoteAuth("pubkey", Identity.parse(ids[1]), (_CA.cert,)),
    )


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.lists(st.builds(CertPayload, st.sampled_from([4, 1]), _certs), max_size=3),
    st.builds(IdPayload, st.just(True), st.sampled_from([2, 9, 11, 1]), st.binary(max_size=30)),
    st.builds(AuthPayload, st.sampled_from([14, 1, 9, 2]), st.binary(max_size=90)),
)
def test_hostile_ike_auth_with_certificates(certs: list[CertPayload], idi: IdPayload, auth: AuthPayload) -> None:
    net = Network()
    a = net.add(A, IkeEndpoint([_pubkey_cfg(True)], wall_clock=lambda: EPOCH + datetime.timedelta(days=9)))
    b = net.add(B, IkeEndpoint([_pubkey_cfg(False)], wall_clock=lambda: EPOCH + datetime.timedelta(days=9)))
    net.drop = lambda sent: sent.dst[1] == 4500  # keep the real IKE_AUTH from arriving
    sender = a.initiate("c", "net", net.now)
    net.run(until=1.0)
    for datagram in sender._encode(35, 1, [idi, *certs, auth], response=False):
        b.receive(datagram, (A, 4500), 1.0)
    events = [ev for _, ev in iter(b.next_event, None)]
    assert not any(type(e).__name__ in ("IkeSaUp", "ChildSaUp") for e in events)
