"""An ESP implementation written for the tests, independent of csrc/.

RFC 4303 (ESP) with AES-GCM as RFC 4106 puts it, built on the
`cryptography` package: SPI | seq | IV(8) | ciphertext | ICV(16), nonce =
salt(4) || IV, AAD = SPI || seq32 or SPI || seq_hi || seq_lo with ESN,
padding 1, 2, 3, ..., pad length, next header.  Plus helpers that set up a
pair of tunsec Dataplanes (A sends, B receives) the way the worker would.
"""

from __future__ import annotations

import ipaddress
import os
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from tunsec.dataplane._fastpath import ffi

from tunsec.dataplane.fastpath import Dataplane, Drop
from tunsec.dataplane.pipe import (
    Action,
    Alg,
    Direction,
    Endpoint,
    Lifetime,
    Policy,
    SaSpec,
    Selector,
)

ICV = 16
HDR = 8
IV = 8
MASK32 = 0xFFFF_FFFF

NET_A4 = ipaddress.ip_network("10.1.0.0/24")
NET_B4 = ipaddress.ip_network("10.2.0.0/24")
NET_A6 = ipaddress.ip_network("fd00:a::/64")
NET_B6 = ipaddress.ip_network("fd00:b::/64")
SEL4 = Selector.from_networks(NET_A4, NET_B4)
SEL6 = Selector.from_networks(NET_A6, NET_B6)
A_OUTER = Endpoint(ipaddress.ip_address("192.0.2.1"), 4500)
B_OUTER = Endpoint(ipaddress.ip_address("192.0.2.2"), 4500)


def aad_of(spi: int, seq: int, esn: bool) -> bytes:
    if esn:
        return struct.pack("!III", spi, seq >> 32, seq & MASK32)
    return struct.pack("!II", spi, seq & MASK32)


def default_pad(n: int) -> bytes:
    return bytes(range(1, n + 1))


def esp_seal(
    key: bytes,
    spi: int,
    seq: int,
    payload: bytes,
    next_header: int,
    *,
    esn: bool = False,
    iv: bytes | None = None,
    padlen: int | None = None,
    pad: bytes | None = None,
    aad_seq: int | None = None,
) -> bytes:
    """One ESP packet (the UDP payload).  `payload` is the inner packet plus any
    TFC padding; `padlen`/`pad` override the minimal RFC padding; `aad_seq`
    authenticates a sequence number other than the one on the wire."""
    if padlen is None:
        padlen = (4 - (len(payload) + 2) % 4) % 4
    if pad is None:
        pad = default_pad(padlen)
    assert len(pad) == padlen
    if iv is None:
        iv = struct.pack("!Q", seq)
    plaintext = payload + pad + bytes([padlen, next_header])
    assert len(plaintext) % 4 == 0, "RFC 4303: the ciphertext ends on a 4-byte boundary"
    nonce = key[-4:] + iv
    aad = aad_of(spi, seq if aad_seq is None else aad_seq, esn)
    sealed = AESGCM(key[:-4]).encrypt(nonce, plaintext, aad)
    return struct.pack("!II", spi, seq & MASK32) + iv + sealed


@dataclass(frozen=True)
class Opened:
    spi: int
    seq_lo: int
    iv: bytes
    payload: bytes  # inner packet (and any TFC padding)
    pad: bytes
    next_header: int


def esp_open(key: bytes, packet: bytes, *, esn: bool = False, seq_hi: int = 0) -> Opened:
    """Parse and decrypt; raises on a bad ICV (InvalidTag) or a bad trailer."""
    assert len(packet) >= HDR + IV + 4 + ICV, "shorter than the smallest ESP packet"
    spi, seq_lo = struct.unpack("!II", packet[:HDR])
    iv = packet[HDR : HDR + IV]
    seq = (seq_hi << 32) | seq_lo
    plaintext = AESGCM(key[:-4]).decrypt(key[-4:] + iv, packet[HDR + IV :], aad_of(spi, seq, esn))
    assert len(plaintext) % 4 == 0, "ciphertext not 4-byte aligned"
    padlen, nh = plaintext[-2], plaintext[-1]
    body = plaintext[:-2]
    pad = body[len(body) - padlen :]
    assert pad == default_pad(padlen), f"padding bytes {pad.hex()} are not 1, 2, 3, ..."
    return Opened(spi, seq_lo, iv, body[: len(body) - padlen], pad, nh)


# ----------------------------------------------------------------- inner packets


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4_udp(
    src: str, dst: str, payload: bytes, sport: int = 1234, dport: int = 5678, df: bool = False, ident: int = 1
) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    total = 20 + len(udp)
    hdr = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        total,
        ident,
        0x4000 if df else 0,
        64,
        17,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
    return hdr + udp


def ipv6_udp(src: str, dst: str, payload: bytes, sport: int = 1234, dport: int = 5678) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    hdr = struct.pack(
        "!IHBB16s16s",
        6 << 28,
        len(udp),
        17,
        64,
        ipaddress.IPv6Address(src).packed,
        ipaddress.IPv6Address(dst).packed,
    )
    return hdr + udp


def inner(family: int, payload: bytes = b"hello tunsec", *, df: bool = False) -> bytes:
    """A UDP packet from A's side to B's side, inside SEL4 / SEL6."""
    if family == 4:
        return ipv4_udp("10.1.0.1", "10.2.0.1", payload, df=df)
    return ipv6_udp("fd00:a::1", "fd00:b::1", payload)


# ------------------------------------------------------------------- SA set-up


def spec(
    spi: int,
    direction: Direction,
    key: bytes,
    *,
    esn: bool = False,
    window: int = 64,
    reqid: int = 1,
    seq_start: int = 0,
    soft: Lifetime | None = None,
    hard: Lifetime | None = None,
    selectors: tuple[Selector, ...] = (SEL4, SEL6),
) -> SaSpec:
    out = direction is Direction.OUT
    return SaSpec(
        spi=spi,
        direction=direction,
        alg=Alg.AES128GCM16 if len(key) == 20 else Alg.AES256GCM16,
        key=key,
        esn=esn,
        replay_window=window,
        reqid=reqid,
        local=A_OUTER if out else B_OUTER,
        remote=B_OUTER if out else A_OUTER,
        soft=soft or Lifetime(),
        hard=hard or Lifetime(),
        selectors=selectors,
        seq_start=seq_start,
    )


def new_key(alg: Alg = Alg.AES128GCM16) -> bytes:
    return os.urandom(alg.key_len)


def sender(
    key: bytes,
    spi: int = 0x1001,
    *,
    esn: bool = False,
    seq_start: int = 0,
    reqid: int = 1,
    soft: Lifetime | None = None,
    hard: Lifetime | None = None,
) -> Dataplane:
    """A Dataplane with one outbound SA and PROTECT policies for SEL4 and SEL6."""
    dp = Dataplane()
    dp.add(spec(spi, Direction.OUT, key, esn=esn, window=0, reqid=reqid, seq_start=seq_start, soft=soft, hard=hard))
    dp.spd_add(Policy(id=1, priority=10, action=Action.PROTECT, reqid=reqid, selector=SEL4))
    dp.spd_add(Policy(id=2, priority=10, action=Action.PROTECT, reqid=reqid, selector=SEL6))
    return dp


def receiver(
    key: bytes,
    *,
    esn: bool = False,
    window: int = 64,
    soft: Lifetime | None = None,
    hard: Lifetime | None = None,
    selectors: tuple[Selector, ...] = (SEL4, SEL6),
) -> tuple[Dataplane, int]:
    """A Dataplane with one inbound SA made the way the worker makes them: GETSPI then UPDATE."""
    dp = Dataplane()
    spi = dp.getspi()
    dp.update(spec(spi, Direction.IN, key, esn=esn, window=window, soft=soft, hard=hard, selectors=selectors))
    return dp, spi


def ike_message(payload: bytes = b"", message_id: int = 0) -> bytes:
    """An IKE_SA_INIT request (RFC 7296 §3.1): a header whose length field counts the payload too,
    the least the fast path passes up from port 500 or after the non-ESP marker."""
    header = bytes(range(0xA0, 0xA8)) + bytes(8) + bytes([33, 0x20, 34, 0x08])
    return header + struct.pack("!II", message_id, 28 + len(payload)) + payload


def opened(packet: bytes) -> tuple[bytes, Drop, dict[str, int], int]:
    """An inner packet sealed by the peer and opened by a fresh receiver (SEL4, SEL6): what comes
    out, why not, the drops counted, the SA's policy_drops."""
    key = new_key()
    dp, spi = receiver(key)
    out, drop = dp.inbound(esp_seal(key, spi, 1, packet, 4 if packet[0] >> 4 == 4 else 41))
    return out, drop, dp.drops(), dp.get(spi, Direction.IN).counters["policy_drops"]


def total_drops(dp: Dataplane) -> int:
    return sum(dp.drops().values())


def c_addr(ep: Endpoint) -> Any:
    """ep as the C fast path's ts_addr (for its test hooks that take a source address)."""
    a = ffi.new("ts_addr *")
    a.family = ep.addr.version
    a.addr[0:len(ep.addr.packed)] = ep.addr.packed
    a.port = ep.port
    return a
