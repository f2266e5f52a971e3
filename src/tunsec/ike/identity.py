"""IKE identities (RFC 7296 §3.5) parsed from strongSwan's identity notation.

``moon.strongswan.org`` is an FQDN, ``carol@strongswan.org`` an RFC822 address,
``10.1.0.1``/``fec0::1`` IP addresses, ``@#0a0b`` a KEY_ID, ``@name`` forces an
FQDN, ``C=CH, O=Org, CN=moon`` a DER_ASN1_DN (RDNs in the written order, as
strongSwan writes them), ``%any`` matches every identity. Type prefixes such as
``fqdn:``, ``email:``, ``keyid:``, ``ipv4:``, ``ipv6:`` and ``asn1dn:`` work too.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import ipaddress
import itertools
import re

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from tunsec.immutable import immutable

from ._der import DerError, DnAttribute, encode_oid, encode_tlv, parse_name, spki_key_bits
from .constants import IdType
from .peer_warnings import peer_input

ID_ANY = 0

_DN_KEYS = {
    "C": NameOID.COUNTRY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "L": NameOID.LOCALITY_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "CN": NameOID.COMMON_NAME,
    "E": NameOID.EMAIL_ADDRESS,
    "EMAIL": NameOID.EMAIL_ADDRESS,
    "EMAILADDRESS": NameOID.EMAIL_ADDRESS,
    "DC": NameOID.DOMAIN_COMPONENT,
    "SN": NameOID.SURNAME,
    "SERIALNUMBER": NameOID.SERIAL_NUMBER,
    "UID": NameOID.USER_ID,
    "GN": NameOID.GIVEN_NAME,
    "T": NameOID.TITLE,
}
# (by the OID's DER bytes, as parse_name gives them: the first key of each, "E" before "EMAIL")
_OID_KEYS = {encode_oid(oid.dotted_string): key for key, oid in reversed(list(_DN_KEYS.items()))}
_PREFIXES = {
    "fqdn": IdType.FQDN,
    "email": IdType.RFC822_ADDR,
    "rfc822": IdType.RFC822_ADDR,
    "userfqdn": IdType.RFC822_ADDR,
    "keyid": IdType.KEY_ID,
    "ipv4": IdType.IPV4_ADDR,
    "ipv6": IdType.IPV6_ADDR,
    "asn1dn": IdType.DER_ASN1_DN,
}


class IdentityError(ValueError):
    """The identity text cannot be parsed, or a peer's identity is out of bounds."""


# strongSwan prints an identity into a buffer of 512 bytes; tunsec cuts the text a little shorter
MAX_TEXT = 256
_MAX_HEX = 64


# identity types whose text compares without regard to ASCII case, as strongSwan's (its
# identification_t equals() of ID_FQDN and ID_RFC822_ADDR is strcasecmp): a DNS name is (RFC 4343),
# and RADIUS/AD backends take "Alice" for "alice", so the two are one client for unique, leases,
# INITIAL_CONTACT and a DAE User-Name, not two
_CASELESS = (IdType.FQDN, IdType.RFC822_ADDR)
# tags of unproven identities: one per IKE SA, never reused in a process (see Identity.unproven)
_UNPROVEN_TAGS = itertools.count(1)


@immutable(slots=True)   # one per SA and lease: no __dict__; its own __eq__ and __hash__
class Identity:
    type: int
    data: bytes
    # non-zero: a name the peer gave that nothing vouched for (eap-radius without User-Name in the
    # Access-Accept); it is equal only to itself (the one IKE SA's, and its rekeyed successors'), so
    # it never acts on another's SAs, leases or claims: INITIAL_CONTACT, unique, lease sharing
    tag: int = 0

    def _key(self) -> tuple[int, bytes, int]:
        return (self.type, self.data.lower() if self.type in _CASELESS else self.data, self.tag)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Identity):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    @classmethod
    def any(cls) -> Identity:
        return cls(ID_ANY, b"")

    @classmethod
    def of_user(cls, name: bytes) -> Identity:
        """An EAP (RADIUS) user name as an identity, as it is, not parsed ("@alice" and "alice" are
        two users, as the secrets' ids are): RFC822_ADDR with an "@", else FQDN, as strongSwan's."""
        return cls(IdType.RFC822_ADDR if b"@" in name else IdType.FQDN, name)

    @property
    def user(self) -> str:
        """The name as an EAP user's (a secrets.eap id, a client's own EAP identity): an FQDN or
        RFC822 name's bytes as written, in UTF-8, whole; str() shows one that is not ASCII as its type
        and hex, and cuts a long one, which are a log line's forms, not an account's name (review
        reveapfix F3: ``id = jörg`` was the account "2:#6ac3b67267").  Any other type as str()."""
        if self.type in _CASELESS:
            return self.data.decode("utf-8", "surrogateescape")
        return str(self)

    def unproven(self) -> Identity:
        """This name as one IKE SA's unproven identity: shown as the name, equal to no other."""
        return Identity(self.type, self.data, next(_UNPROVEN_TAGS))

    @property
    def named(self) -> Identity:
        """The name alone (for what compares names, not peers: a DAE User-Name, a configured id)."""
        return Identity(self.type, self.data) if self.tag else self

    @property
    def is_any(self) -> bool:
        return self.type == ID_ANY

    @classmethod
    def parse(cls, text: str) -> Identity:
        text = text.strip()
        if text in ("%any", "%any6", ""):
            return cls.any()
        prefix, sep, rest = text.partition(":")
        if sep and prefix.lower() in _PREFIXES:
            return cls._typed(_PREFIXES[prefix.lower()], rest)
        if text.startswith("@#"):
            return cls._typed(IdType.KEY_ID, text[2:])
        if text.startswith("@@"):
            return cls(IdType.RFC822_ADDR, text[2:].encode())
        if text.startswith("@"):
            return cls(IdType.FQDN, text[1:].encode())
        if "=" in text:
            return cls._typed(IdType.DER_ASN1_DN, text)
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            kind = IdType.RFC822_ADDR if "@" in text else IdType.FQDN
            return cls(kind, text.encode())
        return cls(IdType.IPV4_ADDR if addr.version == 4 else IdType.IPV6_ADDR, addr.packed)

    @classmethod
    def _typed(cls, kind: IdType, value: str) -> Identity:
        try:
            if kind == IdType.KEY_ID:
                return cls(kind, bytes.fromhex(value.removeprefix("#").replace(":", "")))
            if kind == IdType.IPV4_ADDR:
                return cls(kind, ipaddress.IPv4Address(value).packed)
            if kind == IdType.IPV6_ADDR:
                return cls(kind, ipaddress.IPv6Address(value).packed)
            if kind == IdType.DER_ASN1_DN:
                return cls(kind, _parse_dn(value).public_bytes())
        except ValueError as exc:
            raise IdentityError(f"invalid {kind.name} identity {value!r}: {exc}") from None
        return cls(kind, value.encode())

    @classmethod
    def from_name(cls, name: x509.Name) -> Identity:
        return cls(IdType.DER_ASN1_DN, name.public_bytes())

    def __str__(self) -> str:
        """The text form, at most MAX_TEXT characters (and 64 bytes of hex for one that has no text):
        a peer chooses it, and it goes into log lines and error messages."""
        try:
            text = self._text()
        except (ValueError, UnicodeDecodeError):
            hexed = self.data[:_MAX_HEX].hex() + ("…" if len(self.data) > _MAX_HEX else "")
            return f"{self.type}:#{hexed}"
        return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "…"

    def _text(self) -> str:
        if self.type == ID_ANY:
            return "%any"
        if self.type in (IdType.IPV4_ADDR, IdType.IPV6_ADDR):
            return str(ipaddress.ip_address(self.data))
        if self.type in (IdType.FQDN, IdType.RFC822_ADDR):
            return self.data.decode("ascii")
        if self.type == IdType.DER_ASN1_DN:
            return _format_dn(self.data)
        return f"@#{self.data.hex()}"

    def matches(self, other: Identity) -> bool:
        """Whether a configured identity (self, possibly %any) accepts ``other``.

        DNs compare by their attributes, not their bytes: peers encode the same
        name with different ASN.1 string types (PrintableString vs UTF8String).
        """
        other = other.named
        if self.is_any or self == other:
            return True
        if self.type == other.type == IdType.DER_ASN1_DN:
            return dn_equal(self.data, other.data)
        return False

    def match_key(self) -> object:
        """What :meth:`matches` compares, hashable: a configured identity that is not %any matches
        ``other`` exactly when their keys are equal (an index of peers' identities is looked up by it)."""
        if self.type == IdType.DER_ASN1_DN:
            key = dn_key(self.data)
            return (IdType.DER_ASN1_DN, self.data if key is None else key)
        return self.named._key()


# The most a peer's identity (IDi, IDr) may take.  strongSwan reads no message over 10,000 bytes
# (charon.max_packet); tunsec takes datagrams up to 64 KiB, so it bounds the identity itself: a DNS
# name or mail address fits 255 bytes, a DN of a real certificate a few hundred.
MAX_ID_BYTES = 2048
_MAX_ID_BYTES_OF: dict[int, int] = {IdType.FQDN: 255, IdType.RFC822_ADDR: 255}
_ID_BYTES_OF: dict[int, int] = {IdType.IPV4_ADDR: 4, IdType.IPV6_ADDR: 16}
_ID_TYPES = frozenset(int(t) for t in IdType)


def check_peer_identity(id_type: int, data: bytes) -> None:
    """IdentityError (a short message, without the identity) unless an identity a peer sent has a
    size its type allows; each check on it (configurations, certificates, logs) then costs little."""
    exact = _ID_BYTES_OF.get(id_type)
    if exact is not None and len(data) != exact:
        raise IdentityError(f"peer identity of type {_type_name(id_type)} has {len(data)} bytes, not {exact}")
    most = _MAX_ID_BYTES_OF.get(id_type, MAX_ID_BYTES)
    if len(data) > most:
        raise IdentityError(f"peer identity of type {_type_name(id_type)} has {len(data)} bytes (at most {most})")


def _type_name(id_type: int) -> str:
    # only for the error: the enum conversion was the check's largest cost on every IKE_AUTH
    return IdType(id_type).name if id_type in _ID_TYPES else str(id_type)


def dn_equal(a: bytes, b: bytes) -> bool:
    """Whether two DER Names hold the same attributes in the same RDNs and order.

    A value compares by its text, read strictly by its string type (a PrintableString and a
    UTF8String of the same name are the same name); a value that is no string we read, or whose
    bytes are not valid for its type, matches only the same type and bytes.  Never a lossy decode:
    two names that differ must not compare equal (a certificate for one would certify the other).
    """
    if a == b:
        return True
    key = _key_of(a)
    return key is not None and key == _key_of(b)


def dn_key(der: bytes) -> object:
    """What dn_equal compares two DNs by, hashable (None: it does not parse, and equals only its own
    bytes): two DNs are dn_equal exactly when their bytes or their non-None keys are equal."""
    return _key_of(der)


def _key_of(der: bytes) -> _DnKey | None:
    return _dn_key(der) if len(der) <= MAX_ID_BYTES else _dn_key.__wrapped__(der)   # an outsized one is not kept


_DnKey = tuple[tuple[tuple[bytes, tuple[int, bytes] | str], ...], ...]


# A responder compares the peer's DN with the remote id of each candidate connection: read once per
# IKE_AUTH, not once per connection (each IKE_AUTH uses the configured DNs again, so they stay).
@functools.lru_cache(maxsize=256)
def _dn_key(der: bytes) -> _DnKey | None:
    """What dn_equal compares; None for a Name that does not parse (it equals only itself)."""
    try:
        return tuple(tuple((attr.oid, _value_key(attr)) for attr in rdn) for rdn in parse_name(der))
    except DerError:
        return None


def _value_key(attr: DnAttribute) -> tuple[int, bytes] | str:
    text = attr.text
    return (attr.tag, attr.value) if text is None else text


def _parse_dn(text: str) -> x509.Name:
    attrs: list[x509.NameAttribute[str]] = []
    for part in re.split(r"\s*[,/]\s*", text.strip().strip("/")):
        key, sep, value = part.partition("=")
        oid = _DN_KEYS.get(key.strip().upper())
        if not sep or oid is None:
            raise ValueError(f"unknown RDN {part!r}")
        attrs.append(x509.NameAttribute(oid, value.strip()))
    return x509.Name(attrs)


def _format_dn(der: bytes) -> str:
    return ", ".join(f"{_attr_key(attr)}={_attr_text(attr)}" for rdn in parse_name(der) for attr in rdn)


def _attr_key(attr: DnAttribute) -> str:
    return _OID_KEYS.get(attr.oid) or attr.dotted


def _attr_text(attr: DnAttribute) -> str:
    """The value's text, or RFC 4514's #hex of the whole element for one that has none."""
    text = attr.text
    if text is not None:
        return text
    return "#" + encode_tlv(attr.tag, attr.value).hex()


def certificate_has_identity(cert: x509.Certificate, ident: Identity) -> bool:
    """Whether ``cert`` certifies ``ident``: its subject DN, a subjectAltName or its key id."""
    if ident.type == IdType.DER_ASN1_DN:
        return dn_equal(cert.subject.public_bytes(), ident.data)
    if ident.type == IdType.KEY_ID:
        return ident.data in _key_ids(cert)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    # an email address as caseless as a DNS name, local part too, as strongSwan (x509_cert has_subject:
    # the SAN's identification_t matches(), strncasecmp for both types) and as Identity compares them:
    # two certificates whose email SANs differ only in case are one client for unique, leases and
    # INITIAL_CONTACT, so the one certificate certifies both spellings
    if ident.type in _CASELESS:
        wanted = ident.data.decode("ascii", "replace").lower()
        kind = x509.DNSName if ident.type == IdType.FQDN else x509.RFC822Name
        return wanted in (n.lower() for n in san.get_values_for_type(kind))
    if ident.type in (IdType.IPV4_ADDR, IdType.IPV6_ADDR):
        return ipaddress.ip_address(ident.data) in san.get_values_for_type(x509.IPAddress)
    return False


@peer_input("a peer's certificate subject")
def certified_identity(cert: x509.Certificate) -> Identity:
    """The one identity of a peer whose AUTH ``cert`` verified, whatever IDi it sent.

    A certificate certifies many IDi values: its subject DN in any string types (dn_equal), each of
    its key ids and subjectAltNames.  Counted, compared and leased by the IDi, one certificate would
    be as many peers as it has spellings (max_ike_sas_per_identity, unique, INITIAL_CONTACT, one
    virtual IP each).  So the gateway knows the peer by its subject DN, each value in the string type
    tunsec writes a configured DN in (equal, byte for byte, to that DN: ``remote.id`` as written
    names it); by the SHA-1 of its public key (the key id strongSwan's ``pki --keyid`` shows first)
    if the subject is empty, as a certificate that names its holder in subjectAltNames only may be.
    IdentityError if the subject does not parse (cryptography reads it lazily)."""
    try:
        subject = cert.subject
        if not subject.rdns:
            spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
            return Identity(IdType.KEY_ID, hashlib.sha1(spki_key_bits(spki)).digest())
        rdns = [x509.RelativeDistinguishedName([_canonical_attr(a) for a in rdn]) for rdn in subject.rdns]
        return Identity.from_name(x509.Name(rdns))
    except ValueError as exc:   # (also an RDN with an attribute twice, which cryptography refuses)
        raise IdentityError(f"certificate subject unusable: {exc}") from None


def _canonical_attr(attr: x509.NameAttribute[str | bytes]) -> x509.NameAttribute[str | bytes]:
    """The attribute in cryptography's default string type for its OID (PrintableString for C,
    IA5String for emailAddress and DC, else UTF8String): as Identity.parse builds a DN."""
    if isinstance(attr.value, str):
        with contextlib.suppress(ValueError):   # a value its default type cannot carry stays as it is
            return x509.NameAttribute(attr.oid, attr.value)
    return attr


def _key_ids(cert: x509.Certificate) -> set[bytes]:
    """The key identifiers strongSwan accepts: SHA-1 of the SPKI or of its key bits."""
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    ids = {hashlib.sha1(spki).digest(), hashlib.sha1(spki_key_bits(spki)).digest()}
    with contextlib.suppress(x509.ExtensionNotFound):
        ids.add(cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest)
    return ids
