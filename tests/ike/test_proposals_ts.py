"""Proposal notation and selection; traffic selector parsing and narrowing."""

from __future__ import annotations

import struct

import pytest

from tunsec.ike.constants import DhGroup, EncrId, EsnId, IntegId, PrfId, ProtocolId, TransformType
from tunsec.ike.message import Proposal, Transform
from tunsec.ike.proposals import (
    ProposalError,
    Suite,
    accepts,
    describe_all,
    parse_proposal,
    parse_proposals,
    select_proposal,
)
from tunsec.ike.ts import Ts, TsError, from_wire, narrow, parse_ts_list, to_wire

ESP = ProtocolId.ESP


def _wire(text: str, protocol: int = ProtocolId.IKE, num: int = 1) -> Proposal:
    return parse_proposal(text, protocol).to_wire(num)


def test_parse_gcm_ike() -> None:
    spec = parse_proposal("aes256gcm16-prfsha384-ecp384")
    assert spec.transforms == (
        Transform.make(TransformType.ENCR, EncrId.AES_GCM_16, 256),
        Transform.make(TransformType.PRF, PrfId.HMAC_SHA2_384),
        Transform.make(TransformType.DH, DhGroup.ECP_384),
    )
    assert str(spec) == "IKE:aes256gcm16-prfsha384-ecp384"


def test_parse_cbc_derives_prf() -> None:
    spec = parse_proposal("aes128-sha256-modp2048")
    assert [t.type for t in spec.transforms] == [1, 2, 3, 4]
    assert spec.of_type(TransformType.PRF)[0].id == PrfId.HMAC_SHA2_256
    assert spec.of_type(TransformType.INTEG)[0].id == IntegId.HMAC_SHA2_256_128


def test_parse_esp() -> None:
    spec = parse_proposal("aes128gcm16", ESP)
    assert spec.transforms == (
        Transform.make(TransformType.ENCR, EncrId.AES_GCM_16, 128),
        Transform.make(TransformType.ESN, EsnId.NO_ESN),
    )
    pfs = parse_proposal("aes128gcm16-ecp256", ESP)
    assert pfs.dh_groups == (DhGroup.ECP_256,)
    assert parse_proposal("aes256gcm16-esn", ESP).of_type(TransformType.ESN)[0].id == EsnId.ESN


@pytest.mark.parametrize(
    ("text", "protocol"),
    [
        ("aes128gcm16-ecp256", ProtocolId.IKE),  # AEAD IKE without PRF
        ("aes128-modp2048", ProtocolId.IKE),  # no integrity
        ("aes128-sha256", ProtocolId.IKE),  # no DH
        ("aes128gcm16-sha256-prfsha256-ecp256", ProtocolId.IKE),
        ("3des-sha1-modp1024", ProtocolId.IKE),
        ("aes128-sha256", ESP),  # dataplane is GCM only
        ("aes128gcm16-prfsha256", ESP),
        ("", ProtocolId.IKE),
    ],
)
def test_bad_proposals(text: str, protocol: int) -> None:
    with pytest.raises(ProposalError):
        parse_proposal(text, protocol)


def test_parse_list_and_default() -> None:
    specs = parse_proposals("aes128-sha256-modp2048, aes256gcm16-prfsha384-ecp384")
    assert len(specs) == 2
    assert len(parse_proposals(["default"])) == 2
    assert len(parse_proposals("default", ESP)) == 1


def test_selection_prefers_responder_order() -> None:
    ours = parse_proposals(["aes256gcm16-prfsha384-ecp384", "aes128-sha256-modp2048"])
    theirs = [_wire("aes128-sha256-modp2048", num=1), _wire("aes256gcm16-prfsha384-ecp384", num=2)]
    chosen = select_proposal(ours, theirs)
    assert chosen is not None and chosen.num == 2
    assert Suite.of(chosen).encr_id == EncrId.AES_GCM_16


def test_selection_within_type_and_ke_preference() -> None:
    ours = parse_proposals(["aes128gcm16-aes256gcm16-prfsha256-ecp256-curve25519"])
    theirs = [_wire("aes256gcm16-aes128gcm16-prfsha256-curve25519-ecp256")]
    chosen = select_proposal(ours, theirs)
    assert chosen is not None
    assert Suite.of(chosen).encr_bits == 128
    assert Suite.of(chosen).dh_group == DhGroup.ECP_256
    chosen = select_proposal(ours, theirs, prefer_group=DhGroup.CURVE25519)
    assert chosen is not None and Suite.of(chosen).dh_group == DhGroup.CURVE25519
    assert accepts(ours, chosen)


def test_no_proposal_chosen_and_description() -> None:
    ours = parse_proposals(["aes256gcm16-prfsha384-ecp384"])
    theirs = [_wire("aes128-sha256-modp2048")]
    assert select_proposal(ours, theirs) is None
    assert describe_all(theirs) == "IKE:aes128-prfsha256-sha256-modp2048"


def test_esp_selection_strip_dh_and_pfs() -> None:
    ours = parse_proposals(["aes128gcm16-ecp256"], ESP)
    theirs = [_wire("aes128gcm16", ESP)]
    assert select_proposal(ours, theirs) is None  # PFS required by us, offered without
    chosen = select_proposal(ours, theirs, strip_dh=True)
    assert chosen is not None and Suite.of(chosen).dh_group is None
    assert Suite.of(chosen).esp_name == "aes128gcm16"
    both = select_proposal(ours, [_wire("aes128gcm16-ecp256", ESP)])
    assert both is not None and Suite.of(both).dh_group == DhGroup.ECP_256


def test_unknown_transform_type_rejects_proposal() -> None:
    prop = _wire("aes128gcm16", ESP)
    odd = Proposal(1, ESP, b"", (*prop.transforms, Transform(9, 1)))
    assert select_proposal(parse_proposals(["aes128gcm16"], ESP), [odd]) is None


def test_accepts_rejects_doubled_types() -> None:
    ours = parse_proposals(["aes128gcm16-aes256gcm16"], ESP)
    doubled = _wire("aes128gcm16-aes256gcm16", ESP)
    assert not accepts(ours, doubled)


# ---------------------------------------------------------------- traffic selectors


def test_ts_parse_and_str() -> None:
    assert str(Ts.parse("10.1.0.0/16")) == "10.1.0.0/16"
    assert str(Ts.parse("10.1.0.5/16")) == "10.1.0.0/16"
    assert str(Ts.parse("10.1.0.1-10.1.0.9")) == "10.1.0.1-10.1.0.9"
    assert str(Ts.parse("fec1::/64[tcp/443]")) == "fec1::/64[tcp/443]"
    assert str(Ts.parse("0.0.0.0/0[udp]")) == "0.0.0.0/0[udp]"
    assert str(Ts.parse("10.0.0.0/8[tcp/http]")) == "10.0.0.0/8[tcp/80]"
    dyn = Ts.parse("dynamic")
    assert dyn.dynamic and str(dyn) == "dynamic"
    assert dyn.resolve("192.0.2.1") == Ts.host("192.0.2.1")
    assert dyn.resolve(None) is None
    assert len(parse_ts_list("10.0.0.0/8, fec1::/16")) == 2
    for bad in ("10.0.0.0/33", "x", "10.0.0.9-10.0.0.1", "10.0.0.0/8[tcp/99999]", "10.0.0.0/8[bogus]"):
        with pytest.raises(TsError):
            Ts.parse(bad)


def test_ts_wire_round_trip() -> None:
    for text in ("10.1.0.0/16", "fec1::/64[tcp/443]", "0.0.0.0/0", "10.0.0.0/8[icmp/8]", "10.1.0.1-10.1.0.9[udp/53]"):
        ts = Ts.parse(text)
        assert from_wire(to_wire(ts)) == ts
    # ICMP type in the high byte, code in the low byte of the port fields (RFC 4301 §4.4.1.3)
    wire = to_wire(Ts.parse("10.0.0.0/8[icmp/0x0303]"))
    assert (wire.ip_protocol, wire.start_port, wire.end_port) == (1, 0x0303, 0x0303)
    wire = to_wire(Ts.parse("::/0[ipv6-icmp/128]"))
    assert (wire.ip_protocol, wire.start_port, wire.end_port) == (58, 0x8000, 0x80FF)


def test_narrowing() -> None:
    proposed = parse_ts_list("10.0.0.0/8")
    allowed = parse_ts_list("10.1.0.0/16, 192.168.0.0/24")
    assert narrow(proposed, allowed) == (Ts.parse("10.1.0.0/16"),)
    assert narrow(parse_ts_list("0.0.0.0/0[tcp]"), parse_ts_list("10.1.0.0/16[tcp/80-90]")) == (
        Ts.parse("10.1.0.0/16[tcp/80-90]"),
    )
    assert narrow(parse_ts_list("10.0.0.0/8[udp]"), parse_ts_list("10.0.0.0/8[tcp]")) == ()
    assert narrow(parse_ts_list("fec1::/16"), parse_ts_list("10.0.0.0/8")) == ()
    assert narrow(parse_ts_list("10.1.2.3-10.1.9.9"), parse_ts_list("10.1.5.0/24")) == (Ts.parse("10.1.5.0/24"),)
    assert Ts.parse("10.0.0.0/8").contains(Ts.parse("10.1.0.0/16"))
    assert not Ts.parse("10.1.0.0/16").contains(Ts.parse("10.0.0.0/8"))


def test_accepts_ignores_transform_order() -> None:
    ours = parse_proposals(["aes128-sha256-modp2048"])
    wire = _wire("aes128-sha256-modp2048")
    encr, prf, integ, dh = wire.transforms
    assert accepts(ours, Proposal(1, ProtocolId.IKE, b"", (encr, integ, prf, dh)))
    assert not accepts(ours, Proposal(1, ProtocolId.IKE, b"", (encr, integ, dh)))


def _outsized_sa_body(tag: int) -> bytes:
    """One IKE proposal whose ENCR transform carries 15000 TV attributes (60 KiB): what anyone
    can put in an IKE_SA_INIT request."""
    attrs = b"".join(struct.pack("!HH", 0x8000 | 14, (i + tag) & 0x7FFF) for i in range(15000))
    transform = struct.pack("!BBHBBH", 0, 0, 8 + len(attrs), 1, 0, 20) + attrs
    return struct.pack("!BBHBBBB", 0, 0, 8 + len(transform), 1, ProtocolId.IKE, 0, 1) + transform


def test_a_peers_outsized_proposals_are_not_kept_in_the_match_and_describe_caches() -> None:
    from tunsec.ike import proposals as P
    from tunsec.ike.message import SaPayload

    ours = P.parse_proposals("aes256gcm16-prfsha384-ecp384")
    P._match_transforms.cache_clear()
    P._describe.cache_clear()
    for tag in range(3):
        sa = SaPayload.decode_body(_outsized_sa_body(tag))
        assert P.select_proposal(ours, sa.proposals) is None
        P.describe(sa.proposals[0].protocol, sa.proposals[0].transforms)   # as NO_PROPOSAL_CHOSEN logs it
    assert P._match_transforms.cache_info().currsize == 0
    assert P._describe.cache_info().currsize == 0
    # a client's usual proposal still is (it is what the caches are for)
    theirs = ours[0].to_wire(1)
    chosen = P.select_proposal(ours, [theirs])
    assert chosen is not None and P._match_transforms.cache_info().currsize == 1
    P.describe(chosen.protocol, chosen.transforms)
    assert P._describe.cache_info().currsize == 1
