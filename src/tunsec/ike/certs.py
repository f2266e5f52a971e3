"""Certificate handling for pubkey authentication: CERT/CERTREQ data and chain checks.

Chains are verified with ``cryptography.x509.verification`` against the
configured CAs. Its client verifier is used with permissive extension policies
because IPsec certificates (e.g. made with strongSwan's ``pki``) often carry no
clientAuth EKU, no authority key identifier and no subjectAltName; the chain
signatures, validity periods and CA basicConstraints are still enforced.
Whether the certificate belongs to the peer is checked separately: the peer's
ID must be its subject DN, one of its subjectAltNames or its key id.

The end-entity certificate's purpose is checked like strongSwan does: a
keyUsage, when present, must allow digitalSignature (an IKE AUTH payload is a
signature); an extendedKeyUsage, when present, must allow IKE: ipsecIKE
(RFC 4945 §5.1.3.12), anyExtendedKeyUsage, or serverAuth/clientAuth (what
most IPsec certificates carry).  Without either extension any use is allowed.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID

from .auth import AuthError, PublicKey
from .identity import MAX_TEXT, Identity, certificate_has_identity
from .peer_warnings import peer_input


def ca_key_hash(ca: x509.Certificate) -> bytes:
    """SHA-1 of the CA's SubjectPublicKeyInfo, the CERTREQ entry (RFC 7296 §3.7)."""
    return hashlib.sha1(ca.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).digest()


def certreq_data(cas: Sequence[x509.Certificate]) -> bytes:
    return b"".join(ca_key_hash(ca) for ca in cas)


@functools.lru_cache(maxsize=256)   # the anchors are configured CAs: one bytes object shared by their clients
def ca_fingerprint(ca: x509.Certificate) -> bytes:
    """SHA-256 of the CA's subject and public key (both DER, so their concatenation is unambiguous):
    the trust anchor a peer's chain verified to, as an established IKE SA remembers it (32 bytes) so that
    a reload can tell whether the anchor is still trusted (services/ike/revoked.py).  A CA renewed with
    the same key and subject is the same anchor: the certificates it issued verify to either."""
    try:
        spki = ca.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        named = ca.subject.public_bytes() + spki
    except (ValueError, UnsupportedAlgorithm):   # a configured CA cryptography half reads: known by its bytes
        named = ca.public_bytes(Encoding.DER)
    return hashlib.sha256(named).digest()


class VerifiedPeer(NamedTuple):
    """A peer certificate that verified: its key, and the fingerprint of the CA it verified to."""

    key: PublicKey
    anchor: bytes


def _policy_builder(cas: Sequence[x509.Certificate], when: datetime) -> verification.PolicyBuilder:
    ca_policy = verification.ExtensionPolicy.permit_all().require_present(
        x509.BasicConstraints, verification.Criticality.AGNOSTIC, None
    )
    return (
        verification.PolicyBuilder()
        .store(verification.Store(list(cas)))
        .time(when)
        .extension_policies(ca_policy=ca_policy, ee_policy=verification.ExtensionPolicy.permit_all())
    )


ID_KP_IPSEC_IKE = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.17")
IKE_USAGES = frozenset({
    ID_KP_IPSEC_IKE,
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
    ExtendedKeyUsageOID.SERVER_AUTH,
    ExtendedKeyUsageOID.CLIENT_AUTH,
})


def _oid_name(oid: x509.ObjectIdentifier) -> str:
    name = oid._name
    return oid.dotted_string if name == "Unknown OID" else name


def subject_text(cert: x509.Certificate) -> str:
    """The subject for a message, cut as an identity's text is: a peer's certificate is unverified
    when it is named, and may carry a subject of many KiB."""
    text = cert.subject.rfc4514_string()
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "…"


def check_usage(leaf: x509.Certificate) -> None:
    """AuthError unless the end-entity certificate may sign for IKE (see the module doc)."""
    name = subject_text(leaf)
    try:
        ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        pass
    else:
        if not ku.digital_signature:
            raise AuthError(f"certificate {name} is not for signatures: its keyUsage lacks digitalSignature")
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not IKE_USAGES.intersection(eku):
        allowed = ", ".join(_oid_name(oid) for oid in eku) or "none"
        raise AuthError(f"certificate {name} is not for IKE: its extendedKeyUsage allows {allowed}, not "
                        "ipsecIKE, serverAuth, clientAuth or anyExtendedKeyUsage")


@peer_input("a peer's certificates")
def load_certificates(ders: Sequence[bytes]) -> list[x509.Certificate]:
    certs: list[x509.Certificate] = []
    for der in ders:
        try:
            certs.append(x509.load_der_x509_certificate(der))
        except ValueError:
            raise AuthError("peer sent a certificate that does not parse") from None
    return certs


@peer_input("a peer's certificate")   # its subject is read (named) before its chain is checked
def verify_peer(
    chain: Sequence[x509.Certificate], cas: Sequence[x509.Certificate], when: datetime, peer_id: Identity
) -> VerifiedPeer:
    """The public key of a verified peer certificate whose identity matches ``peer_id``, and its anchor.

    ``chain`` is the end-entity certificate first, then any intermediates.
    """
    if not chain:
        raise AuthError("peer sent no certificate")
    if not cas:
        raise AuthError("no CA configured to verify the peer's certificate")
    try:
        return _verify(chain, cas, when, peer_id)
    except (ValueError, UnsupportedAlgorithm) as exc:  # lazily parsed parts of a hostile certificate
        raise AuthError(f"peer certificate unusable: {exc}") from None


def _verify(
    chain: Sequence[x509.Certificate], cas: Sequence[x509.Certificate], when: datetime, peer_id: Identity
) -> VerifiedPeer:
    leaf = chain[0]
    try:
        verified = _policy_builder(cas, when).build_client_verifier().verify(leaf, list(chain[1:]))
    except verification.VerificationError as exc:
        raise AuthError(f"certificate of {subject_text(leaf)} not trusted: {exc}") from None
    try:
        leaf.subject   # noqa: B018 (read lazily: a CA may have signed a subject cryptography refuses)
    except ValueError as exc:
        raise AuthError(f"peer certificate unusable, its subject does not parse: {exc}") from None
    check_usage(leaf)
    if not certificate_has_identity(leaf, peer_id):
        raise AuthError(f"certificate {subject_text(leaf)} does not certify identity {peer_id}")
    key = leaf.public_key()
    if not isinstance(key, PublicKey):
        raise AuthError(f"unsupported public key type {type(key).__name__}")
    return VerifiedPeer(key, ca_fingerprint(verified.chain[-1]))   # the chain ends in a store CA
