"""AUTH payload computation and verification (RFC 7296 §2.15, RFC 7427, RFC 4754).

The signed octets are ``RealMessage | NonceOfPeer | prf(SK_p, RestOfIDPayload)``.
PSK: ``AUTH = prf(prf(PSK, "Key Pad for IKEv2"), octets)``, compared in
constant time. Signatures use method 14 (RFC 7427: an AlgorithmIdentifier in
front of the signature) when the peer announced SIGNATURE_HASH_ALGORITHMS, as
strongSwan does; otherwise the classic methods 1 (RSA PKCS#1 v1.5 with SHA-1)
and 9/10/11 (ECDSA with r||s per RFC 4754).
"""

from __future__ import annotations

import hmac
from collections.abc import Collection
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from . import _der
from .constants import AuthMethod, HashAlgorithm
from .crypto import Prf
from .message import AuthPayload, IdPayload
from .secret import Secret

KEY_PAD = b"Key Pad for IKEv2"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

# hashes this implementation can sign and verify with, as announced in
# SIGNATURE_HASH_ALGORITHMS (RFC 7427 §4)
SUPPORTED_HASHES = (
    HashAlgorithm.SHA2_256,
    HashAlgorithm.SHA2_384,
    HashAlgorithm.SHA2_512,
    HashAlgorithm.IDENTITY,
)

_OID_RSA_PKCS1 = {
    "1.2.840.113549.1.1.11": hashes.SHA256,
    "1.2.840.113549.1.1.12": hashes.SHA384,
    "1.2.840.113549.1.1.13": hashes.SHA512,
}
_OID_ECDSA = {
    "1.2.840.10045.4.3.2": hashes.SHA256,
    "1.2.840.10045.4.3.3": hashes.SHA384,
    "1.2.840.10045.4.3.4": hashes.SHA512,
}
_OID_HASH = {
    "2.16.840.1.101.3.4.2.1": hashes.SHA256,
    "2.16.840.1.101.3.4.2.2": hashes.SHA384,
    "2.16.840.1.101.3.4.2.3": hashes.SHA512,
}
_OID_PSS = "1.2.840.113549.1.1.10"
_OID_MGF1 = "1.2.840.113549.1.1.8"
_OID_ED25519 = "1.3.101.112"
_HASH_IDS: dict[type[hashes.HashAlgorithm], int] = {
    hashes.SHA256: HashAlgorithm.SHA2_256,
    hashes.SHA384: HashAlgorithm.SHA2_384,
    hashes.SHA512: HashAlgorithm.SHA2_512,
}
_CLASSIC_ECDSA = {
    AuthMethod.ECDSA_SHA256_P256: (ec.SECP256R1, hashes.SHA256),
    AuthMethod.ECDSA_SHA384_P384: (ec.SECP384R1, hashes.SHA384),
    AuthMethod.ECDSA_SHA512_P521: (ec.SECP521R1, hashes.SHA512),
}


class AuthError(Exception):
    """Authentication failed; the message says why without revealing key material."""


def signed_octets(real_message: bytes, peer_nonce: bytes, prf: Prf, sk_p: Secret, own_id: IdPayload) -> bytes:
    """RealMessage | Nonce of the other side | prf(SK_p, RestOfIDPayload)."""
    return real_message + peer_nonce + prf(sk_p.reveal(), own_id.encode_body())


def psk_auth_data(prf: Prf, psk: Secret, octets: bytes) -> bytes:
    # prf(PSK, KEY_PAD) is the same for every peer of one PSK: derived once per PRF, held by the Secret
    return prf(psk.derived((KEY_PAD, prf.transform_id), lambda key: prf(key, KEY_PAD)), octets)


def verify_psk(prf: Prf, psk: Secret, octets: bytes, auth: AuthPayload) -> None:
    if auth.method != AuthMethod.PSK:
        raise AuthError(f"peer used AUTH method {auth.method}, expected a shared key")
    if not hmac.compare_digest(psk_auth_data(prf, psk, octets), auth.data):
        raise AuthError("PSK AUTH value does not match (wrong pre-shared key?)")


# --------------------------------------------------------------------------
# signatures
# --------------------------------------------------------------------------


def _alg_id(oid: str, params: bytes | None = None) -> bytes:
    body = _der.encode_tlv(_der.OID, _der.encode_oid(oid))
    if params is not None:
        body += params
    return _der.encode_tlv(_der.SEQUENCE, body)


def _pss_alg_id(hash_cls: type[hashes.HashAlgorithm]) -> bytes:
    hash_oid = next(oid for oid, cls in _OID_HASH.items() if cls is hash_cls)
    null = _der.encode_tlv(_der.NULL, b"")
    hash_alg = _alg_id(hash_oid, null)
    params = (
        _der.encode_tlv(0xA0, hash_alg)
        + _der.encode_tlv(0xA1, _alg_id(_OID_MGF1, hash_alg))
        + _der.encode_tlv(0xA2, _der.encode_tlv(_der.INTEGER, bytes([hash_cls().digest_size])))
    )
    return _alg_id(_OID_PSS, _der.encode_tlv(_der.SEQUENCE, params))


@dataclass(frozen=True)
class SignatureScheme:
    """How to sign or verify: key kind, hash and (for RSA) padding."""

    kind: str  # "rsa", "rsa-pss", "ecdsa", "ed25519"
    hash: type[hashes.HashAlgorithm] | None

    def alg_id(self) -> bytes:
        if self.kind == "ed25519":
            return _alg_id(_OID_ED25519)
        if self.kind == "rsa-pss":
            assert self.hash is not None
            return _pss_alg_id(self.hash)
        table = _OID_RSA_PKCS1 if self.kind == "rsa" else _OID_ECDSA
        oid = next(oid for oid, cls in table.items() if cls is self.hash)
        # PKCS#1 AlgorithmIdentifiers carry NULL parameters, ECDSA ones none (RFC 7427 App. A)
        return _alg_id(oid, _der.encode_tlv(_der.NULL, b"") if self.kind == "rsa" else None)

    @property
    def hash_id(self) -> int:
        return HashAlgorithm.IDENTITY if self.hash is None else _HASH_IDS[self.hash]


def _ecdsa_hash(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> type[hashes.HashAlgorithm]:
    """The hash matched to the curve size, as strongSwan and RFC 4754 pair them."""
    size = key.curve.key_size
    return hashes.SHA256 if size <= 256 else hashes.SHA384 if size <= 384 else hashes.SHA512


def choose_scheme(key: PrivateKey, peer_hashes: Collection[int], rsa_pss: bool = False) -> SignatureScheme:
    """The RFC 7427 scheme to sign with, given the hashes the peer announced."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return SignatureScheme("ed25519", None)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return SignatureScheme("ecdsa", _ecdsa_hash(key))
    for hash_cls in (hashes.SHA256, hashes.SHA384, hashes.SHA512):
        if _HASH_IDS[hash_cls] in peer_hashes:
            return SignatureScheme("rsa-pss" if rsa_pss else "rsa", hash_cls)
    return SignatureScheme("rsa-pss" if rsa_pss else "rsa", hashes.SHA256)


def sign(key: PrivateKey, octets: bytes, peer_hashes: Collection[int], rsa_pss: bool = False) -> AuthPayload:
    """An AUTH payload signing ``octets``: RFC 7427 if the peer supports it, else classic.

    Ed25519 has no classic method, so it always uses RFC 7427 (as RFC 8420 says).
    """
    if peer_hashes or isinstance(key, ed25519.Ed25519PrivateKey):
        scheme = choose_scheme(key, peer_hashes, rsa_pss)
        alg = scheme.alg_id()
        sig = _sign_raw(key, scheme, octets)
        return AuthPayload(AuthMethod.DIGITAL_SIGNATURE, bytes([len(alg)]) + alg + sig)
    if isinstance(key, rsa.RSAPrivateKey):
        return AuthPayload(AuthMethod.RSA_SIG, key.sign(octets, padding.PKCS1v15(), hashes.SHA1()))
    if isinstance(key, ec.EllipticCurvePrivateKey):
        for method, (curve, hash_cls) in _CLASSIC_ECDSA.items():
            if isinstance(key.curve, curve):
                r, s = decode_dss_signature(key.sign(octets, ec.ECDSA(hash_cls())))
                size = (key.curve.key_size + 7) // 8
                return AuthPayload(method, r.to_bytes(size, "big") + s.to_bytes(size, "big"))
    raise AuthError("this key can only sign with RFC 7427, which the peer did not announce")


def _sign_raw(key: PrivateKey, scheme: SignatureScheme, octets: bytes) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(octets)
    assert scheme.hash is not None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(octets, ec.ECDSA(scheme.hash()))
    pad: padding.AsymmetricPadding = (
        padding.PSS(padding.MGF1(scheme.hash()), scheme.hash().digest_size)
        if scheme.kind == "rsa-pss"
        else padding.PKCS1v15()
    )
    return key.sign(octets, pad, scheme.hash())


def verify_signature(key: PublicKey, octets: bytes, auth: AuthPayload) -> None:
    """Raise AuthError unless ``auth`` is a valid signature of ``octets`` by ``key``."""
    try:
        if auth.method == AuthMethod.DIGITAL_SIGNATURE:
            _verify_rfc7427(key, octets, auth.data)
        elif auth.method == AuthMethod.RSA_SIG and isinstance(key, rsa.RSAPublicKey):
            key.verify(auth.data, octets, padding.PKCS1v15(), hashes.SHA1())
        elif auth.method in _CLASSIC_ECDSA and isinstance(key, ec.EllipticCurvePublicKey):
            _verify_classic_ecdsa(key, octets, auth)
        else:
            raise AuthError(f"AUTH method {auth.method} does not fit the peer's {type(key).__name__}")
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, _der.DerError):
        raise AuthError("signature does not verify") from None


def _verify_classic_ecdsa(key: ec.EllipticCurvePublicKey, octets: bytes, auth: AuthPayload) -> None:
    curve, hash_cls = _CLASSIC_ECDSA[AuthMethod(auth.method)]
    size = (key.curve.key_size + 7) // 8
    if not isinstance(key.curve, curve) or len(auth.data) != 2 * size:
        raise AuthError("ECDSA AUTH method does not match the key's curve")
    r = int.from_bytes(auth.data[:size], "big")
    s = int.from_bytes(auth.data[size:], "big")
    key.verify(encode_dss_signature(r, s), octets, ec.ECDSA(hash_cls()))


def _verify_rfc7427(key: PublicKey, octets: bytes, data: bytes) -> None:
    if not data or 1 + data[0] > len(data):
        raise AuthError("RFC 7427 AUTH data too short")
    alg, sig = data[1 : 1 + data[0]], data[1 + data[0] :]
    scheme = parse_alg_id(alg)
    if scheme.kind == "ed25519" and isinstance(key, ed25519.Ed25519PublicKey):
        key.verify(sig, octets)
    elif scheme.kind == "ecdsa" and isinstance(key, ec.EllipticCurvePublicKey):
        assert scheme.hash is not None
        key.verify(sig, octets, ec.ECDSA(scheme.hash()))
    elif scheme.kind in ("rsa", "rsa-pss") and isinstance(key, rsa.RSAPublicKey):
        assert scheme.hash is not None
        pad: padding.AsymmetricPadding = (
            padding.PSS(padding.MGF1(scheme.hash()), padding.PSS.AUTO)
            if scheme.kind == "rsa-pss"
            else padding.PKCS1v15()
        )
        key.verify(sig, octets, pad, scheme.hash())
    else:
        raise AuthError(f"signature scheme {scheme.kind} does not fit the peer's key")


def parse_alg_id(der: bytes) -> SignatureScheme:
    """The scheme named by an RFC 7427 AlgorithmIdentifier; AuthError if unsupported."""
    tag, body, end = _der.read_tlv(der)
    items = _der.read_all(body) if tag == _der.SEQUENCE and end == len(der) else []
    if not items or items[0][0] != _der.OID:
        raise AuthError("malformed AlgorithmIdentifier")
    oid = _der.decode_oid(items[0][1])
    if oid in _OID_RSA_PKCS1:
        return SignatureScheme("rsa", _OID_RSA_PKCS1[oid])
    if oid in _OID_ECDSA:
        return SignatureScheme("ecdsa", _OID_ECDSA[oid])
    if oid == _OID_ED25519:
        return SignatureScheme("ed25519", None)
    if oid == _OID_PSS and len(items) == 2:
        return SignatureScheme("rsa-pss", _pss_hash(items[1]))
    raise AuthError(f"unsupported signature algorithm {oid}")


def _pss_hash(params: tuple[int, bytes]) -> type[hashes.HashAlgorithm]:
    """The hash of RSASSA-PSS-params; the MGF1 hash must be the same (as strongSwan requires)."""
    tag, body = params
    if tag != _der.SEQUENCE:
        raise AuthError("malformed RSASSA-PSS parameters")
    fields = dict(_der.read_all(body))
    hash_oid = _first_oid(fields[0xA0]) if 0xA0 in fields else None
    mgf_hash = None
    if 0xA1 in fields:
        _, mgf_body, _ = _der.read_tlv(fields[0xA1])
        mgf_items = _der.read_all(mgf_body)
        if len(mgf_items) == 2 and _der.decode_oid(mgf_items[0][1]) == _OID_MGF1:
            mgf_hash = _first_oid(_der.encode_tlv(*mgf_items[1]))
    if hash_oid not in _OID_HASH or mgf_hash != hash_oid:
        raise AuthError("RSASSA-PSS with an unsupported hash or MGF")
    return _OID_HASH[hash_oid]


def _first_oid(alg_der: bytes) -> str:
    _, body, _ = _der.read_tlv(alg_der)
    items = _der.read_all(body)
    if not items or items[0][0] != _der.OID:
        raise AuthError("malformed AlgorithmIdentifier")
    return _der.decode_oid(items[0][1])
