"""Key derivation of IKEv2 (RFC 7296 §2.13, §2.14, §2.17) and algorithm properties.

prf, prf+, SKEYSEED, the seven IKE SA keys and Child SA KEYMAT. Every key is a
:class:`Secret`, so none of them can end up in a repr or a log line.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from tunsec.immutable import immutable

from .constants import EncrId, IntegId, PrfId
from .secret import Secret

_PRF_HASH: dict[int, str] = {
    PrfId.HMAC_SHA2_256: "sha256", PrfId.HMAC_SHA2_384: "sha384", PrfId.HMAC_SHA2_512: "sha512",
}
_HASH_SIZE = {"sha256": 32, "sha384": 48, "sha512": 64}
# the PRF's hash for cryptography's HMAC and HKDFExpand; prf+ is HKDF-Expand (RFC 5869 §2.3:
# T(n) = HMAC(PRK, T(n-1) | info | n), with the seed as info)
_HASH: dict[int, hashes.HashAlgorithm] = {
    PrfId.HMAC_SHA2_256: hashes.SHA256(), PrfId.HMAC_SHA2_384: hashes.SHA384(), PrfId.HMAC_SHA2_512: hashes.SHA512(),
}
# RFC 4868: key length = hash output length, ICV = half of it
_INTEG = {
    IntegId.HMAC_SHA2_256_128: ("sha256", 32, 16),
    IntegId.HMAC_SHA2_384_192: ("sha384", 48, 24),
    IntegId.HMAC_SHA2_512_256: ("sha512", 64, 32),
}
GCM_SALT_LEN = 4  # RFC 4106/5282: 4 bytes of salt follow each AES-GCM key


class CryptoError(Exception):
    """An algorithm we do not implement, or key material that is unusable."""


@immutable(slots=True)
class Prf:
    """An HMAC-SHA2 PRF (RFC 4868)."""

    transform_id: int

    def __post_init__(self) -> None:
        if self.transform_id not in _PRF_HASH:
            raise CryptoError(f"unsupported PRF {self.transform_id}")

    @property
    def hash_name(self) -> str:
        return _PRF_HASH[self.transform_id]

    @property
    def size(self) -> int:
        return _HASH_SIZE[_PRF_HASH[self.transform_id]]   # (not through hash_name: a frame less)

    def __call__(self, key: bytes, data: bytes) -> bytes:
        """HMAC (RFC 2104) by cryptography's OpenSSL binding: fewer instructions than hashlib's
        (hmac.digest fetches the digest and a MAC context from OpenSSL's provider tables per
        call; two hashes keyed with K ^ ipad and K ^ opad take six calls from Python)."""
        mac = hmac.HMAC(key, _HASH[self.transform_id])
        mac.update(data)
        return mac.finalize()

    def plus(self, key: bytes, seed: bytes, length: int) -> bytes:
        """prf+ (RFC 7296 §2.13): T1 | T2 | ... with a one-byte counter, at most 255 rounds.
        That is HKDF-Expand with the seed as info: OpenSSL's runs the rounds, a third fewer
        instructions than the same HMACs from hashlib (each IKE and Child SA's keys)."""
        if -(-length // self.size) > 255:
            raise CryptoError("prf+ cannot produce that much key material")
        return HKDFExpand(_HASH[self.transform_id], length, seed).derive(key)


def integ_params(transform_id: int) -> tuple[str, int, int]:
    """(hash name, key length, ICV length) of an HMAC-SHA2 integrity transform."""
    try:
        return _INTEG[IntegId(transform_id)]
    except (ValueError, KeyError):
        raise CryptoError(f"unsupported integrity algorithm {transform_id}") from None


def is_aead(encr_id: int) -> bool:
    return encr_id == EncrId.AES_GCM_16


def encr_key_len(encr_id: int, key_bits: int | None) -> int:
    """Bytes of key material an encryption transform consumes (salt included for GCM)."""
    if encr_id not in (EncrId.AES_CBC, EncrId.AES_GCM_16):
        raise CryptoError(f"unsupported encryption algorithm {encr_id}")
    if key_bits not in (128, 192, 256):
        raise CryptoError(f"unsupported AES key length {key_bits}")
    return key_bits // 8 + (GCM_SALT_LEN if is_aead(encr_id) else 0)


def skeyseed(prf: Prf, nonce_i: bytes, nonce_r: bytes, shared: bytes) -> bytes:
    """SKEYSEED = prf(Ni | Nr, g^ir) (RFC 7296 §2.14)."""
    return prf(nonce_i + nonce_r, shared)


def rekey_skeyseed(old_prf: Prf, old_sk_d: Secret, shared: bytes, nonce_i: bytes, nonce_r: bytes) -> bytes:
    """SKEYSEED of a rekeyed IKE SA: prf(SK_d (old), g^ir (new) | Ni | Nr) (RFC 7296 §2.18).

    The old IKE SA's PRF computes it; the new SA's PRF then drives prf+.
    """
    return old_prf(old_sk_d.reveal(), shared + nonce_i + nonce_r)


@immutable(slots=True)
class IkeKeys:
    """SK_d, SK_ai, SK_ar, SK_ei, SK_er, SK_pi, SK_pr of one IKE SA."""

    d: Secret
    ai: Secret
    ar: Secret
    ei: Secret
    er: Secret
    pi: Secret
    pr: Secret

    @classmethod
    def only_d(cls, d: Secret) -> IkeKeys:
        """SK_d alone (the rest empty): what an established IKE SA keeps (IkeSaState.forget_setup)."""
        return cls(d, _NO_KEY, _NO_KEY, _NO_KEY, _NO_KEY, _NO_KEY, _NO_KEY)


_NO_KEY = Secret(b"")


def derive_ike_keys(
    prf: Prf,
    seed: bytes,
    nonce_i: bytes,
    nonce_r: bytes,
    spi_i: bytes,
    spi_r: bytes,
    encr_len: int,
    integ_len: int,
) -> IkeKeys:
    """{SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr} = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr)."""
    prf_size = prf.size
    sizes = (prf_size, integ_len, integ_len, encr_len, encr_len, prf_size, prf_size)
    stream = prf.plus(seed, nonce_i + nonce_r + spi_i + spi_r, sum(sizes))
    parts: list[Secret] = []
    pos = 0
    for size in sizes:
        parts.append(Secret(stream[pos : pos + size]))
        pos += size
    return IkeKeys(*parts)


@immutable
class ChildKeys:
    """Child SA keys per direction, as the ESP dataplane wants them.

    For AES-GCM each ``encr`` is key || 4-byte salt and ``integ`` is empty.
    """

    encr_i2r: Secret
    integ_i2r: Secret
    encr_r2i: Secret
    integ_r2i: Secret


def child_seed(pfs_shared: bytes | None, nonce_i: bytes, nonce_r: bytes) -> bytes:
    """KEYMAT's seed: [g^ir (new) |] Ni | Nr (RFC 7296 §2.17); keymat_seeds.py compares them whole."""
    return (pfs_shared or b"") + nonce_i + nonce_r


def derive_child_keys(
    prf: Prf,
    sk_d: Secret,
    nonce_i: bytes,
    nonce_r: bytes,
    encr_len: int,
    integ_len: int,
    pfs_shared: bytes | None = None,
) -> ChildKeys:
    """KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr) (RFC 7296 §2.17).

    Initiator-to-responder keys come first, encryption before integrity.
    """
    seed = child_seed(pfs_shared, nonce_i, nonce_r)
    stream = prf.plus(sk_d.reveal(), seed, 2 * (encr_len + integ_len))
    a = encr_len
    b = a + integ_len
    c = b + encr_len
    return ChildKeys(Secret(stream[:a]), Secret(stream[a:b]), Secret(stream[b:c]), Secret(stream[c:]))
