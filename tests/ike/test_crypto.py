"""Known-answer tests for prf, prf+, SKEYSEED, key and KEYMAT derivation, DH and SK.

Expected values come from a deliberately naive second implementation written
straight from the RFC text with hashlib/hmac, not from the code under test.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct

import pytest

from tunsec.ike.constants import DhGroup, EncrId, ExchangeType, HeaderFlag, IntegId, PrfId
from tunsec.ike.crypto import CryptoError, Prf, derive_child_keys, derive_ike_keys, encr_key_len, skeyseed
from tunsec.ike.dh import SUPPORTED_GROUPS, DhError, generate_key_exchange
from tunsec.ike.message import Message, NoncePayload, NotifyPayload, decode_message
from tunsec.ike.secret import Secret
from tunsec.ike.sk import IntegrityError, SkCrypter, decrypt_message, encrypt_message


def naive_prf_plus(hash_name: str, key: bytes, seed: bytes, length: int) -> bytes:
    # RFC 7296 §2.13: T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n)
    out = b""
    prev = b""
    n = 1
    while len(out) < length:
        prev = hmac.new(key, prev + seed + bytes([n]), hash_name).digest()
        out += prev
        n += 1
    return out[:length]


def test_prf_rfc4231_case2() -> None:
    # RFC 4231 test case 2 for HMAC-SHA-256/384/512
    key, data = b"Jefe", b"what do ya want for nothing?"
    assert (
        Prf(PrfId.HMAC_SHA2_256)(key, data).hex() == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )
    assert Prf(PrfId.HMAC_SHA2_512)(key, data).hex().startswith("164b7a7bfcf819e2e395fbe73b56e0a387bd6422")


@pytest.mark.parametrize(
    ("prf_id", "hash_name"),
    [(PrfId.HMAC_SHA2_256, "sha256"), (PrfId.HMAC_SHA2_384, "sha384"), (PrfId.HMAC_SHA2_512, "sha512")],
)
@pytest.mark.parametrize("length", [1, 31, 32, 33, 100, 500])
def test_prf_plus_matches_naive(prf_id: int, hash_name: str, length: int) -> None:
    key, seed = os.urandom(48), os.urandom(77)
    assert Prf(prf_id).plus(key, seed, length) == naive_prf_plus(hash_name, key, seed, length)


def test_prf_plus_fixed_vector() -> None:
    # computed once by hand from the formula: T1 = HMAC-SHA256(k, "seed" | 01), T2 = HMAC(k, T1 | "seed" | 02)
    t1 = hmac.new(b"k" * 32, b"seed\x01", "sha256").digest()
    t2 = hmac.new(b"k" * 32, t1 + b"seed\x02", "sha256").digest()
    assert Prf(PrfId.HMAC_SHA2_256).plus(b"k" * 32, b"seed", 40) == (t1 + t2)[:40]


def test_prf_plus_limit() -> None:
    with pytest.raises(CryptoError):
        Prf(PrfId.HMAC_SHA2_256).plus(b"k", b"s", 255 * 32 + 1)


def test_skeyseed_and_ike_keys() -> None:
    ni, nr, shared = os.urandom(32), os.urandom(32), os.urandom(256)
    spi_i, spi_r = os.urandom(8), os.urandom(8)
    prf = Prf(PrfId.HMAC_SHA2_384)
    seed = skeyseed(prf, ni, nr, shared)
    assert seed == hmac.new(ni + nr, shared, "sha384").digest()
    # AES-256-CBC + HMAC-SHA2-256-128
    keys = derive_ike_keys(prf, seed, ni, nr, spi_i, spi_r, 32, 32)
    stream = naive_prf_plus("sha384", seed, ni + nr + spi_i + spi_r, 48 + 32 + 32 + 32 + 32 + 48 + 48)
    sizes = [48, 32, 32, 32, 32, 48, 48]
    chunks, pos = [], 0
    for size in sizes:
        chunks.append(stream[pos : pos + size])
        pos += size
    got = [keys.d, keys.ai, keys.ar, keys.ei, keys.er, keys.pi, keys.pr]
    assert [k.reveal() for k in got] == chunks


def test_ike_keys_aead_have_no_integrity_keys() -> None:
    prf = Prf(PrfId.HMAC_SHA2_256)
    keys = derive_ike_keys(prf, b"s" * 32, b"i" * 32, b"r" * 32, b"a" * 8, b"b" * 8, 36, 0)
    assert len(keys.ai) == 0 and len(keys.ar) == 0
    assert len(keys.ei) == 36
    expected = naive_prf_plus("sha256", b"s" * 32, b"i" * 32 + b"r" * 32 + b"a" * 8 + b"b" * 8, 32 + 72 + 64)
    assert keys.ei.reveal() == expected[32:68]
    assert keys.er.reveal() == expected[68:104]
    assert keys.pr.reveal() == expected[136:168]


def test_child_keymat_gcm_order_and_pfs() -> None:
    prf = Prf(PrfId.HMAC_SHA2_256)
    sk_d, ni, nr = os.urandom(32), os.urandom(32), os.urandom(32)
    for encr_len in (encr_key_len(EncrId.AES_GCM_16, 128), encr_key_len(EncrId.AES_GCM_16, 256)):
        keys = derive_child_keys(prf, Secret(sk_d), ni, nr, encr_len, 0)
        stream = naive_prf_plus("sha256", sk_d, ni + nr, 2 * encr_len)
        assert keys.encr_i2r.reveal() == stream[:encr_len]
        assert keys.encr_r2i.reveal() == stream[encr_len:]
        assert len(keys.integ_i2r) == 0
    assert encr_key_len(EncrId.AES_GCM_16, 128) == 20
    assert encr_key_len(EncrId.AES_GCM_16, 256) == 36
    shared = os.urandom(32)
    pfs = derive_child_keys(prf, Secret(sk_d), ni, nr, 20, 0, shared)
    assert pfs.encr_i2r.reveal() == naive_prf_plus("sha256", sk_d, shared + ni + nr, 20)


def test_child_keymat_cbc_layout() -> None:
    prf = Prf(PrfId.HMAC_SHA2_512)
    sk_d, ni, nr = os.urandom(64), os.urandom(32), os.urandom(32)
    keys = derive_child_keys(prf, Secret(sk_d), ni, nr, 16, 32)
    stream = naive_prf_plus("sha512", sk_d, ni + nr, 96)
    assert (keys.encr_i2r.reveal(), keys.integ_i2r.reveal()) == (stream[:16], stream[16:48])
    assert (keys.encr_r2i.reveal(), keys.integ_r2i.reveal()) == (stream[48:64], stream[64:])


def test_secret_is_not_printed() -> None:
    s = Secret(b"topsecret")
    assert "topsecret" not in repr(s) and "topsecret" not in str(s) and "746f70" not in repr(s)
    prf = Prf(PrfId.HMAC_SHA2_256)
    keys = derive_ike_keys(prf, b"x" * 32, b"i" * 32, b"r" * 32, b"a" * 8, b"b" * 8, 20, 0)
    assert keys.d.reveal().hex() not in repr(keys)


@pytest.mark.parametrize("group", sorted(SUPPORTED_GROUPS))
def test_dh_groups_agree(group: int) -> None:
    a, b = generate_key_exchange(group), generate_key_exchange(group)
    shared = a.shared_secret(b.public)
    assert shared == b.shared_secret(a.public)
    expected_len = {14: 256, 15: 384, 16: 512, 19: 32, 20: 48, 21: 66, 31: 32, 32: 56}[group]
    assert len(shared) == expected_len
    assert len(a.public) == {19: 64, 20: 96, 21: 132}.get(group, expected_len)
    assert "private" not in repr(a).lower()


@pytest.mark.parametrize("group", sorted(SUPPORTED_GROUPS))
def test_dh_rejects_bad_public_values(group: int) -> None:
    a = generate_key_exchange(group)
    with pytest.raises(DhError):
        a.shared_secret(a.public[:-1])
    if group in (DhGroup.MODP_2048, DhGroup.MODP_3072, DhGroup.MODP_4096):
        for bad in (1, 0):
            with pytest.raises(DhError):
                a.shared_secret(bad.to_bytes(len(a.public), "big"))
    if group in (DhGroup.ECP_256, DhGroup.ECP_384, DhGroup.ECP_521):
        with pytest.raises(DhError):
            a.shared_secret(b"\x01" * len(a.public))
    if group == DhGroup.CURVE25519:
        with pytest.raises(DhError):
            a.shared_secret(bytes(32))


def test_dh_unknown_group() -> None:
    with pytest.raises(DhError):
        generate_key_exchange(2)


def _msg(payloads: tuple[NoncePayload | NotifyPayload, ...]) -> Message:
    return Message(b"A" * 8, b"B" * 8, ExchangeType.IKE_AUTH, HeaderFlag.INITIATOR, 1, payloads)


CIPHERS = [
    (EncrId.AES_GCM_16, 128, None),
    (EncrId.AES_GCM_16, 256, None),
    (EncrId.AES_CBC, 128, IntegId.HMAC_SHA2_256_128),
    (EncrId.AES_CBC, 256, IntegId.HMAC_SHA2_384_192),
    (EncrId.AES_CBC, 256, IntegId.HMAC_SHA2_512_256),
]


@pytest.mark.parametrize(("encr", "bits", "integ"), CIPHERS)
def test_sk_round_trip_and_tamper(encr: int, bits: int, integ: int | None) -> None:
    ek = Secret(os.urandom(encr_key_len(encr, bits)))
    ak = Secret(os.urandom({None: 0, 12: 32, 13: 48, 14: 64}[integ])) if integ else None
    tx = SkCrypter(encr, ek, integ, ak, os.urandom)
    rx = SkCrypter(encr, ek, integ, ak, os.urandom)
    msg = _msg((NoncePayload(b"n" * 32), NotifyPayload(16384)))
    raw = encrypt_message(msg, tx)
    decoded = decode_message(raw)
    assert decrypt_message(raw, decoded, rx) == msg.payloads
    for pos in (1, 20, 30, len(raw) - 1, len(raw) // 2):
        bad = bytearray(raw)
        bad[pos] ^= 1
        with pytest.raises((IntegrityError, Exception)):
            decrypt_message(bytes(bad), decode_message(bytes(bad)), rx)


def test_sk_gcm_independent() -> None:
    """Open an AES-GCM SK payload with a from-scratch RFC 5282 reading."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key = os.urandom(20)
    raw = encrypt_message(
        _msg((NoncePayload(b"q" * 16),)), SkCrypter(EncrId.AES_GCM_16, Secret(key), None, None, os.urandom)
    )
    (length,) = struct.unpack_from("!H", raw, 30)
    assert raw[28] == 40  # first inner payload: Nonce
    iv, rest = raw[32:40], raw[40:]
    plain = AESGCM(key[:16]).decrypt(key[16:] + iv, rest, raw[:32])
    assert plain[-1] == 0  # no padding needed for GCM
    assert plain[:-1] == struct.pack("!BBH", 0, 0, 20) + b"q" * 16
    assert length == len(raw) - 28


def test_sk_cbc_independent() -> None:
    """Open an AES-CBC + HMAC-SHA2-256-128 SK payload from the RFC text."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    ek, ak = os.urandom(16), os.urandom(32)
    raw = encrypt_message(
        _msg((NoncePayload(b"q" * 16),)),
        SkCrypter(EncrId.AES_CBC, Secret(ek), IntegId.HMAC_SHA2_256_128, Secret(ak), os.urandom),
    )
    assert hmac.compare_digest(hmac.new(ak, raw[:-16], hashlib.sha256).digest()[:16], raw[-16:])
    iv, ct = raw[32:48], raw[48:-16]
    dec = Cipher(algorithms.AES(ek), modes.CBC(iv)).decryptor()
    plain = dec.update(ct) + dec.finalize()
    assert len(plain) % 16 == 0
    assert plain[:20] == struct.pack("!BBH", 0, 0, 20) + b"q" * 16
    assert plain[-1] == len(plain) - 21


@pytest.mark.parametrize(
    ("prf_id", "hash_name"),
    [(PrfId.HMAC_SHA2_256, "sha256"), (PrfId.HMAC_SHA2_384, "sha384"), (PrfId.HMAC_SHA2_512, "sha512")],
)
@pytest.mark.parametrize("key_len", [0, 1, 32, 63, 64, 65, 127, 128, 129, 300])
def test_prf_is_hmac_for_any_key_length(prf_id: int, hash_name: str, key_len: int) -> None:
    # keys longer than the hash's block are hashed first (RFC 2104): a long PSK takes that path
    key, data = os.urandom(key_len), os.urandom(90)
    assert Prf(prf_id)(key, data) == hmac.new(key, data, hash_name).digest()
    assert Prf(prf_id).plus(key, data, 200) == naive_prf_plus(hash_name, key, data, 200)
