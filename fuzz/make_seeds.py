"""Regenerate the seed corpora in fuzz/corpus/<target>/ from real packets.

Packets are built with scapy (an independent reference for IP, TCP, UDP and
ICMP), ESP is sealed with the `cryptography` package, IKE and pipe messages
with the project's own encoders (the codecs under test must accept what their
own peers send).  Each seed is a named file; files this script does not write
(regression inputs added by hand, see fuzz/README.md) are left alone.

The input formats are documented at the top of each target.

Run: PYTHONPATH=src python3 fuzz/make_seeds.py
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_LSRR, IPOption_Router_Alert, IPOption_RR, IPOption_SSRR
from scapy.layers.inet6 import (
    ICMPv6PacketTooBig,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrSegmentRouting,
)
from scapy.layers.ipsec import AH
from scapy.packet import Raw

from tunsec.dataplane import pipe
from tunsec.dataplane.pipe.batch import pack
from tunsec.ike import message as ike
from tunsec.ike.constants import ExchangeType, HeaderFlag, NotifyType, PayloadType

CORPUS = Path(__file__).resolve().parent / "corpus"

# keys and SPIs of fuzz/esp_inbound.c
SPI_A, SPI_B, SPI_LARVAL = 0x1000, 0x2000, 0x3000
KEY_A = b"0123456789abcdefSALT"
KEY_B = b"0123456789abcdef0123456789abcdefsalt"


def write(target: str, seeds: Iterable[tuple[str, bytes]]) -> None:
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    for name, data in seeds:
        (d / name).write_bytes(data)


# ------------------------------------------------------------------ inner packets


def v4_udp(n: int = 32, src: str = "10.1.0.1", dst: str = "10.2.0.1", **ip: Any) -> bytes:
    return bytes(IP(src=src, dst=dst, **ip) / UDP(sport=1234, dport=5678) / Raw(bytes(i & 0xFF for i in range(n))))


def v4_tcp(n: int = 40, seq: int = 1000, flags: str = "A", src: str = "10.1.0.1", **ip: Any) -> bytes:
    return bytes(IP(src=src, dst="10.2.0.1", **ip) / TCP(sport=40000, dport=80, seq=seq, ack=1, flags=flags)
                 / Raw(b"x" * n))


def v4_icmp() -> bytes:
    return bytes(IP(src="10.1.0.1", dst="10.2.0.1") / ICMP(type=8, id=7, seq=1) / Raw(b"ping" * 4))


def v4_icmp_error(quoted_dst: str = "10.2.0.9", quote: int = 28) -> bytes:
    """An ICMP port unreachable from 10.1.0.1 quoting (the first `quote` bytes of) 10.2.0.1 -> quoted_dst."""
    quoted = bytes(IP(src="10.2.0.1", dst=quoted_dst) / UDP(sport=40000, dport=53))[:quote]
    return bytes(IP(src="10.1.0.1", dst="10.2.0.1") / ICMP(type=3, code=3) / Raw(quoted))


def v6_too_big(quoted_dst: str = "fd00::9") -> bytes:
    quoted = bytes(IPv6(src="fd00::2", dst=quoted_dst) / UDP(sport=40000, dport=53))
    return bytes(IPv6(src="fd00::1", dst="fd00::2") / ICMPv6PacketTooBig(mtu=1280) / Raw(quoted))


def v6_chained(pkt: bytes, headers: int) -> bytes:
    """pkt with `headers` Destination Options headers (8 bytes each) after its fixed header."""
    opt = bytes(IPv6ExtHdrDestOpt(nh=60))
    chain = opt * (headers - 1) + bytes([pkt[6]]) + opt[1:]
    return pkt[:4] + struct.pack("!HB", len(pkt) - 40 + len(chain), 60) + pkt[7:40] + chain + pkt[40:]


def v6_udp(n: int = 24, src: str = "fd00::1", dst: str = "fd00::2") -> bytes:
    return bytes(IPv6(src=src, dst=dst) / UDP(sport=53, dport=5353) / Raw(b"q" * n))


def v6_tcp(n: int = 40, seq: int = 5000, flags: str = "A") -> bytes:
    return bytes(IPv6(src="fd00::1", dst="fd00::2") / TCP(sport=40000, dport=443, seq=seq, ack=9, flags=flags)
                 / Raw(b"y" * n))


def v6_ext() -> bytes:
    return bytes(IPv6(src="fd00::1", dst="fd00::2") / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()
                 / UDP(sport=1, dport=2) / Raw(b"ext"))


def v6_frag(offset: int = 0) -> bytes:
    return bytes(IPv6(src="fd00::1", dst="fd00::2") / IPv6ExtHdrFragment(offset=offset, m=1, id=9)
                 / UDP(sport=1, dport=2) / Raw(b"f" * 16))


def source_routes() -> list[bytes]:
    """Review revesp F1: live routes (dropped both ways), then spent ones and other options (passed),
    then an option cut short (malformed).  Review revesp2: a spent SRH / RPL header with an IPv6 or
    IPv4 packet behind it, a live SRH behind AH (dropped); a spent one behind AH (passed); an AH past
    its packet (malformed)."""
    def v6_srh(segleft: int, nh: int = 17, ah: bool = False) -> bytes:
        srh = IPv6ExtHdrSegmentRouting(addresses=["2001:db8::99", "fd00::2"], segleft=segleft, lastentry=1, nh=nh)
        inner = {17: UDP(sport=1, dport=2) / Raw(b"sr"), 41: IPv6(src="fd00::1", dst="2001:db8::99") / UDP(),
                 4: IP(src="10.1.0.1", dst="192.0.2.99") / UDP()}[nh]
        head = IPv6(src="fd00::1", dst="fd00::2")
        if ah:
            head = head / AH(nh=43, payloadlen=4, icv=bytes(12))
        return bytes(head / srh / inner)
    cut = bytearray(v4_udp(8, options=[IPOption_Router_Alert()]))
    cut[20:24] = b"\x83\x09\x04\x00"
    rpl = bytearray(v6_srh(0, 41))
    rpl[42] = 3
    ah_cut = bytearray(v6_srh(1, ah=True))
    ah_cut[41] = 200
    return [v4_udp(8, options=[IPOption_LSRR(routers=["192.0.2.99"])]),
            v4_udp(8, options=[IPOption_SSRR(routers=["10.2.0.7", "192.0.2.99"])]), v6_srh(1),
            v4_udp(8, options=[IPOption_LSRR(routers=["192.0.2.99"], pointer=8)]),
            v4_udp(8, options=[IPOption_RR(routers=["0.0.0.0"]), IPOption_Router_Alert()]), v6_srh(0), bytes(cut),
            v6_srh(0, 41), v6_srh(0, 4), bytes(rpl), v6_srh(1, ah=True), v6_srh(0, ah=True), bytes(ah_cut)]


# ------------------------------------------------------------------ ESP inbound


def esp_trailer(inner: bytes, nh: int, tfc: int = 0, bad_pad: bool = False) -> bytes:
    body = inner + b"\0" * tfc
    pad = (4 - (len(body) + 2) % 4) % 4
    padding = bytes(range(1, pad + 1))
    if bad_pad and pad:
        padding = b"\xee" * pad
    return body + padding + bytes([pad, nh])


def sealed(
    plain: bytes, seq: int, b: bool = False, bad_tag: bool = False, tight: bool = False, quarters: int = 4
) -> bytes:
    flags = 1 | (2 if b else 0) | (4 if bad_tag else 0) | (8 if tight else 0) | (quarters - 1) << 6
    iv = struct.pack("!Q", seq ^ 0x5A5A)
    return struct.pack("!BH", flags, len(plain)) + struct.pack("!Q", seq) + iv + plain


def raw(data: bytes, flags: int = 0) -> bytes:
    return struct.pack("!BH", flags & ~1, len(data)) + data


def esp_wire(spi: int, key: bytes, seq: int, plain: bytes) -> bytes:
    """An ESP datagram as a peer sends it (RFC 4303, RFC 4106), for raw records."""
    iv = struct.pack("!Q", seq)
    aad = struct.pack("!II", spi, seq)
    ct = AESGCM(key[:-4]).encrypt(key[-4:] + iv, plain, aad)
    return aad + iv + ct


def esp_inbound_seeds() -> Iterable[tuple[str, bytes]]:
    p4, p6 = esp_trailer(v4_udp(), 4), esp_trailer(v6_udp(), 41)
    yield "sealed-v4-udp", sealed(p4, 1)
    yield "sealed-v6-udp", sealed(p6, 1)
    yield "sealed-v4-tcp-icmp", sealed(esp_trailer(v4_tcp(), 4), 1) + sealed(esp_trailer(v4_icmp(), 4), 2)
    yield "sealed-v6-ext-frag", sealed(esp_trailer(v6_ext(), 41), 5) + sealed(esp_trailer(v6_frag(8), 41), 6)
    # ICMP errors: quoting a packet inside the selectors, outside them, cut in its IP header
    yield "sealed-icmp-quote", b"".join(sealed(esp_trailer(p, nh), i + 1) for i, (p, nh) in enumerate(
        [(v4_icmp_error(), 4), (v4_icmp_error("11.0.0.1"), 4), (v4_icmp_error(quote=19), 4),
         (v6_too_big(), 41), (v6_too_big("fc00::1"), 41)]))
    # behind 9 and 200 extension headers, which the host behind the TUN walks to the end
    yield "sealed-icmp6-chain", b"".join(sealed(esp_trailer(v6_chained(p, n), 41), i + 1) for i, (p, n) in enumerate(
        [(v6_too_big(), 9), (v6_too_big("fc00::1"), 9), (v6_too_big("fc00::1"), 200)]))
    yield "sealed-tfc", sealed(esp_trailer(v4_udp(8), 4, tfc=40), 3)
    yield "sealed-source-route", b"".join(sealed(esp_trailer(p, 4 if p[0] >> 4 == 4 else 41), i + 1)
                                          for i, p in enumerate(source_routes()))
    yield "sealed-dummy", sealed(esp_trailer(b"", 59), 1)
    yield "sealed-bad-pad", sealed(esp_trailer(v4_udp(9), 4, bad_pad=True), 1)
    yield "sealed-wrong-nh", sealed(esp_trailer(v4_udp(), 41), 1)
    yield "sealed-policy", sealed(esp_trailer(v4_udp(src="11.0.0.1"), 4), 1)
    yield "sealed-bad-tag", sealed(p4, 1, bad_tag=True)
    yield "sealed-tight-out", sealed(p4, 1, tight=True, quarters=4)
    yield "sealed-tight-short", sealed(p4, 1, tight=True, quarters=2)
    # the replay window: in order, a replay, a jump, one left of the window, one inside it
    yield "replay-window", b"".join(sealed(p4, s) for s in (1, 2, 2, 100, 30, 99))
    # ESN (SA B): crossing 2^32, and the soft/hard packet limits
    esn = (1, 0x7FFFFFFF, 0xFFFFFFF0, 0x100000002, 0xFFFFFFF5, 0x100000001)
    yield "esn-wrap", b"".join(sealed(p6, s, b=True) for s in esn)
    yield "esn-limits", b"".join(sealed(p4, s, b=True) for s in range(1, 9))
    yield "raw-keepalive", raw(b"\xff")
    # after the marker: a whole IKE header goes up, junk (no length field that fits) does not
    ike = bytes(range(16)) + bytes([33, 0x20, 34, 0x08, 0, 0, 0, 0]) + struct.pack("!I", 40) + bytes(12)
    yield "raw-ike", raw(b"\0\0\0\0" + ike) + raw(b"\0\0\0\0" + bytes(range(28)))
    yield "raw-short", raw(b"\x00\x00\x10\x00\x00") + raw(b"")
    yield "raw-unaligned", raw(esp_wire(SPI_A, KEY_A, 7, p4) + b"\0")
    yield "raw-unknown-spi", raw(esp_wire(0x9999, KEY_A, 1, p4))
    yield "raw-larval-spi", raw(esp_wire(0x9999, KEY_A, 1, p4), flags=0x20)
    yield "raw-valid-a", raw(esp_wire(SPI_A, KEY_A, 1, p4)) + raw(esp_wire(SPI_A, KEY_A, 1, p4))
    yield "raw-low-spi", raw(esp_wire(255, KEY_A, 1, p4))
    # from port 500 (flag 0x04): IKE without the marker, a short one, and ESP that must not decrypt
    yield "raw-from-500", (raw(ike, flags=0x04) + raw(ike[:27], flags=0x04) + raw(b"\xff", flags=0x04)
                           + raw(esp_wire(SPI_A, KEY_A, 1, p4), flags=0x04))
    # review revcpath: IKE naming our SPI (flag 0x02: the harness writes marker, SPI and length):
    # an established IKE SA's, as initiator and responder, 16 in all: its peer's whole share
    body = b"\0\0\0\0" + ike
    yield "ike-known-spi", raw(body, flags=0x02) + raw(body, flags=0x22) + b"".join(raw(body, flags=0x02)
                                                                                   for _ in range(14))
    # ... one carrying our tag for the sender's address, and one whose tag is for no one (no flag 0x02)
    yield "ike-tagged-spi", raw(body, flags=0x12) + raw(body, flags=0x32) + raw(body)
    # SA B's reservation (LIMIT_B = 2^32 + 2^30): into the next epoch, then past the limit (never
    # delivered, one RESERVE), twice, then below it again
    above = (1, 0x7FFFFFFF, 0xFFFFFFF0, 0x100000001, 0x140000005, 0x140000006, 0x100000003)
    yield "esn-above-limit", b"".join(sealed(p6, s, b=True) for s in above)


# ------------------------------------------------------------------ ESP outbound


def esp_outbound_seeds() -> Iterable[tuple[str, bytes]]:
    yield "v4-udp", b"\0\0" + v4_udp()
    yield "v4-tcp", b"\0\0" + v4_tcp()
    yield "v4-icmp", b"\0\0" + v4_icmp()
    yield "v4-icmp-error-cut", b"\0\0" + v4_icmp_error(quote=19)
    yield "v4-frag", b"\0\0" + v4_udp(flags=1, frag=100)
    yield "v4-options", b"\0\0" + bytes(IP(src="10.1.0.1", dst="10.2.0.1", options=b"\x01\x01\x01\x00") / UDP())
    for i, p in enumerate(source_routes()):
        yield f"source-route-{i}", b"\0\0" + p
    yield "v4-df-too-big", b"\x01\0" + v4_udp(600, flags=2)
    yield "v4-too-big-no-df", b"\x01\0" + v4_udp(600)
    yield "v6-udp", b"\0\0" + v6_udp()
    yield "v6-too-big", b"\x01\0" + v6_udp(700)
    yield "v6-ext", b"\0\0" + v6_ext()
    yield "v6-frag", b"\0\0" + v6_frag(16)
    yield "bypass", b"\0\0" + v4_udp(src="192.168.1.1")
    yield "discard", b"\0\0" + v4_udp(src="172.16.0.1")
    yield "acquire", b"\0\0" + v4_udp(src="198.51.100.7")
    yield "no-policy", b"\0\0" + v4_udp(src="203.0.113.1")
    yield "tight-room", b"\0\x4e" + v4_udp(9)  # just the room the sender asks for
    yield "tight-short", b"\0\x4d" + v4_udp(9)  # a byte short of it
    yield "tight-icmp", b"\x01\x20" + v4_udp(600, flags=2)
    yield "tight-icmp6", b"\x01\x01" + v6_udp(700)
    yield "trailing", b"\0\0" + v4_udp(8) + b"\xaa" * 11


# ------------------------------------------------------------------ TUN offloads


def vnet(flags: int = 0, gso: int = 0, hdr_len: int = 0, size: int = 0, start: int = 0, off: int = 0) -> bytes:
    return struct.pack("<BBHHHH", flags, gso, hdr_len, size, start, off)


def tun_vnet_seeds() -> Iterable[tuple[str, bytes]]:
    tso4 = v4_tcp(1600, flags="PA")
    tso6 = v6_tcp(1300, flags="FA")
    uso = v4_udp(1100)
    yield "none", b"\0" + vnet() + v4_udp()
    yield "needs-csum-udp", b"\0" + vnet(1, 0, 0, 0, 20, 6) + v4_udp()
    yield "needs-csum-tcp6", b"\0" + vnet(1, 0, 0, 0, 40, 16) + v6_tcp()
    yield "tso4", b"\0" + vnet(1, 1, 52, 536, 20, 16) + tso4
    yield "tso4-ecn-tight", b"\x12" + vnet(1, 0x81, 52, 700, 20, 16) + tso4
    yield "tso6", b"\0" + vnet(1, 4, 72, 600, 40, 16) + tso6
    yield "tso6-exthdrs", b"\0" + vnet(1, 4, 88, 600, 56, 16) + v6_chained(tso6, 2)   # review revipv6 F3
    yield "uso4", b"\0" + vnet(1, 5, 28, 500, 20, 6) + uso
    yield "ufo6", b"\x03" + vnet(1, 3, 48, 400, 40, 6) + v6_udp(900)
    yield "tso-small-mss", b"\x00" + vnet(1, 1, 52, 8, 20, 16) + v4_tcp(200)
    yield "tso-too-many", b"\x03" + vnet(1, 1, 52, 100, 20, 16) + v4_tcp(1000)
    yield "tso-v4-options", b"\0" + vnet(1, 1, 0, 100, 0, 0) + bytes(
        IP(src="10.1.0.1", dst="10.2.0.1", options=b"\x01\x01\x01\x00") / TCP(flags="A") / Raw(b"z" * 300))
    yield "short", b"\0" + vnet()[:7]
    # regression: a 64 KiB TSO read with gso_size covering it made one
    # 65536-byte segment whose 16-bit length wrapped to 0 (mostly zeros: git
    # stores it in a few hundred bytes)
    big = bytearray(v4_tcp(0))
    big += bytes(65536 - len(big))
    yield "regress-seg-len-wrap", b"\0" + vnet(1, 1, 40, 65535, 20, 16) + bytes(big)


# ------------------------------------------------------------------ GRO


def gro_batch(caps: int, pkts: Iterable[bytes]) -> bytes:
    return bytes([caps]) + b"".join(struct.pack("!H", len(p)) + p for p in pkts)


def gro_seeds() -> Iterable[tuple[str, bytes]]:
    mss = 40
    run4 = [v4_tcp(mss, seq=1000 + i * mss) for i in range(6)]
    run6 = [v6_tcp(mss, seq=5000 + i * mss) for i in range(4)]
    yield "tcp4-run", gro_batch(0, run4)
    yield "tcp6-run", gro_batch(0, run6)
    yield "tcp4-run-psh", gro_batch(0, [*run4[:3], v4_tcp(mss, seq=1300, flags="PA"), run4[4]])
    yield "tcp4-short-tail", gro_batch(0, [*run4[:3], v4_tcp(10, seq=1300)])
    yield "tcp-gap", gro_batch(0, [run4[0], run4[2], run4[3]])
    yield "interleaved", gro_batch(0, [run4[0], run6[0], run4[1], run6[1], v4_udp(), run4[2]])
    yield "mixed", gro_batch(0, [v4_udp(), v4_icmp(), v6_ext(), v4_tcp(0), v4_tcp(mss, flags="SA")])
    yield "tcp4-frag", gro_batch(0, [v4_tcp(mss, flags="A", frag=0) for _ in range(2)])
    yield "tight-out", gro_batch(0x15, run4 + run6)
    yield "few-out", gro_batch(0x02, [v4_udp(), v6_udp(), *run4])
    yield "garbage", gro_batch(0, [b"\x45" + b"\0" * 30, b"\x60" + b"\xff" * 50, b""])


# ------------------------------------------------------------------ IKE


def sa_payload() -> ike.SaPayload:
    t = ike.Transform.make
    return ike.SaPayload((
        ike.Proposal(1, 1, b"", (t(1, 20, 256), t(2, 7), t(3, 12), t(4, 19))),
        ike.Proposal(2, 1, b"", (t(1, 12, 128), t(2, 5), t(3, 12), t(4, 14))),
    ))


def child_sa() -> ike.SaPayload:
    return ike.SaPayload((ike.Proposal(1, 3, b"\x00\x00\x10\x00", (ike.Transform.make(1, 20, 128),
                                                                      ike.Transform.make(5, 0))),))


def selectors(initiator: bool) -> ike.TsPayload:
    return ike.TsPayload(initiator, (
        ike.TrafficSelector(7, 0, 0, 65535, bytes([10, 1, 0, 0]), bytes([10, 1, 255, 255])),
        ike.TrafficSelector(8, 17, 500, 500, bytes(16), b"\xff" * 16),
    ))


def msg(exchange: int, flags: int, mid: int, payloads: tuple[ike.Payload, ...]) -> bytes:
    return ike.Message(b"\x11" * 8, b"\x22" * 8 if mid else bytes(8), exchange, flags, mid, payloads).encode()


def ike_message_seeds() -> Iterable[tuple[str, bytes]]:
    i = HeaderFlag.INITIATOR
    init = (sa_payload(), ike.KePayload(19, b"\x04" * 64), ike.NoncePayload(b"n" * 32),
            ike.NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP, b"s" * 20),
            ike.NotifyPayload(NotifyType.NAT_DETECTION_DESTINATION_IP, b"d" * 20),
            ike.VendorIdPayload(b"tunsec"))
    auth = (ike.IdPayload(True, 2, b"moon.example"), ike.AuthPayload(2, b"a" * 32), child_sa(),
            selectors(True), selectors(False), ike.CertReqPayload(4, b"h" * 20),
            ike.NotifyPayload(16388, b"", 3, b"\x00\x00\x10\x00"))
    info = (ike.DeletePayload(3, 4, (b"\0\0\x10\0", b"\0\0\x20\0")), ike.CpPayload(1, b"\x00\x01\x00\x00"),
            ike.EapPayload(b"\x01\x02\x00\x05\x01"), ike.CertPayload(4, b"0\x82cert"), ike.DeletePayload(1, 0))
    # the datagram mode: first byte even
    yield "sa-init", b"\0" + msg(ExchangeType.IKE_SA_INIT, i, 0, init)
    yield "sa-init-cookie", b"\0" + msg(ExchangeType.IKE_SA_INIT, HeaderFlag.RESPONSE, 0,
                                         (ike.NotifyPayload(NotifyType.COOKIE, b"c" * 16),))
    yield "auth-sk", b"\0" + msg(ExchangeType.IKE_AUTH, i, 1, (ike.SkPayload(PayloadType.IDI, b"e" * 80),))
    # IKE fragments (RFC 7383): the first names the first inner payload, the others 0
    yield "auth-skf-first", b"\0" + msg(ExchangeType.IKE_AUTH, i, 1,
                                         (ike.SkfPayload(PayloadType.IDI, 1, 3, b"f" * 80),))
    yield "auth-skf-last", b"\0" + msg(ExchangeType.IKE_AUTH, HeaderFlag.RESPONSE, 1,
                                        (ike.SkfPayload(0, 3, 3, b"g" * 40),))
    yield "informational", b"\0" + msg(ExchangeType.INFORMATIONAL, i, 2, info)
    unknown = bytearray(msg(ExchangeType.INFORMATIONAL, i, 3, (ike.NoncePayload(b"n" * 16),)))
    unknown[16] = 200  # an unknown first payload, not critical
    yield "unknown-payload", b"\0" + bytes(unknown)
    unknown[29] = 0x80  # and critical
    yield "unknown-critical", b"\0" + bytes(unknown)
    bad = bytearray(msg(ExchangeType.IKE_SA_INIT, i, 0, ()))
    bad[17] = 0x30
    yield "major-version", b"\0" + bytes(bad)
    # the SK plaintext mode: first byte odd, then the first payload type
    yield "chain-auth", bytes([1, PayloadType.IDI]) + ike.encode_payloads(auth)
    yield "chain-info", bytes([1, PayloadType.DELETE]) + ike.encode_payloads(info)
    yield "chain-init", bytes([1, PayloadType.SA]) + ike.encode_payloads(init)


# ------------------------------------------------------------------ pipe


def pipe_seeds() -> Iterable[tuple[str, bytes]]:
    ep_l, ep_r = pipe.Endpoint(IPv4Address("192.0.2.2"), 4500), pipe.Endpoint(IPv4Address("192.0.2.1"), 4500)
    ep6 = pipe.Endpoint(IPv6Address("2001:db8::1"), 500)
    sel = pipe.Selector.from_networks(IPv4Network("10.1.0.0/16"), IPv4Network("10.2.0.0/16"), 6)
    sel6 = pipe.Selector.from_networks(IPv6Network("fd00::/8"), IPv6Network("fd00::/8"), 0)
    spec = pipe.SaSpec(0x1000, pipe.Direction.IN, pipe.Alg.AES128GCM16, b"k" * 20, False, 64, 1, ep_l, ep_r,
                       pipe.Lifetime(100, 10, 60), pipe.Lifetime(200, 20, 120), (sel, sel6))
    out = pipe.SaSpec(0x2000, pipe.Direction.OUT, pipe.Alg.AES256GCM16, b"K" * 36, True, 0, 7, ep_l, ep_r,
                      pipe.Lifetime(), pipe.Lifetime(), (), 5)
    pol = pipe.Policy(3, 10, pipe.Action.PROTECT, 7, sel)
    counters = {"packets": 5, "bytes": 500, "replay_drops": 1, "auth_drops": 2, "policy_drops": 3}
    info = pipe.SaInfo(0x1000, pipe.Direction.IN, "mature", pipe.Alg.AES128GCM16, False, 1, 64, ep_l, ep_r,
                       5, False, False, 9, counters)
    larval = pipe.SaInfo(0x3000, pipe.Direction.IN, "larval", None, False, 0, 0, None, None,
                         0, False, False, 1, dict.fromkeys(counters, 0))
    pinfo = pipe.PolicyInfo(3, 10, pipe.Action.PROTECT, 7, 0x2000, 42, sel)
    msgs: list[tuple[str, pipe.Message]] = [
        ("getspi", pipe.GetSpi(1, 256, 0xFFFFFFFF)),
        ("update", pipe.Update(2, spec)),
        ("add", pipe.Add(3, out)),
        ("delete", pipe.Delete(4, 0x1000, pipe.Direction.IN)),
        ("flush", pipe.Flush(5)),
        ("spdadd", pipe.SpdAdd(6, pol)),
        ("spddelete", pipe.SpdDelete(7, 3)),
        ("spdflush", pipe.SpdFlush(8)),
        ("dump", pipe.Dump(9)),
        ("send-ike", pipe.SendIke(10, b"\x11" * 28, ep6)),
        ("send-ike-local", pipe.SendIke(11, b"\x11" * 29, ep_r, ep_l)),
        ("reply-ok", pipe.Reply(2, pipe.MsgType.UPDATE, pipe.Errno.OK)),
        ("reply-getspi", pipe.Reply(1, pipe.MsgType.GETSPI, pipe.Errno.OK, spi=0x1234)),
        ("reply-error", pipe.Reply(3, pipe.MsgType.ADD, pipe.Errno.EEXIST)),
        ("reply-delete", pipe.Reply(4, pipe.MsgType.DELETE, pipe.Errno.OK, current=pipe.Lifetime(1500, 3, 60))),
        ("reply-dump", pipe.Reply(9, pipe.MsgType.DUMP, pipe.Errno.OK, more=True, sas=(info, larval),
                                  policies=(pinfo,), drops=(("auth", 3), ("replay", 0)))),
        ("acquire", pipe.Acquire(policy_id=3, selector=sel)),
        ("expire", pipe.Expire(spi=0x1000, direction=pipe.Direction.IN, hard=True,
                               reason=pipe.ExpireReason.PACKETS)),
        ("invalid-spi", pipe.InvalidSpi(spi=0x9999, remote=ep_r)),
        ("ike", pipe.Ike(data=b"\x22" * 40, remote=ep_r, local=ep_l)),
        ("update-first-use", pipe.Update(12, dataclasses.replace(spec, report_first_use=True))),
        ("first-use", pipe.FirstUse(spi=0x1000)),
        ("addr-added", pipe.AddrAdded(addrs=(IPv4Address("192.0.2.10"), IPv6Address("2001:db8::10")))),
        ("addr-added-any", pipe.AddrAdded()),
    ]
    for name, m in msgs:
        yield name, pipe.encode(m)
    # a turn's install and the worker's answers, as one batch each (pipe.batch)
    yield "batch-requests", pack([pipe.encode(m) for _, m in msgs[1:3]] + [pipe.encode(msgs[5][1])], 0)[0]
    yield "batch-answers", pack([pipe.encode(m) for _, m in msgs[11:15]] + [pipe.encode(msgs[-3][1])], 0)[0]
    bad = bytearray(pipe.encode(pipe.Flush(5)))
    bad[0] = 2
    yield "bad-version", bytes(bad)


def main() -> None:
    write("esp_inbound", esp_inbound_seeds())
    write("esp_outbound", esp_outbound_seeds())
    write("tun_vnet", tun_vnet_seeds())
    write("gro", gro_seeds())
    write("ike_message", ike_message_seeds())
    write("pipe_codec", pipe_seeds())
    for d in sorted(CORPUS.iterdir()):
        files = list(d.iterdir())
        print(f"{d.name}: {len(files)} seeds, {sum(f.stat().st_size for f in files)} bytes")


if __name__ == "__main__":
    main()
