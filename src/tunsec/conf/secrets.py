"""swanctl.conf's ``secrets { }``: PSKs (``ike<suffix>``), EAP passwords (``eap<suffix>``,
kept as :class:`IkeSecret` with ``eap`` set: same shape, never picked as a PSK) and passphrases of
encrypted private keys (``private<suffix>``, ``rsa...``, ``ecdsa...``, ``pkcs8...``).

A connection's PSK is the entry that matches its identities best, ranked as
strongSwan ranks them (:func:`find_psk`); a connection of ``remote.id = %any`` carries every
entry (:func:`psk_entries`), and the peer's IDi chooses its own at IKE_AUTH (ike/psk.py); its own
key, as an initiator, is a group key only (:func:`find_own_psk`).
Weak PSKs are accepted with a warning (:func:`weak_psk_warnings`). PSKs and passphrases are
:class:`~tunsec.ike.secret.Secret` from the moment they are parsed; no message
ever contains them.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from tunsec.conf.credentials import KEY_DIRS, Credentials, Passphrase
from tunsec.conf.errors import BadValue, ConfigIssue
from tunsec.conf.reader import SectionReader, refuse_keys
from tunsec.conf.syntax import Section
from tunsec.conf.values import parse_file, parse_identity
from tunsec.ike.identity import Identity
from tunsec.ike.psk import PskEntry, best_psk, is_group_key
from tunsec.ike.secret import Secret

__all__ = [
    "MIN_PSK_BYTES",
    "IkeSecret",
    "find_own_psk",
    "find_psk",
    "parse_psk",
    "psk_entries",
    "psk_weakness",
    "read_secrets",
    "weak_psk_warnings",
]


@dataclass(frozen=True)
class IkeSecret:
    """A ``secrets.ike<suffix>`` entry: a PSK and the identities it belongs to (none: any);
    with ``eap``, a ``secrets.eap<suffix>`` entry: an EAP password and its user names."""

    name: str
    ids: tuple[Identity, ...]
    secret: Secret
    file: str = field(default="", compare=False)
    line: int = field(default=0, compare=False)
    eap: bool = False


def psk_entries(secrets: Sequence[IkeSecret]) -> tuple[PskEntry, ...]:
    """The PSK entries (not the EAP passwords) as the engine takes them."""
    return tuple(PskEntry(s.ids, s.secret, s.name) for s in secrets if not s.eap)


def find_psk(secrets: Sequence[IkeSecret], local_id: Identity, remote_id: Identity) -> IkeSecret | None:
    """The PSK strongSwan would pick for these identities, or None (ike/psk.best_psk's ranking).

    A remote identity of ``%any`` matches only entries without ids or with ``%any``: a
    connection of %any also carries every entry, of which the peer's IDi chooses at IKE_AUTH
    (ike/psk.psk_for_peer).
    """
    ikes = [s for s in secrets if not s.eap]
    entries = psk_entries(ikes)
    found = best_psk(entries, local_id, remote_id)
    return next((s for s, e in zip(ikes, entries, strict=True) if e is found), None)


def find_own_psk(secrets: Sequence[IkeSecret], local_id: Identity, remote_id: Identity) -> IkeSecret | None:
    """The key a connection proves itself with as an initiator, or None: find_psk's, but with a
    remote identity of ``%any`` only a group key (ike/psk.is_group_key).  An entry naming another
    identity is that identity's key: strongSwan's pick (an ``ike-carol { id-gw = GW  id-user = carol }``
    names our id) would make carol's key the one a %any connection proves and accepts from whoever
    answers (review revpsk)."""
    if not remote_id.is_any:
        return find_psk(secrets, local_id, remote_id)
    return find_psk([s for s in secrets if is_group_key(PskEntry(s.ids, s.secret), local_id)], local_id, remote_id)


def parse_psk(text: str) -> Secret:
    """strongSwan's secret notation: ``0x`` hex, ``0s`` base64, otherwise the string itself."""
    prefix = text[:2].lower()
    if prefix == "0x":
        digits = "".join(text[2:].split())
        try:
            value = bytes.fromhex(digits)
        except ValueError:
            raise BadValue("0x must be followed by an even number of hex digits") from None
    elif prefix == "0s":
        try:
            value = base64.b64decode("".join(text[2:].split()), validate=True)
        except (binascii.Error, ValueError):
            raise BadValue("0s must be followed by base64") from None
    else:
        value = text.encode("utf-8", "surrogateescape")
    if not value:
        raise BadValue("the secret is empty")
    return Secret(value)


def parse_eap_password(text: str) -> Secret:
    """An ``eap<suffix>`` secret, in parse_psk's notations: it must be UTF-8 text, for EAP-MSCHAPv2
    hashes the password as UTF-16 (RFC 2759 §8.3); other bytes (0x/0s, a file not in UTF-8) have
    no such form, and a client naming that user would make the gateway's MSCHAPv2 fail to hash it."""
    secret = parse_psk(text)
    try:
        secret.reveal().decode("utf-8")
    except UnicodeDecodeError:
        raise BadValue("an EAP password must be UTF-8 text (EAP-MSCHAPv2 hashes it as UTF-16)") from None
    return secret


def _parse_passphrase(text: str) -> Secret:
    return Secret(text.encode("utf-8", "surrogateescape"))


_SECRET_REFUSED = (
    ("xauth", "XAuth secrets are not supported (XAuth is IKEv1)"),
    ("ntlm", "NTLM secrets are not supported (EAP-MSCHAPv2 passwords go in eap-NAME sections)"),
    ("ppk", "postquantum preshared keys (PPK) are not supported"),
    ("pkcs12", "PKCS#12 containers are not supported (put the certificate in x509/ and the key in private/)"),
    ("token", "keys on tokens or smartcards (PKCS#11) are not supported"),
)


def read_secrets(section: Section, creds: Credentials, issues: list[ConfigIssue]) -> tuple[list[IkeSecret], bool]:
    """The PSK entries, and whether one of them was broken (reported)."""
    refuse_keys(section, issues, "secrets takes sections ('ike-NAME { ... }', 'private-NAME { ... }'), not keys")
    psks: list[IkeSecret] = []
    broken = False
    for name, sub in section.sections.items():
        if name.startswith(("ike", "eap")):
            psk = _ike_secret(sub, issues, eap=name.startswith("eap"))
            if psk is not None:
                psks.append(psk)
            broken = broken or psk is None
            continue
        folder = next((f for f in KEY_DIRS if name.startswith(f)), None)
        if folder is not None:
            _key_passphrase(sub, folder, creds, issues)
            continue
        why = next((why for prefix, why in _SECRET_REFUSED if name.startswith(prefix)), None)
        if why is None:
            why = "unknown secret type (sections are named ike..., eap..., private..., rsa..., ecdsa... or pkcs8...)"
        issues.append(ConfigIssue(sub.file, sub.line, sub.path, why))
    _refuse_one_user_twice(section, psks, issues)
    return psks, broken


def _refuse_one_user_twice(section: Section, entries: Sequence[IkeSecret], issues: list[ConfigIssue]) -> None:
    """Two ``eap`` entries whose user names are one identity (``bob`` and ``Bob``: Identity.of_user
    compares names regardless of ASCII case, as strongSwan does) are refused: each would log in with
    its own password, and both be one client for leases, ``unique`` and INITIAL_CONTACT, the one
    taking the other's address and deleting its IKE SA (review reveapid F2); the same name twice is
    as ambiguous.  One entry may name a user in two cases: the same password, the same account."""
    seen: dict[Identity, tuple[IkeSecret, str]] = {}
    for entry in entries:
        if not entry.eap:
            continue
        for ident in entry.ids:
            name = str(ident)
            user = Identity.of_user(name.encode("utf-8", "surrogateescape"))
            first = seen.setdefault(user, (entry, name))
            if first[0].name != entry.name:
                other, other_name = first
                sub = section.sections[entry.name]
                issues.append(ConfigIssue(sub.file, sub.line, sub.path,
                                          f"EAP user {name!r} is the user {other_name!r} of {section.path}."
                                          f"{other.name} ({other.file}:{other.line}) too: user names compare "
                                          "regardless of ASCII case, so two passwords would log in one client "
                                          "(one address, one set of IKE SAs); give each account one entry"))


def _ike_secret(section: Section, issues: list[ConfigIssue], eap: bool = False) -> IkeSecret | None:
    r = SectionReader(section, issues)
    secret = r.require("secret", parse_eap_password if eap else parse_psk)
    ids = [r.get(key, parse_identity, None) for key in section.settings if key.startswith("id")]
    r.finish()
    if secret is None or r.failed:
        return None
    return IkeSecret(section.name, tuple(i for i in ids if i is not None), secret, section.file, section.line,
                     eap=eap)


MIN_PSK_BYTES = 16


def psk_weakness(value: bytes) -> str | None:
    """Why a PSK is too weak to resist an offline guess, or None.

    Whoever records one IKE_AUTH exchange can test guesses offline, as fast as
    they can compute HMACs; only length and randomness protect the PSK."""
    if len(value) < MIN_PSK_BYTES:
        return f"is only {len(value)} bytes long; use at least {MIN_PSK_BYTES}"
    distinct = len(set(value))
    if distinct < 8:
        return f"uses only {distinct} distinct characters"
    if value in (value + value)[1:-1]:      # found inside its own rotation: a repeated pattern
        return "is a shorter pattern repeated"
    return None


def weak_psk_warnings(secrets: Section | None, psks: Sequence[IkeSecret]) -> list[ConfigIssue]:
    out = []
    for psk in psks:
        if psk.eap:
            continue  # a user's password, not a key: its strength is the user's business
        why = psk_weakness(psk.secret.reveal())
        if why is None or secrets is None:
            continue
        section = secrets.sections[psk.name]
        setting = section.settings["secret"]
        out.append(ConfigIssue(setting.file, setting.line, section.key_path("secret"),
                               f"weak pre-shared key: it {why} (an observer of one IKE exchange can guess it "
                               "offline); use e.g. 0s followed by `openssl rand -base64 32`"))
    return out


def _key_passphrase(section: Section, folder: str, creds: Credentials, issues: list[ConfigIssue]) -> None:
    r = SectionReader(section, issues)
    name = r.require("file", parse_file)
    secret = r.require("secret", _parse_passphrase)
    r.finish()
    if name is None:
        return
    path = os.path.normpath(creds.path(folder, name))
    if not os.path.isfile(path):
        r.error("file", f"no such file: {creds.shown(path)}")
        return
    if os.path.dirname(path) != os.path.normpath(os.path.join(creds.base_dir, folder)):
        creds.extra_keys.append((folder, path))  # not found by the folder scan: load it explicitly
    if secret is not None:
        setting = section.settings["secret"]
        creds.passphrases.setdefault(path, Passphrase(secret, setting.file, setting.line, section.key_path("secret")))


