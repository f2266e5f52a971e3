"""MD4 (RFC 1320), only for MSCHAPv2's NT password hash.

OpenSSL 3 keeps MD4 in its legacy provider, which hashlib does not load, so
MSCHAPv2 cannot get it from the standard library; MD4 is short enough to own.
"""
from __future__ import annotations

import struct

_MASK = 0xFFFFFFFF


def _rotl(x: int, n: int) -> int:
    x &= _MASK
    return ((x << n) | (x >> (32 - n))) & _MASK


def md4(data: bytes) -> bytes:
    """The 16-byte MD4 digest of ``data``."""
    msg = bytearray(data)
    bit_len = (8 * len(data)) & 0xFFFFFFFFFFFFFFFF
    msg.append(0x80)
    msg.extend(b"\x00" * ((56 - len(msg) % 64) % 64))
    msg.extend(struct.pack("<Q", bit_len))
    h = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476]
    for off in range(0, len(msg), 64):
        x = struct.unpack("<16I", msg[off:off + 64])
        a, b, c, d = h

        def f(x_: int, y: int, z: int) -> int:
            return (x_ & y) | (~x_ & z)

        def g(x_: int, y: int, z: int) -> int:
            return (x_ & y) | (x_ & z) | (y & z)

        for i in range(16):
            k = i
            s = (3, 7, 11, 19)[i % 4]
            a, b, c, d = d, _rotl(a + f(b, c, d) + x[k], s), b, c
        for i in range(16):
            k = (i % 4) * 4 + i // 4
            s = (3, 5, 9, 13)[i % 4]
            a, b, c, d = d, _rotl(a + g(b, c, d) + x[k] + 0x5A827999, s), b, c
        for i in range(16):
            k = (0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15)[i]
            s = (3, 9, 11, 15)[i % 4]
            a, b, c, d = d, _rotl(a + (b ^ c ^ d) + x[k] + 0x6ED9EBA1, s), b, c
        h = [(v + w) & _MASK for v, w in zip(h, (a, b, c, d), strict=True)]
    return struct.pack("<4I", *h)
