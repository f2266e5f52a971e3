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

A CA's keyUsage, when present, must allow keyCertSign (RFC 5280 §4.2.1.3, §6.1.4 (n)).

The peer's certificates are unauthenticated input, checked before anything else of the peer is
(IKE_AUTH: before its AUTH signature; EAP-TLS: before our Finished). So before the path is built
the chain is bounded: at most :data:`MAX_CERTS` certificates, no RSA key of more than
:data:`MAX_RSA_BITS` bits or with a public exponent of more than :data:`MAX_RSA_EXPONENT_BITS`
bits (:func:`check_key`), and of the intermediates only those on a path of issuer names from the
peer's certificate to a configured CA that goes nowhere twice, at most two per subject name
(:func:`_path_candidates`). A peer's self-issued "CAs" of one name and key used to send the
builder round a loop until its own cap of about 150 signature checks (review revfrag F1), and a
loop of names I1 <-> I2 through every name constraint of the chain until its cap of 2^20 name
comparisons (review revcertfix F3). The name constraints are bounded too (:func:`check_names`,
:func:`_check_name_cost`): cryptography compares each subjectAltName below an intermediate with
each of its subtrees.
"""

from __future__ import annotations

import functools
import hashlib
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID

from .auth import AuthError, PublicKey
from .identity import MAX_TEXT, Identity, certificate_has_identity
from .peer_warnings import peer_input

# what reading a lazily parsed part of a hostile certificate raises (its extensions: a duplicate, a
# general name of a type cryptography does not know)
UNREADABLE = (ValueError, UnsupportedAlgorithm, x509.DuplicateExtension, x509.UnsupportedGeneralNameType)


class NotTrusted(AuthError):
    """No path from the peer's certificate to the CAs it was checked with: other CAs may trust it
    (exchanges/ike_auth_cas.py); any other AuthError of verify_peer would be the same with any."""


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
    """A peer certificate that verified: its key, the fingerprint of the CA it verified to (what an
    IKE SA remembers), and that CA's certificate itself (one of the ``cas`` it was verified with): two
    certificates of one CA's name and key share a fingerprint but are two trust anchors to the path
    builder (one may be expired, or name-constrained), so a connection is chosen by the certificate
    (exchanges/ike_auth_cas.py; review revcert3 F1)."""

    key: PublicKey
    anchor: bytes
    anchor_cert: x509.Certificate


def _may_sign_certificates(_policy: verification.Policy, ca: x509.Certificate, ku: x509.KeyUsage | None) -> None:
    """A CA's keyUsage, if it has one, allows keyCertSign (RFC 5280 §4.2.1.3): a key marked for
    signatures only (a service certificate a PKI made cA) issues nothing."""
    if ku is not None and not ku.key_cert_sign:
        raise ValueError(f"the keyUsage of CA {subject_text(ca)} lacks keyCertSign")


def _policy_builder(cas: Sequence[x509.Certificate], when: datetime) -> verification.PolicyBuilder:
    ca_policy = (verification.ExtensionPolicy.permit_all()
                 .require_present(x509.BasicConstraints, verification.Criticality.AGNOSTIC, None)
                 .may_be_present(x509.KeyUsage, verification.Criticality.AGNOSTIC, _may_sign_certificates))
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
    return _cut(cert.subject.rfc4514_string())


def _cut(text: str) -> str:
    """Text of a peer's for a message, cut as an identity's is: a subject, or the path builder's
    reason for a refusal, may be many KiB (it quotes a DSA key's parameters)."""
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


# strongSwan's MAX_CERT_PAYLOADS: an end-entity certificate and its intermediates fit
MAX_CERTS = 8
# no key of a peer's chain costs more than this to verify with: RSA beyond 8192 bits is no PKI's,
# and OpenSSL itself refuses an exponent beyond 64 bits only for moduli over 3072 bits (a 3072-bit
# modulus with a 3071-bit exponent: ~8 ms a signature check, against ~0.1 ms with 65537)
MAX_RSA_BITS = 8192
MAX_RSA_EXPONENT_BITS = 64
# the curves cryptography's path builder verifies with (besides RSA)
PATH_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})


def check_key(cert: x509.Certificate) -> None:
    """AuthError if checking a signature with ``cert``'s key would cost more than any PKI's does."""
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        return   # the path builder permits only P-256, P-384 and P-521 besides RSA
    if key.key_size > MAX_RSA_BITS:
        raise AuthError(f"certificate {subject_text(cert)} has a {key.key_size}-bit RSA key (at most {MAX_RSA_BITS})")
    if key.public_numbers().e.bit_length() > MAX_RSA_EXPONENT_BITS:
        raise AuthError(f"certificate {subject_text(cert)} has an RSA public exponent of more than "
                        f"{MAX_RSA_EXPONENT_BITS} bits")


# a CA re-keyed, or cross-signed, is sent in two issues of one name (RFC 4158 §2.4): no PKI needs three
MAX_PER_SUBJECT = 2
# the name constraints' cost: cryptography compares every subjectAltName of the certificates below an
# intermediate with every subtree of its nameConstraints. A CA a PKI constrains lists a few domains;
# the configured CAs' own constraints are the operator's and not bounded. The peer's own certificate
# is held to MAX_NAMES only below a constraint (an intermediate's or a configured CA's): without one
# its names cost no comparison, and a multi-domain certificate (a site's web certificate reused:
# public CAs issue up to 100 names) is legitimate (review revcert3 F2).
MAX_NAMES = 64          # subjectAltNames of one intermediate of the peer's, or of its certificate below a constraint
MAX_SUBTREES = 64       # permitted plus excluded subtrees of one intermediate of the peer's
MAX_NAME_CHECKS = 4096  # (subtrees of the intermediates) x (names of the chain), for the whole chain


def _names(cert: x509.Certificate) -> int:
    try:
        return len(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return 0


def _subtrees(cert: x509.Certificate) -> int:
    try:
        nc = cert.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return 0
    return len(nc.permitted_subtrees or ()) + len(nc.excluded_subtrees or ())


def check_names(cert: x509.Certificate, constrained: bool = True) -> None:
    """AuthError if ``cert`` (a peer's) carries more name-constraint subtrees than any PKI's
    certificate does, or, ``constrained`` (an intermediate, or the peer's certificate below a name
    constraint: :func:`constrained_below`), more subjectAltNames (see :data:`MAX_NAMES`)."""
    if constrained and (names := _names(cert)) > MAX_NAMES:
        raise AuthError(f"certificate {subject_text(cert)} has {names} subjectAltNames (at most {MAX_NAMES})")
    if (subtrees := _subtrees(cert)) > MAX_SUBTREES:
        raise AuthError(f"certificate {subject_text(cert)} has {subtrees} name-constraint subtrees "
                        f"(at most {MAX_SUBTREES})")


def constrained_below(above: Sequence[x509.Certificate]) -> bool:
    """Whether one of ``above`` (the intermediates a path from the peer's certificate may take, the
    CAs it may end in) has name constraints its names would be compared with. A certificate whose
    constraints cannot be read counts as constrained: the cap stays where it may apply."""
    def subtrees(cert: x509.Certificate) -> int:
        try:
            return _subtrees(cert)
        except UNREADABLE:
            return 1
    return any(subtrees(c) for c in above)


def _check_name_cost(leaf: x509.Certificate, intermediates: Sequence[x509.Certificate]) -> None:
    """AuthError if the chain's name constraints could cost the path builder more than
    :data:`MAX_NAME_CHECKS` comparisons (each certificate checked by :func:`check_names` first)."""
    subtrees = sum(_subtrees(c) for c in intermediates)
    names = sum(_names(c) for c in (leaf, *intermediates))
    if subtrees * names > MAX_NAME_CHECKS:
        raise AuthError(f"certificate {subject_text(leaf)}: its chain's {subtrees} name-constraint subtrees over "
                        f"{names} subjectAltNames are too many to compare (at most {MAX_NAME_CHECKS})")


def _self_signed(cert: x509.Certificate) -> bool:
    """Whether ``cert`` is self-issued and signed by its own key: a root sent along (only a configured CA
    anchors a path) or a revfrag F1 loop. A self-issued certificate of another key (RFC 4158's
    rollover link: the new root key signed by the old) may be on a path. One with a key the path
    builder would not use (not RSA that check_key takes, nor ECDSA on its curves) or cannot read is
    counted as self-signed, unchecked: no path could go through it."""
    if cert.subject.public_bytes() != cert.issuer.public_bytes():
        return False
    try:
        key = cert.public_key()
        check_key(cert)
    except (AuthError, *UNREADABLE):
        return True
    if not isinstance(key, rsa.RSAPublicKey) and not (
            isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in PATH_CURVES):
        return True
    try:
        cert.verify_directly_issued_by(cert)
    except (InvalidSignature, TypeError, *UNREADABLE):   # TypeError: a signature algorithm it cannot verify
        return False
    return True


def _toward_anchors(given: Sequence[x509.Certificate], trusted: set[bytes]) -> list[x509.Certificate]:
    """Of ``given``, those on a path of issuer names to a trusted name that never comes back to a name:
    a fixpoint from the CAs' names, each round taking the certificates whose issuer is reached and
    whose subject is not yet (or is their issuer: a self-issued link between two keys of one name).
    An intermediate that leads to no CA, or only round a loop of names, is left out (review
    revcertfix F1, F3)."""
    reached = set(trusted)
    kept: list[x509.Certificate] = []
    while new := [c for c in given if c not in kept and c.issuer.public_bytes() in reached
                  and (c.subject.public_bytes() not in reached or c.subject.public_bytes() == c.issuer.public_bytes())]:
        kept += new
        reached.update(c.subject.public_bytes() for c in new)
    return kept


def _below(leaf: x509.Certificate, kept: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    """Of ``kept``, those a path from ``leaf`` can pass through (by issuer names), in the order given."""
    wanted = {leaf.issuer.public_bytes()}
    reached: list[x509.Certificate] = []
    while new := [c for c in kept if c not in reached and c.subject.public_bytes() in wanted]:
        reached += new
        wanted.update(c.issuer.public_bytes() for c in new)
    return [c for c in kept if c in reached]


def _path_candidates(chain: Sequence[x509.Certificate], cas: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    """The peer's intermediates that can be on a path from its certificate to one of ``cas``, in the
    order sent. Names compare as the path builder compares them, exactly (string types included).
    Left out: a self-signed one (a root sent along: only a configured CA anchors a path), a copy
    sent twice, and one that is not on a path of issuer names from the peer's certificate toward a
    CA's name (:func:`_toward_anchors`). Two issues of one subject (a re-keyed or cross-signed CA)
    are both kept; AuthError if more are."""
    trusted = {ca.subject.public_bytes() for ca in cas}
    given = [c for c in dict.fromkeys(chain[1:]) if not _self_signed(c)]
    kept = _below(chain[0], _toward_anchors(given, trusted))
    for subject, n in Counter(c.subject.public_bytes() for c in kept).items():
        if n > MAX_PER_SUBJECT:
            named = next(c for c in kept if c.subject.public_bytes() == subject)
            raise AuthError(f"peer sent {n} CA certificates named {subject_text(named)} (at most {MAX_PER_SUBJECT})")
    return kept


def _anchors_near(leaf: x509.Certificate, intermediates: Sequence[x509.Certificate],
                  cas: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    """Of ``cas``, those a path from ``leaf`` through ``intermediates`` may end in (by issuer names):
    another connection's CA (exchanges/ike_auth_cas.py builds with several) holds none of its names."""
    issuers = {c.issuer.public_bytes() for c in (leaf, *intermediates)}
    return [ca for ca in cas if ca.subject.public_bytes() in issuers]


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
    if len(chain) > MAX_CERTS:
        raise AuthError(f"peer sent {len(chain)} certificates (at most {MAX_CERTS})")
    if not cas:
        raise AuthError("no CA configured to verify the peer's certificate")
    try:
        return _verify(chain, cas, when, peer_id)
    except UNREADABLE as exc:  # lazily parsed parts of a hostile certificate
        raise AuthError(f"peer certificate unusable: {_cut(str(exc))}") from None


def _verify(
    chain: Sequence[x509.Certificate], cas: Sequence[x509.Certificate], when: datetime, peer_id: Identity
) -> VerifiedPeer:
    leaf = chain[0]
    intermediates = _path_candidates(chain, cas)
    for cert in (leaf, *intermediates):
        check_key(cert)
    for cert in intermediates:
        check_names(cert)
    check_names(leaf, constrained_below([*intermediates, *_anchors_near(leaf, intermediates, cas)]))
    _check_name_cost(leaf, intermediates)
    try:
        verified = _policy_builder(cas, when).build_client_verifier().verify(leaf, intermediates)
    except verification.VerificationError as exc:
        raise NotTrusted(f"certificate of {subject_text(leaf)} not trusted: {_cut(str(exc))}") from None
    try:
        leaf.subject   # noqa: B018 (read lazily: a CA may have signed a subject cryptography refuses)
    except ValueError as exc:
        raise AuthError(f"peer certificate unusable, its subject does not parse: {_cut(str(exc))}") from None
    check_usage(leaf)
    if not certificate_has_identity(leaf, peer_id):
        raise AuthError(f"certificate {subject_text(leaf)} does not certify identity {peer_id}")
    key = leaf.public_key()
    if not isinstance(key, PublicKey):
        raise AuthError(f"unsupported public key type {type(key).__name__}")
    anchor = verified.chain[-1]   # the chain ends in a store CA
    return VerifiedPeer(key, ca_fingerprint(anchor), anchor)
