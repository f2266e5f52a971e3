"""swanctl.conf's ``connections.<name>.local { }`` and ``remote { }``: the authentication rounds.

:func:`read_local` and :func:`read_remote` read a connection's one local and
one remote round key by key (``auth``, ``id``, ``certs``/``cacerts``,
``eap_id``, remote ``groups``) into an :class:`AuthRound`; once the connection is complete,
:func:`make_local_auth` and :func:`make_remote_auth` attach the credentials
(certificates and keys from :mod:`tunsec.conf.credentials`, EAP passwords
from :mod:`tunsec.conf.secrets`) and give the engine's
:class:`~tunsec.ike.config.LocalAuth` and :class:`~tunsec.ike.config.RemoteAuth`.
:mod:`tunsec.conf.connections` reads the rest of the connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from cryptography import x509

from tunsec.conf.credentials import (
    KEY_DIRS,
    X509_DIR,
    X509CA_DIR,
    Credentials,
    is_ca,
    key_kind,
    subject_name,
)
from tunsec.conf.errors import BadValue, ConfigIssue, show_value
from tunsec.conf.reader import SectionReader, accept_only
from tunsec.conf.secrets import IkeSecret
from tunsec.conf.syntax import Section
from tunsec.conf.values import (
    IPAddress,
    choice,
    parse_files,
    parse_identity,
    parse_local_identity,
    parse_uint32,
    refuse,
)
from tunsec.ike.auth import PrivateKey
from tunsec.ike.config import EapSecret, LocalAuth, RemoteAuth
from tunsec.ike.identity import Identity, IdentityError, certificate_has_identity

__all__ = [
    "AuthMethod",
    "AuthRound",
    "KeyKind",
    "check_eap_client",
    "eap_secrets",
    "make_local_auth",
    "make_remote_auth",
    "read_local",
    "read_remote",
    "round_section",
    "uses_pubkey",
]

_NO_FILES: tuple[str, ...] = ()

AuthMethod = Literal["psk", "pubkey", "eap-mschapv2", "eap-tls", "eap-radius"]
KeyKind = Literal["rsa", "ecdsa", "ed25519"]


@dataclass(frozen=True)
class _Auth:
    method: AuthMethod
    key_kind: KeyKind | None = None
    rsa_pss: bool = False


def _parse_auth(text: str) -> _Auth:
    value = text.strip().lower()
    simple: dict[str, _Auth] = {
        "psk": _Auth("psk"),
        "pubkey": _Auth("pubkey"),
        "rsa": _Auth("pubkey", "rsa"),
        "rsa/pss": _Auth("pubkey", "rsa", rsa_pss=True),
        "ecdsa": _Auth("pubkey", "ecdsa"),
        "ed25519": _Auth("pubkey", "ed25519"),
        "eap-mschapv2": _Auth("eap-mschapv2"),
        "eap-tls": _Auth("eap-tls"),
        "eap-radius": _Auth("eap-radius"),
    }
    if value in simple:
        return simple[value]
    if value.startswith("eap"):
        raise BadValue("of the EAP methods only eap-mschapv2, eap-tls and eap-radius are supported")
    if value.startswith("xauth"):
        raise BadValue("XAuth is IKEv1 and not supported (psk or pubkey)")
    if value.startswith("ike:") or "-" in value:
        raise BadValue(
            "signature scheme and key strength constraints are not supported "
            "(psk, pubkey, rsa, rsa/pss, ecdsa or ed25519)"
        )
    raise BadValue(f"not an authentication method (psk, pubkey, rsa, rsa/pss, ecdsa, ed25519): {show_value(text)}")


@dataclass
class AuthRound:
    """A parsed local or remote section, before credentials are attached."""

    section: Section
    reader: SectionReader
    auth: _Auth | None
    id: Identity | None
    certs: tuple[str, ...] = ()
    cacerts: tuple[str, ...] = ()
    eap_id: str = ""
    groups: tuple[Identity, ...] = ()


_EAP_KEYS = ("aaa_id", "xauth_id")
_PKCS11_SECTION = "certificate sections on tokens (PKCS#11) are not supported: use {key} = FILE"


def round_section(r: SectionReader, prefix: str, issues: list[ConfigIssue]) -> Section | None:
    """The connection's one ``local``/``remote`` section; a second round is an error."""
    rounds = [r.subsection(name) for name in r.section.sections if name.lower().startswith(prefix)]
    found = [s for s in rounds if s is not None]
    for extra in found[1:]:
        issues.append(
            ConfigIssue(
                extra.file, extra.line, extra.path,
                f"a second {prefix} authentication round (RFC 4739) is not supported",
            )
        )  # fmt: skip
    return found[0] if found else None


def _common_round_keys(r: SectionReader, local: bool) -> tuple[_Auth | None, Identity | None]:
    r.get("round", parse_uint32, 0)  # orders rounds; tunsec has one
    auth = r.get("auth", _parse_auth, _Auth("pubkey"))
    ident = r.get("id", parse_local_identity if local else parse_identity, None)
    r.get("pubkeys", refuse("raw public keys are not supported: use certificates"), None)
    for sub in list(r.section.sections):
        low = sub.lower()
        if low.startswith(("cert", "cacert")):
            section = r.subsection(sub)
            assert section is not None
            kind = "cacerts" if low.startswith("cacert") else "certs"
            r.issues.append(ConfigIssue(section.file, section.line, section.path, _PKCS11_SECTION.format(key=kind)))
    return (None if "auth" in r.failed else auth), ident


def read_local(section: Section | None, issues: list[ConfigIssue], parent: Section) -> AuthRound:
    sec = section or Section("local", parent.key_path("local"), parent.file, parent.line)
    r = SectionReader(sec, issues)
    auth, ident = _common_round_keys(r, True)
    certs = r.get("certs", parse_files, _NO_FILES)
    eap = refuse("AAA and XAuth identities are not supported")
    for key in _EAP_KEYS:
        r.get(key, eap, None)
    eap_id = r.get("eap_id", str.strip, "")
    r.finish()
    _check_eap_id(r, auth, eap_id)
    if auth is not None and auth.method == "eap-radius":
        r.error("auth", "eap-radius is for remote: the gateway relays its clients' EAP to RADIUS "
                "(a client authenticates with eap-mschapv2)")
    if auth is not None and auth.method == "psk" and certs:
        r.error("certs", "certificates are only used with auth = pubkey")
    return AuthRound(sec, r, auth, ident, certs=certs, eap_id=eap_id)


def _check_eap_id(r: SectionReader, auth: _Auth | None, eap_id: str) -> None:
    if eap_id and auth is not None and not auth.method.startswith("eap-"):
        r.error("eap_id", "eap_id is only used with auth = eap-mschapv2, eap-tls or eap-radius")
    if eap_id and eap_id != "%any" and auth is not None and auth.method == "eap-tls":
        try:  # the identity the client's certificate must certify
            Identity.parse(eap_id)
        except IdentityError as exc:
            r.error("eap_id", str(exc))


def read_remote(section: Section | None, issues: list[ConfigIssue], parent: Section) -> AuthRound:
    sec = section or Section("remote", parent.key_path("remote"), parent.file, parent.line)
    r = SectionReader(sec, issues)
    auth, ident = _common_round_keys(r, False)
    if auth is not None and (auth.key_kind is not None or auth.rsa_pss):
        r.error("auth", "constraints on the peer's key type are not supported: write auth = pubkey")
        auth = None
    cacerts = r.get("cacerts", parse_files, _NO_FILES)
    r.get("certs", refuse("pinning the peer's certificate is not supported: trust its CA (cacerts)"), None)
    accept_only(
        r, "revocation", choice("a revocation policy", {"strict": "strict", "ifuri": "ifuri", "relaxed": "relaxed"}),
        {"relaxed"}, "revocation checking is not supported (only relaxed, the default)",
    )  # fmt: skip
    groups: tuple[Identity, ...] = r.get("groups", _parse_groups, ())
    for key, why in (
        ("cert_policy", "certificate policy constraints are not supported"),
        ("ca_id", "CA identity constraints are not supported: use cacerts"),
    ):
        r.get(key, refuse(why), None)
    eap_id = r.get("eap_id", str.strip, "")
    r.finish()
    _check_eap_id(r, auth, eap_id)
    if auth is not None and auth.method == "psk" and cacerts:
        r.error("cacerts", "CA certificates are only used with auth = pubkey")
    if groups and auth is not None and auth.method != "eap-radius":
        r.error("groups", "group memberships come only from RADIUS (its Access-Accept): groups needs auth = "
                "eap-radius (attribute certificates, which certify them otherwise, are not supported)")
    return AuthRound(sec, r, auth, ident, cacerts=cacerts, eap_id=eap_id, groups=groups)


def _parse_groups(text: str) -> tuple[Identity, ...]:
    """``remote.groups``: the peer must be a member of one of these (strongSwan reads each as an identity)."""
    found: list[Identity] = []
    for item in (i.strip() for i in text.split(",")):
        if not item:
            raise BadValue(f"a list of group names: {show_value(text)}")
        group = parse_identity(item)   # as remote.id: no wildcards (strongSwan's would match patterns)
        if group.is_any:
            raise BadValue("%any is no group: name the groups the peer must be a member of (one of them)")
        found.append(group)
    return tuple(dict.fromkeys(found))


def make_local_auth(
    local: AuthRound, local_addrs: tuple[IPAddress, ...], creds: Credentials, psks: Sequence[IkeSecret]
) -> LocalAuth | None:
    assert local.auth is not None
    r = local.reader
    if local.auth.method == "eap-tls":
        r.error("auth", "eap-tls authenticates clients (remote.auth); as a client tunsec has eap-mschapv2")
        return None
    if local.auth.method == "psk":
        ident = local.id
        if ident is None:
            if len(local_addrs) != 1:
                r.error(
                    "id",
                    "required with auth = psk unless local_addrs is one address "
                    "(strongSwan would use the address in use; tunsec needs it written down)",
                )
                return None
            ident = Identity.parse(str(local_addrs[0]))
        return LocalAuth("psk", ident)
    if local.auth.method == "eap-mschapv2":
        if local.id is None:
            r.error("id", "required with auth = eap-mschapv2 (the IKE identity we send)")
            return None
        user = local.eap_id or local.id.user
        if not any(user in s.ids for s in eap_secrets(psks)):
            r.error("auth", f"no EAP password for {user!r}: add a secrets.eap-NAME section with id = {user}")
            return None
        return LocalAuth("eap-mschapv2", local.id, eap_id=local.eap_id)
    found = _own_certificate(local, creds)
    if found is None:
        return None
    cert, key = found
    ident = local.id if local.id is not None else Identity.from_name(cert.subject)
    kind = key_kind(key)
    if local.auth.key_kind is not None and local.auth.key_kind != kind:
        r.error("auth", f"auth wants an {local.auth.key_kind} key but the certificate has an {kind} key")
        return None
    return LocalAuth(
        "pubkey",
        ident,
        cert=cert,
        intermediates=creds.chain(cert),
        private_key=key,
        rsa_pss=local.auth.rsa_pss,
    )


def _own_certificate(local: AuthRound, creds: Credentials) -> tuple[x509.Certificate, PrivateKey] | None:
    """The local certificate and its private key, by ``certs`` or (like strongSwan) by id in x509/."""
    if local.certs:
        return _listed_certificate(local, creds)
    r = local.reader
    if local.id is None:
        r.error(
            "certs", "auth = pubkey needs a certificate: list it in certs (or give an id a certificate in x509/ has)"
        )
        return None
    candidates = [(path, cert) for path, cert in creds.own_certificates() if certificate_has_identity(cert, local.id)]
    with_key = [(path, cert, key) for path, cert in candidates if (key := creds.key_for(cert)) is not None]
    if len(with_key) == 1:
        return with_key[0][1], with_key[0][2]
    if not with_key:
        r.error(
            "certs", f"auth = pubkey needs a certificate: no certificate with a private key in x509/ has id {local.id}"
        )
    else:
        names = ", ".join(creds.shown(path) for path, _, _ in with_key)
        r.error("certs", f"several certificates in x509/ have id {local.id} ({names}): choose one in certs")
    return None


def _listed_certificate(local: AuthRound, creds: Credentials) -> tuple[x509.Certificate, PrivateKey] | None:
    """``certs = a.pem, b.pem`` lists candidates: the first that has the local id (and a private key) is used.

    Without an id, the first certificate is used and its subject becomes the id,
    as in strongSwan. (strongSwan may pick another candidate by the peer's
    CERTREQ; tunsec decides when the config is loaded.)
    """
    r = local.reader
    loaded: list[tuple[str, x509.Certificate]] = []
    for name in local.certs:
        path = creds.path(X509_DIR, name)
        try:
            loaded.append((path, creds.certificate(path)))
        except BadValue as exc:
            r.error("certs", f"{creds.shown(path)}: {exc}")
    if len(loaded) < len(local.certs):
        return None
    if local.id is None:
        matching = loaded[:1]
    else:
        matching = [(path, cert) for path, cert in loaded if certificate_has_identity(cert, local.id)]
        if not matching:
            listed = ", ".join(f"{creds.shown(path)} ({subject_name(cert)})" for path, cert in loaded)
            plural = "s" if len(loaded) > 1 else ""
            r.error("id", f"is not in the certificate{plural} {listed} as subject or subjectAltName")
            return None
    for _path, cert in matching:
        key = creds.key_for(cert)
        if key is not None:
            return cert, key
    listed = ", ".join(f"{creds.shown(path)} ({subject_name(cert)})" for path, cert in matching)
    r.error("certs", f"no private key for {listed} in " + ", ".join(f"{d}/" for d in KEY_DIRS))
    return None


def check_eap_client(local: AuthRound, remote: AuthRound) -> bool:
    """A client authenticating with EAP sees the gateway prove itself with a certificate of the id
    it names before it answers (RFC 7296 §2.16): an EAP-MSCHAPv2 response lets whoever receives it
    test password guesses offline, so a holder of a group PSK, or of any certificate of the CA
    (another user's), must not receive it.  False after naming what to fix."""
    assert local.auth is not None and remote.auth is not None
    method = local.auth.method
    if not method.startswith("eap-"):
        return True
    ok = True
    if remote.auth.method != "pubkey":
        remote.reader.error(
            "auth", f"local.auth = {method} needs remote.auth = pubkey: the gateway must prove itself with a "
            "certificate before we answer EAP (RFC 7296 §2.16); whoever holds the PSK would otherwise get "
            "the EAP-MSCHAPv2 response and could test password guesses offline",
        )
        ok = False
    if remote.id is None or remote.id.is_any:
        remote.reader.error(
            "id", f"local.auth = {method} needs remote.id set to the gateway's identity in its certificate: "
            "with %any any certificate of the CA (another user's too) would get the EAP-MSCHAPv2 response",
        )
        ok = False
    return ok


def make_remote_auth(remote: AuthRound, creds: Credentials, radius: bool,
                     radius_groups: bool = False) -> RemoteAuth | None:
    """``radius``: RADIUS servers are configured; ``radius_groups``: their Access-Accepts give
    groups (``radius.class_group`` or ``filter_id``), which ``groups`` needs."""
    assert remote.auth is not None
    ident = remote.id if remote.id is not None else Identity.any()
    if remote.auth.method == "psk":
        return RemoteAuth("psk", ident)
    if remote.auth.method == "eap-mschapv2":
        return RemoteAuth("eap-mschapv2", ident, eap_id=remote.eap_id)
    if remote.auth.method == "eap-radius":
        if not radius:
            remote.reader.error("auth", "auth = eap-radius needs a RADIUS server: add radius { servers { NAME { "
                                "address = ..., secret = ... } } }")
            return None
        if remote.groups and not radius_groups:
            remote.reader.error("groups", "no group membership comes from RADIUS: set radius { class_group = yes } "
                                "(an Access-Accept's Class attributes) or filter_id = yes (its Filter-Id)")
            return None
        return RemoteAuth("eap-radius", ident, eap_id=remote.eap_id, groups=remote.groups)
    # pubkey, or eap-tls: both verify a client certificate against the CAs
    method = remote.auth.method
    r = remote.reader
    cas: list[x509.Certificate] = []
    for name in remote.cacerts:
        path = creds.path(X509CA_DIR, name)
        try:
            cert = creds.certificate(path)
        except BadValue as exc:
            r.error("cacerts", f"{creds.shown(path)}: {exc}")
            continue
        if not is_ca(cert):
            r.error("cacerts", f"{creds.shown(path)}: {subject_name(cert)} is not a CA certificate")
            continue
        cas.append(cert)
    if "cacerts" in r.failed:
        return None
    if not remote.cacerts:
        cas = creds.trusted_cas()
    if not cas:
        r.error(
            "auth",
            f"auth = {method} needs a CA certificate to verify the peer: put it in x509ca/, "
            "in authorities or in remote.cacerts",
        )
        return None
    return RemoteAuth(method, ident, tuple(dict.fromkeys(cas)), eap_id=remote.eap_id)


def eap_secrets(entries: Sequence[IkeSecret]) -> tuple[EapSecret, ...]:
    """The ``secrets.eap*`` entries as the engine wants them: passwords by user name (as written)."""
    return tuple(EapSecret(tuple(i.user for i in e.ids), e.secret) for e in entries if e.eap)


def uses_pubkey(section: Section) -> bool:
    """Whether a connection may need certificates (unparsable auth values count as no)."""
    for prefix in ("local", "remote"):
        sub = next((s for n, s in section.sections.items() if n.lower().startswith(prefix)), None)
        setting = sub.settings.get("auth") if sub is not None else None
        if setting is None or setting.value == "":
            return True  # strongSwan's default is pubkey
        try:
            if _parse_auth(setting.value).method in ("pubkey", "eap-tls"):
                return True
        except BadValue:
            pass
    return False
