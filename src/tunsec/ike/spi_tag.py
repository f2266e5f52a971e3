"""Our IKE SPIs, and the tag in them that tells the worker an IKE datagram came from where our answer went.

Every IKE SPI of ours is made here (``make_ike_spi``): 4 random bytes R, then a tag T for the address
the SA was made for (the IKE_SA_INIT's sender, or the peer we initiate to): the low 32 bits of
SipHash-2-4 under the service's key of R, the address family (4 or 6) and the address's bytes.
The worker holds the same key (IKE_SPI_KEY on the pipe, csrc/ikespi.c): an IKE datagram of no
established IKE SA whose SPI of ours carries the tag for its sender's address is an IKE_AUTH (or a
fragment, an EAP round) from someone who got our IKE_SA_INIT answer at that address, which an
off-path spoofer cannot send (one guess in 2^32).  Those get shares of the worker's queues of their
own (docs/pipe.md), so a spoofed flood does not keep them out, and road warriors behind one NAT are
not held to one unknown sender's share.  A tag proves nothing else: nothing is kept for it, and its
sender may flood with it (the worker's shares bound that).  So that tags are not gathered over
hours (one per address of a /64) to flood with at once, the key is replaced every ROTATE seconds
(``rotate``); the worker holds the last two, so a tag is good for one to two periods, longer
than a half-open SA lives (established SAs have IKE_SPI_ADD instead).

Half the SPI is random: two SAs for one address (clients behind one NAT share it) clash one time in
2^32 per pair.  Every SPI made here is checked before it is used: a new SA's by the endpoint's clash
loop (IkeEndpoint._new_sa), the new SPI of an IKE SA rekey or an IKE_AUTH redirect by the endpoint's
book of SPIs in use and reserved (spi_book.py), which draws again; a rekey's was not checked until
review revchild F2, and took another peer's IKE SA's entry.  SipHash is written out here because
no library offers it keyed; it costs a few us once per IKE SA, not per datagram.  The control process
uses the fast path's compiled one instead (~115k instructions fewer per IKE SA, of ~3.6M per client),
which the IKE service hands in (``IkeSpiTag.new(siphash=...)``, tunsec/dataplane/siphash.py):
this module stays free of the compiled module, and this SipHash is the reference the tests hold the C
one to and the fallback where the compiled module is not built."""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

Rng = Callable[[int], bytes]
SipHash = Callable[[bytes, bytes], int]   # SipHash-2-4 of data (2nd) under a 16-byte key (1st, two LE words)

KEY_LEN = 16
ROTATE = 120.0   # seconds a key makes tags (the worker takes them for twice that); half-open SAs live 30 s
_M = 0xFFFF_FFFF_FFFF_FFFF


@dataclass(slots=True)
class IkeSpiTag:
    """The key of the tags, and the one before it (repr hides both: secrets the worker shares).  One
    object for the endpoint and every SA made with it: a rotation reaches them all."""

    key: bytes = field(repr=False)
    previous: bytes | None = field(default=None, repr=False)
    # the reference SipHash below by default; the IKE service hands in the compiled one
    siphash: SipHash = field(default=lambda key, data: siphash24_bytes(key, data), repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.key) != KEY_LEN:
            raise ValueError(f"an IKE SPI tag key is {KEY_LEN} bytes")

    @classmethod
    def new(cls, rng: Rng = os.urandom, siphash: SipHash | None = None) -> IkeSpiTag:
        return cls(rng(KEY_LEN)) if siphash is None else cls(rng(KEY_LEN), siphash=siphash)

    def rotate(self, rng: Rng = os.urandom) -> None:
        self.previous, self.key = self.key, rng(KEY_LEN)

    def tag(self, r: bytes, ip: str, key: bytes | None = None) -> bytes:
        """T for R (4 bytes) and the address under key (the current one by default); ValueError if ip
        is no address (a name still to resolve)."""
        h = self.siphash(self.key if key is None else key, r + _family_and_bytes(ip))
        return (h & 0xFFFF_FFFF).to_bytes(4, "big")

    def carries(self, spi: bytes, ip: str) -> bool:
        """Whether spi was made for ip under the current key or the one before (what the worker checks in C)."""
        keys = (self.key,) if self.previous is None else (self.key, self.previous)
        return len(spi) == 8 and any(self.tag(spi[:4], ip, k) == spi[4:] for k in keys)


def _family_and_bytes(ip: str) -> bytes:
    """The family byte (4 or 6) and the address's bytes; ValueError if ip is no address.  A dotted
    quad by inet_pton (ipaddress.ip_address costs ~5 times as much; both take only the strict form)."""
    if ":" not in ip:
        try:
            return b"\x04" + socket.inet_pton(socket.AF_INET, ip)
        except OSError:
            pass   # ipaddress says why
    addr = ipaddress.ip_address(ip)
    return bytes((addr.version,)) + addr.packed


def make_ike_spi(rng: Rng, tag: IkeSpiTag | None, ip: str) -> bytes:
    """A new IKE SPI of ours for an SA with the peer at ip: tagged if there is a key and ip is an
    address (an FQDN still to resolve gets a random one), never all zero (RFC 7296 §3.1)."""
    while True:
        if tag is None:
            spi = rng(8)
        else:
            r = rng(4)
            try:
                spi = r + tag.tag(r, ip)
            except ValueError:
                spi = r + rng(4)
        if any(spi):
            return spi


def siphash24_bytes(key: bytes, data: bytes) -> int:
    """siphash24 under a 16-byte key (two little-endian words): a SipHash as IkeSpiTag takes it."""
    k0, k1 = struct.unpack("<QQ", key)
    return siphash24(k0, k1, data)


def siphash24(k0: int, k1: int, data: bytes) -> int:
    """SipHash-2-4 (Aumasson, Bernstein) of data under the key words k0, k1 (little-endian, as
    csrc/dp.c ts_siphash24 reads its key).

    The rounds are written out on local names: a round as a function over a list, with a call per
    rotation and every result masked, cost ~148k instructions per IKE SA (callgrind), this ~110k."""
    v0, v1 = k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D
    v2, v3 = k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573
    m = _M
    whole = len(data) - len(data) % 8
    words = [int.from_bytes(data[i:i + 8], "little") for i in range(0, whole, 8)]
    # the last word: the tail bytes and the length in the top byte
    words.append(int.from_bytes(data[whole:], "little") | (len(data) & 0xFF) << 56)
    rounds = 2
    for w in [*words, None]:
        if w is None:   # finalization: 4 rounds after the marker
            v2 ^= 0xFF
            rounds = 4
        else:
            v3 ^= w
        for _ in range(rounds):
            # the values may carry bits above the 64th (garbage, masked off at the end): only the
            # right shifts need them gone, and v1, v3 are masked each round so nothing grows
            v0 += v1
            v1 = (v1 << 13 | (v1 & m) >> 51) ^ v0
            v0 &= m
            v0 = v0 << 32 | v0 >> 32
            v2 += v3
            v3 = (v3 << 16 | (v3 & m) >> 48) ^ v2
            v0 += v3
            v3 = ((v3 << 21 | (v3 & m) >> 43) ^ v0) & m
            v2 += v1
            v1 = ((v1 << 17 | (v1 & m) >> 47) ^ v2) & m
            v2 &= m
            v2 = v2 << 32 | v2 >> 32
        if w is not None:
            v0 ^= w
    return (v0 ^ v1 ^ v2 ^ v3) & m
