"""ESP on the wire: the C path against the test's own RFC 4303/4106 code.

Packets sealed by Dataplane.outbound are parsed and opened by esp_ref (the
`cryptography` package's AESGCM), and packets built by esp_ref are opened by
Dataplane.inbound, for IPv4 and IPv6 inner packets, AES-128/256, ESN on and
off, and every way the RFCs say a packet must be refused.
"""

from __future__ import annotations

import os
import struct

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from esp_ref import (
    B_OUTER,
    ICV,
    SEL4,
    esp_open,
    esp_seal,
    inner,
    ipv4_udp,
    ipv6_udp,
    new_key,
    receiver,
    sender,
    total_drops,
)

from tunsec.dataplane.fastpath import Drop
from tunsec.dataplane.pipe import Alg, Direction, Selector

ALGS = [Alg.AES128GCM16, Alg.AES256GCM16]
FAMILIES = [4, 6]
NH = {4: 4, 6: 41}
SPI = 0xC0010001


# ---------------------------------------------------------------- C -> reference


@pytest.mark.parametrize("esn", [False, True], ids=["seq32", "esn"])
@pytest.mark.parametrize("alg", ALGS, ids=lambda a: a.name)
@pytest.mark.parametrize("family", FAMILIES, ids=["inner4", "inner6"])
def test_outbound_opens_with_reference(family: int, alg: Alg, esn: bool) -> None:
    key = new_key(alg)
    dp = sender(key, SPI, esn=esn)
    # every residue of the payload length mod 4, so every pad length 0..3 occurs
    for seq, size in enumerate(range(0, 9), start=1):
        pkt = inner(family, os.urandom(size))
        esp, peer, drop, icmp = dp.outbound(pkt)
        assert drop is Drop.NONE and icmp == b""
        assert peer == B_OUTER
        assert len(esp) == 8 + 8 + len(pkt) + (4 - (len(pkt) + 2) % 4) % 4 + 2 + ICV
        o = esp_open(key, esp, esn=esn)
        assert o.spi == SPI
        assert o.seq_lo == seq
        assert o.iv == struct.pack("!Q", seq), "the IV is the 64-bit sequence number"
        assert o.payload == pkt
        assert o.next_header == NH[family]
        assert len(o.pad) == (4 - (len(pkt) + 2) % 4) % 4, "minimal RFC 4303 padding"
    info = dp.get(SPI, Direction.OUT, B_OUTER)
    assert info.counters["packets"] == 9 and info.seq == 9


@pytest.mark.parametrize("alg", ALGS, ids=lambda a: a.name)
def test_outbound_esn_crosses_2_32_with_high_bits_in_iv_and_aad(alg: Alg) -> None:
    key = new_key(alg)
    dp = sender(key, SPI, esn=True, seq_start=2**32 - 3)
    pkt = inner(4)
    for seq in range(2**32 - 2, 2**32 + 3):
        esp, _, drop, _ = dp.outbound(pkt)
        assert drop is Drop.NONE
        hi = seq >> 32
        o = esp_open(key, esp, esn=True, seq_hi=hi)
        assert o.seq_lo == seq & 0xFFFF_FFFF
        assert o.iv == struct.pack("!Q", seq)
        assert o.payload == pkt
        # the high half is authenticated: the other epoch does not verify
        with pytest.raises(InvalidTag):
            esp_open(key, esp, esn=True, seq_hi=hi ^ 1)
        # and it is not on the wire as a 32-bit AAD either
        with pytest.raises(InvalidTag):
            esp_open(key, esp, esn=False)


def test_outbound_without_esn_authenticates_32_bit_aad() -> None:
    key = new_key()
    dp = sender(key, SPI, esn=False, seq_start=2**32 - 3)
    esp, _, drop, _ = dp.outbound(inner(6))
    assert drop is Drop.NONE
    o = esp_open(key, esp, esn=False)
    assert o.seq_lo == 2**32 - 2
    with pytest.raises(InvalidTag):
        esp_open(key, esp, esn=True, seq_hi=0)


# ---------------------------------------------------------------- reference -> C


@pytest.mark.parametrize("esn", [False, True], ids=["seq32", "esn"])
@pytest.mark.parametrize("alg", ALGS, ids=lambda a: a.name)
@pytest.mark.parametrize("family", FAMILIES, ids=["inner4", "inner6"])
def test_reference_packets_accepted(family: int, alg: Alg, esn: bool) -> None:
    key = new_key(alg)
    dp, spi = receiver(key, esn=esn)
    for seq, size in enumerate([0, 1, 2, 3, 100, 1400], start=1):
        pkt = inner(family, os.urandom(size))
        # a random explicit IV: RFC 4106 lets the sender choose it; the receiver must take it as sent
        esp = esp_seal(key, spi, seq, pkt, NH[family], esn=esn, iv=os.urandom(8))
        out, drop = dp.inbound(esp)
        assert drop is Drop.NONE
        assert out == pkt
    info = dp.get(spi, Direction.IN)
    assert info.counters["packets"] == 6 and info.seq == 6
    assert info.counters["bytes"] == sum(len(inner(family, bytes(n))) for n in [0, 1, 2, 3, 100, 1400])
    assert total_drops(dp) == 0


@pytest.mark.parametrize("alg", ALGS, ids=lambda a: a.name)
def test_reference_esn_crosses_2_32(alg: Alg) -> None:
    key = new_key(alg)
    dp, spi = receiver(key, esn=True, window=64)
    pkt = inner(4)
    # the receiver infers the high half (RFC 4303 A2.2): walk up to and over 2^32,
    # then a late packet from the old epoch that is still inside the window
    for seq in [2**32 - 1000, 2**32 - 2, 2**32 - 1, 2**32, 2**32 + 1, 2**32 - 5, 2**32 + 70]:
        out, drop = dp.inbound(esp_seal(key, spi, seq, pkt, 4, esn=True))
        assert (out, drop) == (pkt, Drop.NONE), f"seq {seq:#x}"
    assert dp.get(spi, Direction.IN).seq == 2**32 + 70
    # a 32-bit AAD (the sender forgot ESN) does not verify
    out, drop = dp.inbound(esp_seal(key, spi, 2**32 + 71, pkt, 4, esn=False))
    assert drop is Drop.AUTH


@pytest.mark.parametrize("family", FAMILIES, ids=["inner4", "inner6"])
def test_round_trip_c_to_c(family: int) -> None:
    key = new_key(Alg.AES256GCM16)
    rx, spi = receiver(key, esn=True, window=1024)
    tx = sender(key, spi, esn=True)
    for size in [0, 1, 2, 3, 500, 1400, 8000]:
        pkt = inner(family, os.urandom(size))
        esp, _, drop, _ = tx.outbound(pkt)
        assert drop is Drop.NONE
        assert rx.inbound(esp) == (pkt, Drop.NONE)
        assert rx.inbound(esp) == (b"", Drop.REPLAY)


@pytest.mark.parametrize("family", FAMILIES, ids=["inner4", "inner6"])
def test_tfc_padding_is_trimmed_by_ip_length(family: int) -> None:
    key = new_key()
    dp, spi = receiver(key)
    pkt = inner(family, b"payload")
    for seq, tfc in enumerate([b"\0", os.urandom(3), os.urandom(64), os.urandom(1000)], start=1):
        out, drop = dp.inbound(esp_seal(key, spi, seq, pkt + tfc, NH[family]))
        assert drop is Drop.NONE
        assert out == pkt
    assert dp.get(spi, Direction.IN).counters["bytes"] == 4 * len(pkt)


def test_longer_padding_is_accepted() -> None:
    """RFC 4303 2.4: a sender may pad more than needed (up to 255 bytes), to hide lengths."""
    key = new_key()
    dp, spi = receiver(key)
    pkt = inner(4, b"abcd")  # 36 bytes: minimal padding 2
    for seq, padlen in enumerate([6, 10, 254], start=1):
        out, drop = dp.inbound(esp_seal(key, spi, seq, pkt, 4, padlen=padlen))
        assert (out, drop) == (pkt, Drop.NONE), f"pad length {padlen}"


def test_dummy_next_header_59_is_dropped_as_dummy() -> None:
    key = new_key()
    dp, spi = receiver(key)
    before = dp.drops()
    out, drop = dp.inbound(esp_seal(key, spi, 1, os.urandom(40), 59))
    assert (out, drop) == (b"", Drop.DUMMY)
    # an empty dummy packet too (only the trailer)
    out, drop = dp.inbound(esp_seal(key, spi, 2, b"", 59))
    assert (out, drop) == (b"", Drop.DUMMY)
    after = dp.drops()
    assert after["dummy"] - before["dummy"] == 2
    assert total_drops(dp) == 2
    # the SA goes on working
    assert dp.inbound(esp_seal(key, spi, 3, inner(4), 4)) == (inner(4), Drop.NONE)


@pytest.mark.parametrize(
    "pad",
    [bytes([1, 2, 4]), bytes([0, 0, 0]), bytes([2, 2, 3]), bytes([1, 2, 3, 4, 5, 7])],
    ids=["last", "zeros", "first", "long"],
)
def test_bad_padding_bytes_are_malformed(pad: bytes) -> None:
    key = new_key()
    dp, spi = receiver(key)
    pkt = inner(4, b"a")  # 29 bytes: 29 + len(pad) + 2 must be a multiple of 4
    pkt = pkt + b"\0" * ((4 - (len(pkt) + len(pad) + 2) % 4) % 4)
    out, drop = dp.inbound(esp_seal(key, spi, 1, pkt, 4, padlen=len(pad), pad=pad))
    assert (out, drop) == (b"", Drop.MALFORMED)
    assert dp.drops()["malformed"] == 1 and total_drops(dp) == 1


def test_pad_length_beyond_plaintext_is_malformed() -> None:
    key = new_key()
    dp, spi = receiver(key)
    # plaintext of 4 bytes claiming 200 bytes of padding
    nonce_iv = struct.pack("!Q", 1)
    body = AESGCM(key[:-4]).encrypt(key[-4:] + nonce_iv, b"\x01\x02" + bytes([200, 4]), struct.pack("!II", spi, 1))
    esp = struct.pack("!II", spi, 1) + nonce_iv + body
    assert dp.inbound(esp) == (b"", Drop.MALFORMED)


@pytest.mark.parametrize("alg", ALGS, ids=lambda a: a.name)
def test_wrong_key_is_auth(alg: Alg) -> None:
    key = new_key(alg)
    dp, spi = receiver(key)
    other = bytearray(key)
    other[0] ^= 0x80
    assert dp.inbound(esp_seal(bytes(other), spi, 1, inner(4), 4)) == (b"", Drop.AUTH)
    # a wrong salt (the last 4 bytes of the key material) too
    other = bytearray(key)
    other[-1] ^= 0x01
    assert dp.inbound(esp_seal(bytes(other), spi, 2, inner(4), 4)) == (b"", Drop.AUTH)
    info = dp.get(spi, Direction.IN)
    assert info.counters["auth_drops"] == 2 and info.counters["packets"] == 0
    assert dp.drops()["auth"] == 2 and total_drops(dp) == 2


def test_wire_seq_differs_from_authenticated_seq_is_auth() -> None:
    key = new_key()
    dp, spi = receiver(key)
    assert dp.inbound(esp_seal(key, spi, 5, inner(4), 4, aad_seq=6)) == (b"", Drop.AUTH)


@pytest.mark.parametrize(
    "pkt",
    [
        ipv4_udp("10.9.0.1", "10.2.0.1", b"x"),  # source outside
        ipv4_udp("10.1.0.1", "10.3.0.1", b"x"),  # destination outside
        ipv4_udp("10.2.0.1", "10.1.0.1", b"x"),  # reversed direction
        ipv6_udp("fd00:c::1", "fd00:b::1", b"x"),
        ipv6_udp("fd00:a::1", "fd00:a::2", b"x"),
    ],
    ids=["v4-src", "v4-dst", "v4-reversed", "v6-src", "v6-dst"],
)
def test_inner_outside_selectors_is_policy(pkt: bytes) -> None:
    key = new_key()
    dp, spi = receiver(key)
    nh = 4 if pkt[0] >> 4 == 4 else 41
    assert dp.inbound(esp_seal(key, spi, 1, pkt, nh)) == (b"", Drop.POLICY)
    assert dp.get(spi, Direction.IN).counters["policy_drops"] == 1
    assert dp.drops()["policy"] == 1 and total_drops(dp) == 1


def test_selector_ports_and_protocol_are_checked() -> None:
    key = new_key()
    sel = Selector(SEL4.src_lo, SEL4.src_hi, SEL4.dst_lo, SEL4.dst_hi, proto=17, sport=(1000, 2000), dport=(53, 53))
    dp, spi = receiver(key, selectors=(sel,))
    ok = ipv4_udp("10.1.0.1", "10.2.0.1", b"q", sport=1500, dport=53)
    assert dp.inbound(esp_seal(key, spi, 1, ok, 4)) == (ok, Drop.NONE)
    bad_port = ipv4_udp("10.1.0.1", "10.2.0.1", b"q", sport=1500, dport=54)
    assert dp.inbound(esp_seal(key, spi, 2, bad_port, 4)) == (b"", Drop.POLICY)
    tcp = bytearray(ok)
    tcp[9] = 6  # same ports, protocol TCP (checksum irrelevant to the policy check)
    assert dp.inbound(esp_seal(key, spi, 3, bytes(tcp), 4)) == (b"", Drop.POLICY)


@pytest.mark.parametrize(
    ("family", "nh"),
    [(4, 41), (6, 4), (4, 17), (6, 17), (4, 0), (4, 50)],
    ids=["v4-as-41", "v6-as-4", "v4-as-udp", "v6-as-udp", "v4-as-0", "v4-as-esp"],
)
def test_next_header_must_match_inner_family(family: int, nh: int) -> None:
    key = new_key()
    dp, spi = receiver(key)
    assert dp.inbound(esp_seal(key, spi, 1, inner(family), nh)) == (b"", Drop.MALFORMED)
    assert total_drops(dp) == 1


@pytest.mark.parametrize(
    "payload",
    [
        b"",  # nothing but the trailer
        b"\x45" + b"\0" * 18,  # shorter than an IPv4 header
        b"\x45\0\x10\0" + b"\0" * 16,  # IPv4 total length beyond the packet
        b"\x46\0\0\x14" + b"\0" * 16,  # IHL 24 > total length 20
        b"\x60" + b"\0" * 38,  # shorter than an IPv6 header
        b"\x60\0\0\0\x01\0" + b"\0" * 34,  # IPv6 payload length beyond the packet
        b"\x50" + b"\0" * 39,  # version 5
    ],
    ids=["empty", "v4-short", "v4-totlen", "v4-ihl", "v6-short", "v6-plen", "version5"],
)
def test_malformed_inner_is_malformed(payload: bytes) -> None:
    key = new_key()
    dp, spi = receiver(key)
    nh = 41 if payload[:1] == b"\x60" else 4
    assert dp.inbound(esp_seal(key, spi, 1, payload, nh)) == (b"", Drop.MALFORMED)


def test_unaligned_ciphertext_is_malformed() -> None:
    """RFC 4303 2.4: the ciphertext ends on a 4-byte boundary; a packet that does not is refused unopened."""
    key = new_key()
    dp, spi = receiver(key)
    good = esp_seal(key, spi, 1, inner(4), 4)
    for cut in (1, 2, 3):
        assert dp.inbound(good[:-cut]) == (b"", Drop.MALFORMED)
    assert dp.inbound(good + b"\0") == (b"", Drop.MALFORMED)
    # none of those touched the replay window: the packet itself still goes through
    assert dp.inbound(good) == (inner(4), Drop.NONE)
