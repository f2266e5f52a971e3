"""AES-GCM known-answer tests through the C path (ts_gcm_seal / ts_gcm_open).

The vectors are the test cases of McGrew & Viega, "The Galois/Counter Mode
of Operation (GCM)", Appendix B (also in NIST's GCM validation suite), for
AES-128 and AES-256 with a 96-bit IV, with and without AAD.
"""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from tunsec.dataplane.fastpath import DataplaneError, gcm_open, gcm_seal

_P64 = (
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
    "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255"
)
_P60 = _P64[:120]
_AAD = "feedfacedeadbeeffeedfacedeadbeefabaddad2"
_K128 = "feffe9928665731c6d6a8f9467308308"
_K256 = _K128 * 2
_IV = "cafebabefacedbaddecaf888"
_Z12 = "00" * 12

# (name, key, iv, aad, plaintext, ciphertext, tag)
VECTORS = [
    ("tc1-aes128-empty", "00" * 16, _Z12, "", "", "", "58e2fccefa7e3061367f1d57a4e7455a"),
    (
        "tc2-aes128",
        "00" * 16,
        _Z12,
        "",
        "00" * 16,
        "0388dace60b6a392f328c2b971b2fe78",
        "ab6e47d42cec13bdf53a67b21257bddf",
    ),
    (
        "tc3-aes128",
        _K128,
        _IV,
        "",
        _P64,
        "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
        "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985",
        "4d5c2af327cd64a62cf35abd2ba6fab4",
    ),
    (
        "tc4-aes128-aad",
        _K128,
        _IV,
        _AAD,
        _P60,
        "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
        "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091",
        "5bc94fbc3221a5db94fae95ae7121a47",
    ),
    ("tc13-aes256-empty", "00" * 32, _Z12, "", "", "", "530f8afbc74536b9a963b4f1c4cb738b"),
    (
        "tc14-aes256",
        "00" * 32,
        _Z12,
        "",
        "00" * 16,
        "cea7403d4d606b6e074ec5d3baf39d18",
        "d0d1c8a799996bf0265b98b5d48ab919",
    ),
    (
        "tc15-aes256",
        _K256,
        _IV,
        "",
        _P64,
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
        "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
        "b094dac5d93471bdec1a502270e3cc6c",
    ),
    (
        "tc16-aes256-aad",
        _K256,
        _IV,
        _AAD,
        _P60,
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
        "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
        "76fc6ece0f4e1768cddf8853bb2d551b",
    ),
]

_IDS = [v[0] for v in VECTORS]
_VEC = [tuple(bytes.fromhex(x) for x in v[1:]) for v in VECTORS]


@pytest.mark.parametrize(("key", "iv", "aad", "pt", "ct", "tag"), _VEC, ids=_IDS)
def test_seal_matches_vector(key: bytes, iv: bytes, aad: bytes, pt: bytes, ct: bytes, tag: bytes) -> None:
    assert gcm_seal(key, iv, aad, pt) == ct + tag


@pytest.mark.parametrize(("key", "iv", "aad", "pt", "ct", "tag"), _VEC, ids=_IDS)
def test_open_matches_vector(key: bytes, iv: bytes, aad: bytes, pt: bytes, ct: bytes, tag: bytes) -> None:
    assert gcm_open(key, iv, aad, ct + tag) == pt


def _flip(b: bytes, i: int) -> bytes:
    return b[:i] + bytes([b[i] ^ 0x01]) + b[i + 1 :]


@pytest.mark.parametrize(("key", "iv", "aad", "pt", "ct", "tag"), _VEC, ids=_IDS)
def test_any_change_fails_the_tag(key: bytes, iv: bytes, aad: bytes, pt: bytes, ct: bytes, tag: bytes) -> None:
    sealed = ct + tag
    # a flipped bit anywhere in the ciphertext or the tag
    for i in range(len(sealed)):
        assert gcm_open(key, iv, aad, _flip(sealed, i)) is None, f"bit flip at byte {i} accepted"
    # a different AAD, IV or key
    assert gcm_open(key, iv, aad + b"\0", sealed) is None
    if aad:
        assert gcm_open(key, iv, _flip(aad, 0), sealed) is None
        assert gcm_open(key, iv, b"", sealed) is None
    assert gcm_open(key, _flip(iv, 11), aad, sealed) is None
    assert gcm_open(_flip(key, 0), iv, aad, sealed) is None
    # truncated: the last ciphertext byte becomes the first tag byte
    assert gcm_open(key, iv, aad, sealed[:-1]) is None
    assert gcm_open(key, iv, aad, tag[:15]) is None


def test_bad_key_length_is_refused() -> None:
    with pytest.raises(DataplaneError):
        gcm_seal(b"\0" * 24, b"\0" * 12, b"", b"abc")  # AES-192 is not in the fast path
    with pytest.raises(DataplaneError):
        gcm_seal(b"\0" * 20, b"\0" * 12, b"", b"abc")  # key || salt is for ESP SAs, not raw GCM
    with pytest.raises(DataplaneError):
        gcm_open(b"\0" * 15, b"\0" * 12, b"", b"\0" * 20)


@settings(max_examples=200, deadline=None)
@given(
    keylen=st.sampled_from([16, 32]),
    iv=st.binary(min_size=12, max_size=12),
    aad=st.binary(max_size=64),
    pt=st.binary(max_size=2048),
)
def test_agrees_with_cryptography(keylen: int, iv: bytes, aad: bytes, pt: bytes) -> None:
    """Beyond the vectors: any size (partial blocks, long AAD) agrees with OpenSSL via `cryptography`."""
    key = os.urandom(keylen)
    sealed = gcm_seal(key, iv, aad, pt)
    assert sealed == AESGCM(key).encrypt(iv, pt, aad)
    assert gcm_open(key, iv, aad, sealed) == pt
