"""swanctl.conf ``connections``, ``secrets`` and ``authorities``, mapped onto the IKEv2 engine's config.

:func:`tunsec.config.parse_config` hands the three sections to :func:`read_ike`,
which validates them with :class:`~tunsec.config.SectionReader` (every problem
a :class:`~tunsec.config.ConfigIssue` naming file, line and key) and builds, per
connection, the engine's :class:`~tunsec.ike.config.IkeConfig` wrapped in a
:class:`Connection` that adds what the daemon needs around the engine
(addresses and ports to use, start actions, lifetimes, DPD).

Keys mean what they mean in strongSwan 5.9's swanctl.conf. A key tunsec cannot
honour is an error, never silently ignored; a few keys are accepted with only
their default value (``mobike = no``, ``policies = yes``, ``ipcomp = no``...).
Where tunsec accepts a value but behaves a little differently from strongSwan
(``encap = no``: tunsec always encapsulates ESP in UDP; ``fragmentation``:
tunsec does no IKE fragmentation) a warning is recorded in
:attr:`IkeParts.warnings` for the daemon to log.

Credentials are found the way ``swanctl --load-all`` finds them, in folders
next to the main config file: own certificates by file name in ``x509/`` (or an
absolute path), trusted CA certificates in ``x509ca/`` and in ``authorities``,
private keys in ``private/``, ``rsa/``, ``ecdsa/`` and ``pkcs8/`` (PEM or DER,
encrypted ones with a passphrase from ``secrets.private<suffix>`` and
friends). The folders are read only when some connection uses certificates,
so a PSK-only or manual-only config never depends on them. The private key of
a connection is the one whose public key matches its certificate; its PSK is
the ``secrets.ike<suffix>`` entry that matches its identities best, ranked as
strongSwan ranks them (:func:`find_psk`).

PSKs and passphrases are :class:`~tunsec.ike.secret.Secret` from the moment
they are parsed; no message ever contains them.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import stat
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tunsec.config import (
    DEFAULT_REPLAY_WINDOW,
    BadValue,
    ConfigIssue,
    IPAddress,
    Section,
    SectionReader,
    _check_fast_selectors,
    _int_range,
    _parse_address,
    _parse_packets,
    _parse_port,
    _parse_replay_window,
    _show,
    parse_bool,
    parse_bytes,
    parse_duration,
    parse_ts_list,
)
from tunsec.ike.auth import PrivateKey
from tunsec.ike.config import ChildConfig, IkeConfig, LocalAuth, RemoteAuth
from tunsec.ike.constants import IKE_PORT, ProtocolId
from tunsec.ike.identity import Identity, certificate_has_identity
from tunsec.ike.proposals import ProposalSpec, parse_proposals
from tunsec.ike.secret import Secret
from tunsec.policy.selector import Ts, parse_ts

__all__ = [
    "Action",
    "Child",
    "Connection",
    "IkeParts",
    "IkeSecret",
    "find_psk",
    "read_ike",
]

T = TypeVar("T")

# strongSwan's actions (vici's parse_action): none/clear, trap/route, start/restart.
Action = Literal["none", "trap", "start"]
Unique = Literal["never", "no", "keep", "replace"]
SendCert = Literal["always", "ifasked", "never"]
Fragmentation = Literal["yes", "accept", "force", "no"]

# strongSwan's defaults (vici_config.c): IKE SA rekeying every 4 h, Child SA every hour.
DEFAULT_IKE_REKEY_TIME = 4 * 3600
DEFAULT_CHILD_REKEY_TIME = 3600

# Folders next to the config file, as swanctl's --load-all uses them.
X509_DIR = "x509"
X509CA_DIR = "x509ca"
KEY_DIRS = ("private", "rsa", "ecdsa", "pkcs8")
# Credentials strongSwan would use but tunsec cannot: refusing them is safer
# than ignoring them (an ignored CRL would let a revoked certificate through).
_UNSUPPORTED_DIRS = {
    "x509crl": "CRLs are not supported (tunsec does no revocation checking)",
    "x509ocsp": "OCSP signer certificates are not supported (tunsec does no revocation checking)",
    "x509aa": "attribute authorities are not supported",
    "x509ac": "attribute certificates are not supported",
    "pubkey": "raw public keys are not supported",
    "pkcs12": "PKCS#12 containers are not supported (put the certificate in x509/ and the key in private/)",
}
_MAX_CREDENTIAL_BYTES = 1 << 20
_MAX_CHAIN = 8


# --------------------------------------------------------------------------
# What the daemon gets
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class IkeSecret:
    """A ``secrets.ike<suffix>`` entry: a PSK and the identities it belongs to (none: any)."""

    name: str
    ids: tuple[Identity, ...]
    secret: Secret
    file: str = field(default="", compare=False)
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Child:
    """One ``children.<name>`` section: the engine's :class:`ChildConfig` plus daemon-level settings.

    Lifetimes are strongSwan's, with its defaults already applied (``life_* =
    rekey_* + 10%``, ``rand_* = life_* - rekey_*``); 0 means "none". The
    actions are normalised to ``none``/``trap``/``start`` as strongSwan does
    (``clear`` is ``none``, ``route`` is ``trap``, ``restart`` is ``start``).
    """

    name: str
    config: ChildConfig
    start_action: Action = "none"
    close_action: Action = "none"
    dpd_action: Action = "none"
    rekey_time: int = DEFAULT_CHILD_REKEY_TIME
    life_time: int = DEFAULT_CHILD_REKEY_TIME * 110 // 100
    rand_time: int = DEFAULT_CHILD_REKEY_TIME * 10 // 100
    rekey_bytes: int = 0
    life_bytes: int = 0
    rand_bytes: int = 0
    rekey_packets: int = 0
    life_packets: int = 0
    rand_packets: int = 0
    replay_window: int = DEFAULT_REPLAY_WINDOW
    inactivity: int = 0
    file: str = field(default="", compare=False)
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Connection:
    """One ``connections.<name>`` section.

    :attr:`ike` is what the engine takes (``IkeEndpoint([c.ike for c in
    config.connections])``); its ``children`` are the :attr:`children`'s
    configs in the same order. The rest is for the daemon: which addresses and
    ports to use and accept (an empty address tuple is ``%any``), when to
    start, rekey, reauthenticate and check liveness. Times are seconds, 0 is
    "never". ``encap`` is recorded as written: tunsec encapsulates ESP in UDP
    either way.
    """

    name: str
    ike: IkeConfig
    children: tuple[Child, ...]
    local_addrs: tuple[IPAddress, ...] = ()
    remote_addrs: tuple[IPAddress, ...] = ()
    local_port: int = IKE_PORT
    remote_port: int = IKE_PORT
    encap: bool = False
    dpd_delay: int = 0
    rekey_time: int = DEFAULT_IKE_REKEY_TIME
    reauth_time: int = 0
    over_time: int = DEFAULT_IKE_REKEY_TIME // 10
    rand_time: int = DEFAULT_IKE_REKEY_TIME // 10
    keyingtries: int = 1
    unique: Unique = "no"
    send_cert: SendCert = "ifasked"
    fragmentation: Fragmentation = "yes"
    file: str = field(default="", compare=False)
    line: int = field(default=0, compare=False)

    def child(self, name: str) -> Child:
        for child in self.children:
            if child.name == name:
                return child
        raise KeyError(f"connection {self.name} has no child {name!r}")


@dataclass(frozen=True)
class IkeParts:
    """What :func:`read_ike` found; :class:`tunsec.config.Config` carries it on."""

    connections: tuple[Connection, ...] = ()
    ike_secrets: tuple[IkeSecret, ...] = ()
    warnings: tuple[ConfigIssue, ...] = ()


# --------------------------------------------------------------------------
# PSK lookup, as strongSwan's credential manager ranks shared keys
# --------------------------------------------------------------------------

_MATCH_NONE, _MATCH_ANY, _MATCH_PERFECT = 0, 1, 20


def _owner_match(entry: IkeSecret, ident: Identity) -> int:
    """How well ``ident`` matches one of the entry's ids; an entry without ids matches anyone."""
    if not entry.ids:
        return _MATCH_ANY
    best = _MATCH_NONE
    for owner in entry.ids:
        if owner.is_any:
            best = max(best, _MATCH_ANY)
        elif owner == ident:
            best = _MATCH_PERFECT
    return best


def find_psk(secrets: Sequence[IkeSecret], local_id: Identity, remote_id: Identity) -> IkeSecret | None:
    """The PSK strongSwan would pick for these identities, or None.

    An entry qualifies if one of its ids matches either identity (or it has
    none); the best match of the remote identity wins, then the best match of
    the local one, then the entry written first. A remote identity of
    ``%any`` matches only entries without ids or with ``%any``.
    """
    best: IkeSecret | None = None
    best_me = best_other = _MATCH_NONE
    for entry in secrets:
        me, other = _owner_match(entry, local_id), _owner_match(entry, remote_id)
        if me == _MATCH_NONE and other == _MATCH_NONE:
            continue
        if other > best_other or (other == best_other and me > best_me):
            best, best_me, best_other = entry, me, other
    return best


# --------------------------------------------------------------------------
# Value parsers
# --------------------------------------------------------------------------


def _refuse(why: str) -> Callable[[str], None]:
    """A parser for keys tunsec does not support: any non-empty value is an error."""

    def parse(text: str) -> None:
        raise BadValue(why)

    return parse


def _only(r: SectionReader, key: str, parse: Callable[[str], T], allowed: Collection[T], why: str) -> None:
    """A key tunsec accepts only with the value(s) that describe what it does."""
    value = r.get(key, parse, None)
    if value is not None and value not in allowed:
        r.error(key, why)


def _choice(what: str, table: Mapping[str, T]) -> Callable[[str], T]:
    def parse(text: str) -> T:
        try:
            return table[text.strip().lower()]
        except KeyError:
            raise BadValue(f"not {what} ({', '.join(table)}): {_show(text)}") from None

    return parse


def _lower(text: str) -> str:
    return text.strip().lower()


_parse_uint32 = _int_range(0, 0xFFFFFFFF, "a number")
_parse_keyingtries = _int_range(0, 0xFFFFFFFF, "a number of tries")


def _parse_version(text: str) -> int:
    value = text.strip()
    if value == "2":
        return 2
    if value in ("0", "1"):
        meaning = "IKEv1 and IKEv2" if value == "0" else "IKEv1"
        raise BadValue(f"{value} ({meaning}): IKEv1 is not supported, tunsec speaks IKEv2 only (write version = 2)")
    raise BadValue(f"not an IKE version (2): {_show(text)}")


_DNS_NAME = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?")


def _is_range(text: str) -> bool:
    first, sep, last = text.partition("-")
    try:
        ipaddress.ip_address(first.strip())
        ipaddress.ip_address(last.strip())
    except ValueError:
        return False
    return bool(sep)


_ANY_ADDR: tuple[IPAddress, ...] = ()


def _parse_addrs(text: str) -> tuple[IPAddress, ...]:
    """A comma-separated list of IP addresses, or ``%any`` (the empty tuple).

    strongSwan also takes DNS names, subnets and ranges; tunsec resolves no
    names and needs one address per peer, so those are errors.
    """
    addrs: list[IPAddress] = []
    anywhere = False
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            raise BadValue("empty item in the list")
        if item.lower() == "%any":
            anywhere = True
        elif item.lower() in ("%any4", "%any6"):
            raise BadValue(f"{item} is not supported: write %any")
        elif "/" in item or _is_range(item):
            raise BadValue(f"subnets and ranges are not supported, write single addresses: {_show(item)}")
        elif _DNS_NAME.fullmatch(item):
            raise BadValue(f"DNS names are not supported, write an IP address: {_show(item)}")
        else:
            addrs.append(_parse_address(item))
    if anywhere and addrs:
        raise BadValue("%any cannot be combined with addresses")
    if len(set(addrs)) != len(addrs):
        raise BadValue("an address is listed twice")
    return tuple(addrs)


def _parse_ike_proposals(text: str) -> tuple[ProposalSpec, ...]:
    try:
        return parse_proposals(text, ProtocolId.IKE)
    except ValueError as exc:
        raise BadValue(str(exc)) from None


def _parse_esp_proposals(text: str) -> tuple[ProposalSpec, ...]:
    try:
        return parse_proposals(text, ProtocolId.ESP)
    except ValueError as exc:
        raise BadValue(str(exc)) from None


def _parse_mobike(text: str) -> bool:
    if parse_bool(text):
        raise BadValue("MOBIKE is not supported (write mobike = no or leave it out)")
    return False


def _parse_dscp(text: str) -> str:
    value = text.strip()
    if len(value) != 6 or set(value) - {"0", "1"}:
        raise BadValue(f"not a DSCP (six binary digits): {_show(text)}")
    return value


_UNIQUE: dict[str, Unique] = {"never": "never", "no": "no", "keep": "keep", "replace": "replace"}
_FRAGMENTATION: dict[str, Fragmentation] = {"yes": "yes", "accept": "accept", "force": "force", "no": "no"}
_parse_unique = _choice("a uniqueness policy", _UNIQUE)
_parse_fragmentation = _choice("a fragmentation mode", _FRAGMENTATION)
_parse_childless = _choice(
    "a childless mode", {"allow": "allow", "never": "never", "prefer": "prefer", "force": "force"}
)


def _parse_send_cert(text: str) -> SendCert:
    value = text.strip().lower()
    if value == "always":
        return "always"
    if value == "ifasked":
        return "ifasked"
    if value == "never":
        return "never"
    raise BadValue(f"not a send_cert mode (always, ifasked, never): {_show(text)}")


_ACTIONS: dict[str, Action] = {
    "none": "none", "clear": "none", "trap": "trap", "route": "trap", "start": "start", "restart": "start",
}  # fmt: skip


def _parse_action(text: str) -> Action:
    value = text.strip().lower()
    action = _ACTIONS.get(value)
    if action is not None:
        return action
    if value.replace(" ", "") in ("trap|start", "start|trap"):
        raise BadValue("trap|start is not supported: choose trap or start")
    raise BadValue(f"not an action (none, trap, start): {_show(text)}")


def _parse_mode(text: str) -> Literal["tunnel"]:
    value = text.strip().lower()
    if value == "tunnel":
        return "tunnel"
    if value in ("transport", "transport_proxy", "beet"):
        raise BadValue(f"{value} mode is not supported (tunsec does tunnel mode only)")
    if value in ("pass", "drop"):
        raise BadValue(f"{value} (shunt) policies are not supported (tunsec does tunnel mode only)")
    raise BadValue(f"not an IPsec mode (tunnel): {_show(text)}")


_HW_OFFLOAD = {"no": "no", "yes": "yes", "auto": "auto", "crypto": "crypto", "packet": "packet"}


def _parse_identity(text: str) -> Identity:
    """strongSwan's identity notation (see :mod:`tunsec.ike.identity`)."""
    value = text.strip()
    if "*" in value:
        raise BadValue(f"wildcard identities are not supported: {_show(value)}")
    prefix, sep, rest = value.partition(":")
    if sep and prefix.lower() == "dns":  # strongSwan's alias of fqdn:
        value = "fqdn:" + rest
    elif sep and (prefix.lower() == "asn1gn" or prefix.startswith("{")):
        raise BadValue(f"identity type {prefix!r} is not supported")
    try:
        ident = Identity.parse(value)
    except ValueError as exc:
        raise BadValue(str(exc)) from None
    if not ident.is_any and not ident.data:
        # '#' starts a comment, so an unquoted "@#0a0b" arrives here as "@".
        raise BadValue(f"empty identity {_show(value)} (quote values with '#': id = \"@#0a0b...\")")
    return ident


def _parse_local_identity(text: str) -> Identity:
    ident = _parse_identity(text)
    if ident.is_any:
        raise BadValue("the local identity cannot be %any")
    return ident


_NO_FILES: tuple[str, ...] = ()


def _parse_files(text: str) -> tuple[str, ...]:
    names = tuple(item.strip() for item in text.split(","))
    for name in names:
        if not name:
            raise BadValue("empty item in the list")
        if "\0" in name:
            raise BadValue("file name contains a NUL character")
    return names


def _parse_file(text: str) -> str:
    name = text.strip()
    if "\0" in name:
        raise BadValue("file name contains a NUL character")
    return name


def _parse_psk(text: str) -> Secret:
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


def _parse_passphrase(text: str) -> Secret:
    return Secret(text.encode("utf-8", "surrogateescape"))


# --------------------------------------------------------------------------
# Traffic selectors in strongSwan's notation, as the engine's Ts
# --------------------------------------------------------------------------

DYNAMIC = parse_ts("dynamic")
_DYNAMIC_ONLY: tuple[Ts, ...] = (DYNAMIC,)


# --------------------------------------------------------------------------
# Credential files
# --------------------------------------------------------------------------


def _read_credential(path: str) -> bytes:
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise BadValue("not a regular file")
        if st.st_size > _MAX_CREDENTIAL_BYTES:
            raise BadValue(f"larger than {_MAX_CREDENTIAL_BYTES} bytes")
        with open(path, "rb") as f:
            return f.read(_MAX_CREDENTIAL_BYTES + 1)
    except OSError as exc:
        raise BadValue(f"cannot read: {exc.strerror or exc}") from None
    except ValueError:
        raise BadValue("invalid file name") from None


def _is_pem(data: bytes) -> bool:
    return b"-----BEGIN " in data


def _load_certificate(path: str) -> x509.Certificate:
    data = _read_credential(path)
    try:
        if _is_pem(data):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise BadValue("not a PEM or DER X.509 certificate") from None


class _NeedsPassphrase(Exception):
    """The key is encrypted and no passphrase was given."""


class _WrongPassphrase(BadValue):
    """A passphrase was given and the key does not decrypt with it."""


def _load_private_key(data: bytes, passphrase: Secret | None) -> PrivateKey:
    load = serialization.load_pem_private_key if _is_pem(data) else serialization.load_der_private_key
    password = passphrase.reveal() if passphrase is not None else None
    try:
        try:
            key = load(data, password)
        except TypeError:
            if password is None:
                raise _NeedsPassphrase from None
            key = load(data, None)  # a passphrase for a plain key: strongSwan just loads it
    except TypeError:
        raise BadValue("not a private key") from None
    except ValueError:
        if password is not None:
            raise _WrongPassphrase("cannot decrypt it (wrong passphrase?) or not a private key") from None
        raise BadValue("not a PEM or DER private key") from None
    except UnsupportedAlgorithm:
        raise BadValue("unsupported private key algorithm") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise BadValue(f"unsupported key type {type(key).__name__} (RSA, ECDSA or Ed25519)")
    return key


def _spki(key: PrivateKey | x509.Certificate) -> bytes:
    return key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False
    except ValueError:  # a malformed extension
        return False


def _is_self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def _subject(cert: x509.Certificate) -> str:
    try:
        return cert.subject.rfc4514_string()
    except ValueError:
        return "<unprintable subject>"


def _key_kind(key: object) -> str:
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return "rsa"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return "ecdsa"
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "ed25519"
    return type(key).__name__


@dataclass(frozen=True)
class _Passphrase:
    secret: Secret
    file: str
    line: int
    key: str


class _Credentials:
    """Certificates and keys next to the config file, read once and only when needed."""

    def __init__(self, base_dir: str, issues: list[ConfigIssue]) -> None:
        self.base_dir = base_dir
        self.issues = issues
        self.authority_cas: list[x509.Certificate] = []
        self.passphrases: dict[str, _Passphrase] = {}
        self.extra_keys: list[tuple[str, str]] = []  # (folder, path): secrets entries outside the folders
        self._cas: list[x509.Certificate] | None = None
        self._keys: list[PrivateKey] | None = None
        self._own: list[tuple[str, x509.Certificate]] | None = None
        self._checked_unsupported = False

    def path(self, folder: str, name: str) -> str:
        return name if os.path.isabs(name) else os.path.join(self.base_dir, folder, name)

    def shown(self, path: str) -> str:
        """A credential's path as messages show it: relative to the config's folder if inside."""
        if self.base_dir and path.startswith(self.base_dir.rstrip("/") + "/"):
            return path[len(self.base_dir.rstrip("/")) + 1 :]
        return path

    def file_issue(self, path: str, message: str) -> None:
        self.issues.append(ConfigIssue(path, 0, "", message))

    def _files(self, folder: str) -> list[str]:
        """Regular, non-hidden files of a folder next to the config, sorted; [] if it does not exist."""
        directory = os.path.join(self.base_dir, folder)
        try:
            names = sorted(os.listdir(directory or "."))
        except FileNotFoundError:
            return []
        except OSError as exc:
            self.file_issue(directory, f"cannot list: {exc.strerror or exc}")
            return []
        paths = [os.path.join(directory, n) for n in names if not n.startswith(".")]
        return [p for p in paths if os.path.isfile(p)]

    def _check_unsupported_folders(self) -> None:
        if self._checked_unsupported:
            return
        self._checked_unsupported = True
        for folder, why in _UNSUPPORTED_DIRS.items():
            if self._files(folder):
                self.file_issue(os.path.join(self.base_dir, folder), f"{why}: the folder must be empty")

    def trusted_cas(self) -> list[x509.Certificate]:
        """x509ca/ and ``authorities``, as ``swanctl --load-all`` loads them."""
        if self._cas is None:
            self._check_unsupported_folders()
            cas: list[x509.Certificate] = []
            for path in self._files(X509CA_DIR):
                try:
                    cert = _load_certificate(path)
                except BadValue as exc:
                    self.file_issue(path, str(exc))
                    continue
                if not _is_ca(cert):
                    self.file_issue(path, f"{_subject(cert)} is not a CA certificate (basicConstraints CA:TRUE)")
                    continue
                cas.append(cert)
            self._cas = list(dict.fromkeys([*cas, *self.authority_cas]))
        return self._cas

    def private_keys(self) -> list[PrivateKey]:
        """Every key in private/, rsa/, ecdsa/ and pkcs8/, plus absolute ``file``s from ``secrets``."""
        if self._keys is None:
            self._check_unsupported_folders()
            keys: list[PrivateKey] = []
            found = [(folder, path) for folder in KEY_DIRS for path in self._files(folder)]
            for folder, path in [*found, *self.extra_keys]:
                key = self._load_key(folder, path)
                if key is not None:
                    keys.append(key)
            self._keys = keys
        return self._keys

    def _load_key(self, folder: str, path: str) -> PrivateKey | None:
        entry = self.passphrases.get(os.path.normpath(path))
        try:
            key = _load_private_key(_read_credential(path), entry.secret if entry else None)
        except _NeedsPassphrase:
            self.file_issue(
                path,
                f"the key is encrypted: add a secrets.{folder}-NAME section with "
                f"file = {os.path.basename(path)} and secret = PASSPHRASE",
            )
            return None
        except _WrongPassphrase as exc:
            assert entry is not None
            self.issues.append(ConfigIssue(entry.file, entry.line, entry.key, f"{self.shown(path)}: {exc}"))
            return None
        except BadValue as exc:
            self.file_issue(path, str(exc))
            return None
        if folder == "rsa" and not isinstance(key, rsa.RSAPrivateKey):
            self.file_issue(path, f"not an RSA key ({_key_kind(key)}) in the rsa folder")
            return None
        if folder == "ecdsa" and not isinstance(key, ec.EllipticCurvePrivateKey):
            self.file_issue(path, f"not an ECDSA key ({_key_kind(key)}) in the ecdsa folder")
            return None
        return key

    def key_for(self, cert: x509.Certificate) -> PrivateKey | None:
        spki = _spki(cert)
        return next((k for k in self.private_keys() if _spki(k) == spki), None)

    def own_certificates(self) -> list[tuple[str, x509.Certificate]]:
        """Every certificate in x509/ (for connections that name no ``certs``)."""
        if self._own is None:
            own: list[tuple[str, x509.Certificate]] = []
            for path in self._files(X509_DIR):
                try:
                    own.append((path, _load_certificate(path)))
                except BadValue as exc:
                    self.file_issue(path, str(exc))
            self._own = own
        return self._own

    def chain(self, cert: x509.Certificate) -> tuple[x509.Certificate, ...]:
        """The intermediate CAs between ``cert`` and a self-signed root, from the trusted CAs."""
        chain: list[x509.Certificate] = []
        current = cert
        while len(chain) < _MAX_CHAIN and not _is_self_signed(current):
            issuer = next(
                (ca for ca in self.trusted_cas() if ca.subject == current.issuer and _issued_by(current, ca)), None
            )
            if issuer is None or _is_self_signed(issuer) or issuer in chain:
                break
            chain.append(issuer)
            current = issuer
        return tuple(chain)


# --------------------------------------------------------------------------
# secrets { }
# --------------------------------------------------------------------------

_SECRET_REFUSED = (
    ("eap", "EAP secrets are not supported (tunsec does no EAP)"),
    ("xauth", "XAuth secrets are not supported (XAuth is IKEv1)"),
    ("ntlm", "NTLM secrets are not supported (tunsec does no EAP)"),
    ("ppk", "postquantum preshared keys (PPK) are not supported"),
    ("pkcs12", "PKCS#12 containers are not supported (put the certificate in x509/ and the key in private/)"),
    ("token", "keys on tokens or smartcards (PKCS#11) are not supported"),
)


def _read_secrets(section: Section, creds: _Credentials, issues: list[ConfigIssue]) -> tuple[list[IkeSecret], bool]:
    """The PSK entries, and whether one of them was broken (reported)."""
    for name, setting in section.settings.items():
        issues.append(
            ConfigIssue(
                setting.file, setting.line, section.key_path(name),
                "secrets takes sections ('ike-NAME { ... }', 'private-NAME { ... }'), not keys",
            )
        )  # fmt: skip
    psks: list[IkeSecret] = []
    broken = False
    for name, sub in section.sections.items():
        if name.startswith("ike"):
            psk = _ike_secret(sub, issues)
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
            why = "unknown secret type (sections are named ike..., private..., rsa..., ecdsa... or pkcs8...)"
        issues.append(ConfigIssue(sub.file, sub.line, sub.path, why))
    return psks, broken


def _ike_secret(section: Section, issues: list[ConfigIssue]) -> IkeSecret | None:
    r = SectionReader(section, issues)
    secret = r.require("secret", _parse_psk)
    ids = [r.get(key, _parse_identity, None) for key in section.settings if key.startswith("id")]
    r.finish()
    if secret is None or r.failed:
        return None
    return IkeSecret(section.name, tuple(i for i in ids if i is not None), secret, section.file, section.line)


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


def _weak_psk_warnings(secrets: Section | None, psks: Sequence[IkeSecret]) -> list[ConfigIssue]:
    out = []
    for psk in psks:
        why = psk_weakness(psk.secret.reveal())
        if why is None or secrets is None:
            continue
        section = secrets.sections[psk.name]
        setting = section.settings["secret"]
        out.append(ConfigIssue(setting.file, setting.line, section.key_path("secret"),
                               f"weak pre-shared key: it {why} (an observer of one IKE exchange can guess it "
                               "offline); use e.g. 0s followed by `openssl rand -base64 32`"))
    return out


def _key_passphrase(section: Section, folder: str, creds: _Credentials, issues: list[ConfigIssue]) -> None:
    r = SectionReader(section, issues)
    name = r.require("file", _parse_file)
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
        creds.passphrases.setdefault(path, _Passphrase(secret, setting.file, setting.line, section.key_path("secret")))


# --------------------------------------------------------------------------
# authorities { }
# --------------------------------------------------------------------------


def _read_authorities(section: Section, creds: _Credentials, issues: list[ConfigIssue]) -> None:
    for name, setting in section.settings.items():
        issues.append(
            ConfigIssue(
                setting.file, setting.line, section.key_path(name),
                "authorities takes one section per CA ('NAME { cacert = FILE }'), not keys",
            )
        )  # fmt: skip
    for sub in section.sections.values():
        r = SectionReader(sub, issues)
        cacert = r.get("cacert", _parse_file, None)
        file = r.get("file", _parse_file, None)
        pkcs11 = _refuse("CA certificates on tokens (PKCS#11) are not supported: use cacert = FILE")
        for key in ("handle", "slot", "module"):
            r.get(key, pkcs11, None)
        revocation = _refuse("revocation checking (CRL and OCSP) is not supported")
        r.get("crl_uris", revocation, None)
        r.get("ocsp_uris", revocation, None)
        r.get("cert_uri_base", _refuse("hash and URL certificate lookup is not supported"), None)
        r.finish()
        if cacert is not None and file is not None:
            r.error("file", "give either cacert or file, not both")
            continue
        key = "cacert" if file is None else "file"
        cert_file = cacert if file is None else file
        if cert_file is None:
            if "cacert" not in r.failed and "file" not in r.failed and not sub.damaged:
                r.error("cacert", "required key is missing")
            continue
        path = creds.path(X509CA_DIR, cert_file)
        try:
            cert = _load_certificate(path)
        except BadValue as exc:
            r.error(key, f"{creds.shown(path)}: {exc}")
            continue
        if not _is_ca(cert):
            r.error(key, f"{creds.shown(path)}: {_subject(cert)} is not a CA certificate")
            continue
        creds.authority_cas.append(cert)


# --------------------------------------------------------------------------
# connections { <name> { local { } remote { } children { } } }
# --------------------------------------------------------------------------

AuthMethod = Literal["psk", "pubkey"]
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
    }
    if value in simple:
        return simple[value]
    if value.startswith("eap"):
        raise BadValue("EAP authentication is not supported (psk or pubkey)")
    if value.startswith("xauth"):
        raise BadValue("XAuth is IKEv1 and not supported (psk or pubkey)")
    if value.startswith("ike:") or "-" in value:
        raise BadValue(
            "signature scheme and key strength constraints are not supported "
            "(psk, pubkey, rsa, rsa/pss, ecdsa or ed25519)"
        )
    raise BadValue(f"not an authentication method (psk, pubkey, rsa, rsa/pss, ecdsa, ed25519): {_show(text)}")


@dataclass
class _Round:
    """A parsed local or remote section, before credentials are attached."""

    section: Section
    reader: SectionReader
    auth: _Auth | None
    id: Identity | None
    certs: tuple[str, ...] = ()
    cacerts: tuple[str, ...] = ()


_EAP_KEYS = ("eap_id", "aaa_id", "xauth_id")
_PKCS11_SECTION = "certificate sections on tokens (PKCS#11) are not supported: use {key} = FILE"


def _round_sections(r: SectionReader, prefix: str, issues: list[ConfigIssue]) -> Section | None:
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
    r.get("round", _parse_uint32, 0)  # orders rounds; tunsec has one
    auth = r.get("auth", _parse_auth, _Auth("pubkey"))
    ident = r.get("id", _parse_local_identity if local else _parse_identity, None)
    r.get("pubkeys", _refuse("raw public keys are not supported: use certificates"), None)
    for sub in list(r.section.sections):
        low = sub.lower()
        if low.startswith(("cert", "cacert")):
            section = r.subsection(sub)
            assert section is not None
            kind = "cacerts" if low.startswith("cacert") else "certs"
            r.issues.append(ConfigIssue(section.file, section.line, section.path, _PKCS11_SECTION.format(key=kind)))
    return (None if "auth" in r.failed else auth), ident


def _read_local(section: Section | None, issues: list[ConfigIssue], parent: Section) -> _Round:
    sec = section or Section("local", parent.key_path("local"), parent.file, parent.line)
    r = SectionReader(sec, issues)
    auth, ident = _common_round_keys(r, True)
    certs = r.get("certs", _parse_files, _NO_FILES)
    eap = _refuse("EAP and XAuth are not supported")
    for key in _EAP_KEYS:
        r.get(key, eap, None)
    r.finish()
    if auth is not None and auth.method == "psk" and certs:
        r.error("certs", "certificates are only used with auth = pubkey")
    return _Round(sec, r, auth, ident, certs=certs)


def _read_remote(section: Section | None, issues: list[ConfigIssue], parent: Section) -> _Round:
    sec = section or Section("remote", parent.key_path("remote"), parent.file, parent.line)
    r = SectionReader(sec, issues)
    auth, ident = _common_round_keys(r, False)
    if auth is not None and (auth.key_kind is not None or auth.rsa_pss):
        r.error("auth", "constraints on the peer's key type are not supported: write auth = pubkey")
        auth = None
    cacerts = r.get("cacerts", _parse_files, _NO_FILES)
    r.get("certs", _refuse("pinning the peer's certificate is not supported: trust its CA (cacerts)"), None)
    _only(
        r, "revocation", _choice("a revocation policy", {"strict": "strict", "ifuri": "ifuri", "relaxed": "relaxed"}),
        {"relaxed"}, "revocation checking is not supported (only relaxed, the default)",
    )  # fmt: skip
    for key, why in (
        ("groups", "group membership constraints are not supported"),
        ("cert_policy", "certificate policy constraints are not supported"),
        ("ca_id", "CA identity constraints are not supported: use cacerts"),
        ("eap_id", "EAP is not supported"),
    ):
        r.get(key, _refuse(why), None)
    r.finish()
    if auth is not None and auth.method == "psk" and cacerts:
        r.error("cacerts", "CA certificates are only used with auth = pubkey")
    return _Round(sec, r, auth, ident, cacerts=cacerts)


@dataclass
class _Draft:
    """A child as parsed; becomes a :class:`Child` once the connection is complete."""

    section: Section
    reader: SectionReader
    child: Child


def _lifetimes(r: SectionReader, what: str, parse: Callable[[str], int], default_rekey: int) -> tuple[int, int, int]:
    """(rekey, life, rand) with strongSwan's defaults: life = rekey + 10%, rand = life - rekey."""
    rekey = r.get(f"rekey_{what}", parse, None)
    life = r.get(f"life_{what}", parse, None)
    rand = r.get(f"rand_{what}", parse, None)
    rekey_v = default_rekey if rekey is None else rekey
    life_v = rekey_v * 110 // 100 if life is None else life
    rand_v = life_v - min(life_v, rekey_v) if rand is None else rand
    soft, hard = f"rekey_{what}", f"life_{what}"
    if life and rekey_v >= life and not {soft, hard} & r.failed:
        if rekey is not None:
            r.error(soft, f"must be below {hard} ({rekey} >= {life})")
        else:
            r.error(hard, f"must be above {soft} ({life} <= {rekey_v}, the default {soft})")
    return rekey_v, life_v, rand_v


_CHILD_REFUSED = (
    ("ah_proposals", "AH is not supported (tunsec does ESP only)"),
    ("updown", "updown scripts are not supported"),
    ("interface", "restricting policies to an interface is not supported"),
    ("mark_in", "netfilter marks are not supported"),
    ("mark_in_sa", "netfilter marks are not supported"),
    ("mark_out", "netfilter marks are not supported"),
    ("set_mark_in", "netfilter marks are not supported"),
    ("set_mark_out", "netfilter marks are not supported"),
    ("if_id_in", "XFRM interface IDs are not supported"),
    ("if_id_out", "XFRM interface IDs are not supported"),
    ("label", "security labels are not supported"),
    ("label_mode", "security labels are not supported"),
)


def _read_child(section: Section, issues: list[ConfigIssue]) -> _Draft | None:
    r = SectionReader(section, issues)
    local_ts = r.get("local_ts", parse_ts_list, _DYNAMIC_ONLY)
    remote_ts = r.get("remote_ts", parse_ts_list, _DYNAMIC_ONLY)
    esp = r.get("esp_proposals", _parse_esp_proposals, None)
    mode: Literal["tunnel"] = r.get("mode", _parse_mode, "tunnel")
    start_action: Action = r.get("start_action", _parse_action, "none")
    close_action: Action = r.get("close_action", _parse_action, "none")
    dpd_action: Action = r.get("dpd_action", _parse_action, "none")
    rekey_time, life_time, rand_time = _lifetimes(r, "time", parse_duration, DEFAULT_CHILD_REKEY_TIME)
    rekey_bytes, life_bytes, rand_bytes = _lifetimes(r, "bytes", parse_bytes, 0)
    rekey_packets, life_packets, rand_packets = _lifetimes(r, "packets", _parse_packets, 0)
    replay_window = r.get("replay_window", _parse_replay_window, DEFAULT_REPLAY_WINDOW)
    _only(r, "inactivity", parse_duration, {0}, "inactivity timeouts are not supported")
    inactivity = 0
    # Only passed to updown scripts (refused below), so it has no effect, as in strongSwan without one.
    r.get("hostaccess", parse_bool, False)
    _only(r, "policies", parse_bool, {True}, "policies = no is not supported (tunsec always installs policies)")
    _only(r, "policies_fwd_out", parse_bool, {False}, "outbound FWD policies are not supported")
    _only(r, "ipcomp", parse_bool, {False}, "IPComp is not supported")
    _only(r, "sha256_96", parse_bool, {False}, "truncated HMAC-SHA256 is not supported (tunsec's ESP is AES-GCM)")
    _only(r, "hw_offload", _choice("a hw_offload mode", _HW_OFFLOAD), {"no"}, "hardware offload is not supported")
    _only(r, "copy_df", parse_bool, {True}, "only copy_df = yes is supported")
    _only(r, "copy_ecn", parse_bool, {True}, "only copy_ecn = yes is supported")
    _only(r, "copy_dscp", _choice("a copy_dscp mode", {"out": "out", "in": "in", "yes": "yes", "no": "no"}),
          {"out"}, "only copy_dscp = out is supported")  # fmt: skip
    _only(r, "reqid", _parse_uint32, {0}, "fixed reqids are not supported")
    _only(r, "priority", _parse_uint32, {0}, "fixed policy priorities are not supported")
    _only(r, "tfc_padding", _lower, {"0"}, "TFC padding is not supported")
    for key, why in _CHILD_REFUSED:
        r.get(key, _refuse(why), None)
    r.finish()
    _check_fast_selectors(r, local_ts, remote_ts)
    if r.failed:
        return None
    config = ChildConfig(
        section.name,
        local_ts,
        remote_ts,
        esp if esp is not None else parse_proposals("default", ProtocolId.ESP),
        mode,
        rekey_time=rekey_time or None,   # the engine rekeys on time; the dataplane on bytes/packets
    )
    child = Child(
        section.name,
        config,
        start_action=start_action,
        close_action=close_action,
        dpd_action=dpd_action,
        rekey_time=rekey_time,
        life_time=life_time,
        rand_time=rand_time,
        rekey_bytes=rekey_bytes,
        life_bytes=life_bytes,
        rand_bytes=rand_bytes,
        rekey_packets=rekey_packets,
        life_packets=life_packets,
        rand_packets=rand_packets,
        replay_window=replay_window,
        inactivity=inactivity,
        file=section.file,
        line=section.line,
    )
    return _Draft(section, r, child)


def _read_children(r: SectionReader, issues: list[ConfigIssue]) -> list[_Draft] | None:
    """The connection's children; None if one of them is broken (already reported)."""
    section = r.subsection("children")
    if section is None or (not section.sections and not section.settings):
        if not r.section.damaged and (section is None or not section.damaged):
            r.error("children", "a connection needs at least one child ('children { NAME { ... } }')")
        return None
    for name, setting in section.settings.items():
        issues.append(
            ConfigIssue(
                setting.file, setting.line, section.key_path(name),
                "children takes one section per child ('NAME { local_ts = ... }'), not keys",
            )
        )  # fmt: skip
    drafts = [_read_child(sub, issues) for sub in section.sections.values()]
    if section.settings or any(d is None for d in drafts):
        return None
    return [d for d in drafts if d is not None]


_CONN_REFUSED = (
    ("vips", "virtual IPs are not supported"),
    ("pools", "address pools (virtual IPs) are not supported"),
    ("if_id_in", "XFRM interface IDs are not supported"),
    ("if_id_out", "XFRM interface IDs are not supported"),
    ("ppk_id", "postquantum preshared keys (PPK) are not supported"),
    ("mediated_by", "mediation is not supported"),
    ("mediation_peer", "mediation is not supported"),
)


@dataclass
class _ConnContext:
    creds: _Credentials
    psks: Sequence[IkeSecret]
    psks_broken: bool  # a secrets.ike entry had errors: a missing PSK may be that one
    issues: list[ConfigIssue]
    warnings: list[ConfigIssue]


def _ike_lifetimes(r: SectionReader) -> tuple[int, int, int, int]:
    """(rekey, reauth, over, rand) with strongSwan's defaults (vici_config.c)."""
    rekey = r.get("rekey_time", parse_duration, None)
    reauth = r.get("reauth_time", parse_duration, None)
    over = r.get("over_time", parse_duration, None)
    rand = r.get("rand_time", parse_duration, None)
    if reauth:
        r.error("reauth_time", "reauthentication is not supported (tunsec rekeys IKE SAs: use rekey_time)")
    if rekey is None and reauth is None:
        rekey, reauth = DEFAULT_IKE_REKEY_TIME, 0
    rekey, reauth = rekey or 0, reauth or 0
    if over is None:
        over = max(rekey, reauth) // 10
    if rand is None:
        rand = min(rekey, reauth) if rekey and reauth else max(rekey, reauth)
        rand = min(over, rand // 2)
    return rekey, reauth, over, rand


def _warn(ctx: _ConnContext, r: SectionReader, key: str, message: str) -> None:
    file, line = r.where(key)
    ctx.warnings.append(ConfigIssue(file, line, r.section.key_path(key), message))


def _read_connection(section: Section, ctx: _ConnContext) -> Connection | None:
    issues = ctx.issues
    r = SectionReader(section, issues)
    r.get("version", _parse_version, 2)
    local_addrs = r.get("local_addrs", _parse_addrs, _ANY_ADDR)
    remote_addrs = r.get("remote_addrs", _parse_addrs, _ANY_ADDR)
    local_port = r.get("local_port", _parse_port, IKE_PORT)
    remote_port = r.get("remote_port", _parse_port, IKE_PORT)
    proposals = r.get("proposals", _parse_ike_proposals, None)
    encap = r.get("encap", parse_bool, False)
    r.get("mobike", _parse_mobike, False)
    dpd_delay = r.get("dpd_delay", parse_duration, 0)
    r.get("dpd_timeout", parse_duration, 0)  # IKEv1 only: no effect on IKEv2 in strongSwan either
    # tunsec's engine does no IKE fragmentation (RFC 7383): it neither sends nor
    # reassembles fragments, whatever the value; oversized messages rely on IP
    # fragmentation. Any value is accepted (the default is yes), with a warning
    # when one asks for fragmentation explicitly.
    fragmentation: Fragmentation = r.get("fragmentation", _parse_fragmentation, "yes")
    send_certreq = r.get("send_certreq", parse_bool, True)
    send_cert: SendCert = r.get("send_cert", _parse_send_cert, "ifasked")
    keyingtries = r.get("keyingtries", _parse_keyingtries, 1)
    unique: Unique = r.get("unique", _parse_unique, "no")
    rekey_time, reauth_time, over_time, rand_time = _ike_lifetimes(r)
    _only(r, "aggressive", parse_bool, {False}, "Aggressive Mode is IKEv1 and not supported")
    _only(r, "pull", parse_bool, {True}, "push mode (IKEv1 Mode Config) is not supported")
    _only(r, "dscp", _parse_dscp, {"000000"}, "setting a DSCP on IKE packets is not supported")
    _only(r, "childless", _parse_childless, {"allow", "never"}, "childless IKE SAs are not supported")
    _only(r, "ppk_required", parse_bool, {False}, "postquantum preshared keys (PPK) are not supported")
    _only(r, "mediation", parse_bool, {False}, "mediation is not supported")
    for key, why in _CONN_REFUSED:
        r.get(key, _refuse(why), None)
    local = _read_local(_round_sections(r, "local", issues), issues, section)
    remote = _read_remote(_round_sections(r, "remote", issues), issues, section)
    drafts = _read_children(r, issues)
    r.finish()

    if "encap" in section.settings and not encap and "encap" not in r.failed:
        _warn(ctx, r, "encap", "tunsec always encapsulates ESP in UDP (as with encap = yes)")
    if "fragmentation" in section.settings and fragmentation != "no" and "fragmentation" not in r.failed:
        _warn(ctx, r, "fragmentation", "tunsec does no IKE fragmentation (RFC 7383); large messages go unfragmented")
    if local_addrs and remote_addrs and not {a.version for a in local_addrs} & {a.version for a in remote_addrs}:
        r.error("remote_addrs", "no address family in common with local_addrs")
    if drafts is not None:
        for draft in drafts:
            if draft.child.start_action != "none" and not remote_addrs and "remote_addrs" not in r.failed:
                draft.reader.error(
                    "start_action",
                    f"start_action = {draft.child.start_action} needs a peer to initiate to (remote_addrs is %any)",
                )
    if r.failed or local.reader.failed or remote.reader.failed or drafts is None:
        return None
    if any(d.reader.failed for d in drafts) or local.auth is None or remote.auth is None:
        return None

    local_auth = _local_auth(local, local_addrs, ctx)
    remote_auth = _remote_auth(remote, ctx)
    if local_auth is None or remote_auth is None:
        return None
    psk: Secret | None = None
    if "psk" in (local_auth.method, remote_auth.method):
        entry = find_psk(ctx.psks, local_auth.id, remote_auth.id)
        if entry is None and ctx.psks_broken:
            return None
        if entry is None:
            where = local if local_auth.method == "psk" else remote
            where.reader.error(
                "auth",
                f"no PSK in secrets for local id {local_auth.id} and remote id {remote_auth.id} "
                "(add a secrets.ike-NAME section with their ids and the secret)",
            )
            return None
        psk = entry.secret
    children = tuple(d.child for d in drafts)
    try:
        ike = IkeConfig(
            section.name,
            local_auth,
            remote_auth,
            proposals if proposals is not None else parse_proposals("default", ProtocolId.IKE),
            tuple(c.config for c in children),
            psk=psk,
            local_addr=str(local_addrs[0]) if local_addrs else None,
            remote_addr=str(remote_addrs[0]) if remote_addrs else None,
            remote_port=remote_port,
            send_certreq=send_certreq,
            # strongSwan 5.9 sends INITIAL_CONTACT (if it has no SA with the peer) unless unique = never.
            initial_contact=unique != "never",
            rekey_time=rekey_time or None,
            dpd_delay=dpd_delay or None,
        )
    except ValueError as exc:  # the engine's own consistency checks; the checks above should cover them
        issues.append(ConfigIssue(section.file, section.line, section.path, str(exc)))
        return None
    return Connection(
        section.name,
        ike,
        children,
        local_addrs=local_addrs,
        remote_addrs=remote_addrs,
        local_port=local_port,
        remote_port=remote_port,
        encap=encap,
        dpd_delay=dpd_delay,
        rekey_time=rekey_time,
        reauth_time=reauth_time,
        over_time=over_time,
        rand_time=rand_time,
        keyingtries=keyingtries,
        unique=unique,
        send_cert=send_cert,
        fragmentation=fragmentation,
        file=section.file,
        line=section.line,
    )


def _local_auth(local: _Round, local_addrs: tuple[IPAddress, ...], ctx: _ConnContext) -> LocalAuth | None:
    assert local.auth is not None
    r = local.reader
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
    found = _own_certificate(local, ctx)
    if found is None:
        return None
    cert, key = found
    ident = local.id if local.id is not None else Identity.from_name(cert.subject)
    kind = _key_kind(key)
    if local.auth.key_kind is not None and local.auth.key_kind != kind:
        r.error("auth", f"auth wants an {local.auth.key_kind} key but the certificate has an {kind} key")
        return None
    return LocalAuth(
        "pubkey",
        ident,
        cert=cert,
        intermediates=ctx.creds.chain(cert),
        private_key=key,
        rsa_pss=local.auth.rsa_pss,
    )


def _own_certificate(local: _Round, ctx: _ConnContext) -> tuple[x509.Certificate, PrivateKey] | None:
    """The local certificate and its private key, by ``certs`` or (like strongSwan) by id in x509/."""
    r, creds = local.reader, ctx.creds
    if len(local.certs) > 1:
        r.error("certs", "tunsec uses one certificate per connection: list one")
        return None
    if local.certs:
        path = creds.path(X509_DIR, local.certs[0])
        try:
            cert = _load_certificate(path)
        except BadValue as exc:
            r.error("certs", f"{creds.shown(path)}: {exc}")
            return None
        if local.id is not None and not certificate_has_identity(cert, local.id):
            r.error(
                "id", f"is not in the certificate {creds.shown(path)} ({_subject(cert)}) as subject or subjectAltName"
            )
            return None
        key = creds.key_for(cert)
        if key is None:
            r.error(
                "certs",
                f"no private key for {creds.shown(path)} ({_subject(cert)}) in " + ", ".join(f"{d}/" for d in KEY_DIRS),
            )
            return None
        return cert, key
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


def _remote_auth(remote: _Round, ctx: _ConnContext) -> RemoteAuth | None:
    assert remote.auth is not None
    ident = remote.id if remote.id is not None else Identity.any()
    if remote.auth.method == "psk":
        return RemoteAuth("psk", ident)
    r, creds = remote.reader, ctx.creds
    cas: list[x509.Certificate] = []
    for name in remote.cacerts:
        path = creds.path(X509CA_DIR, name)
        try:
            cert = _load_certificate(path)
        except BadValue as exc:
            r.error("cacerts", f"{creds.shown(path)}: {exc}")
            continue
        if not _is_ca(cert):
            r.error("cacerts", f"{creds.shown(path)}: {_subject(cert)} is not a CA certificate")
            continue
        cas.append(cert)
    if "cacerts" in r.failed:
        return None
    if not remote.cacerts:
        cas = creds.trusted_cas()
    if not cas:
        r.error(
            "auth",
            "auth = pubkey needs a CA certificate to verify the peer: put it in x509ca/, "
            "in authorities or in remote.cacerts",
        )
        return None
    return RemoteAuth("pubkey", ident, tuple(dict.fromkeys(cas)))


def _uses_pubkey(section: Section) -> bool:
    """Whether a connection may need certificates (unparsable auth values count as no)."""
    for prefix in ("local", "remote"):
        sub = next((s for n, s in section.sections.items() if n.lower().startswith(prefix)), None)
        setting = sub.settings.get("auth") if sub is not None else None
        if setting is None or setting.value == "":
            return True  # strongSwan's default is pubkey
        try:
            if _parse_auth(setting.value).method == "pubkey":
                return True
        except BadValue:
            pass
    return False


def _check_unique_children(connections: Sequence[Connection], issues: list[ConfigIssue]) -> None:
    """``tunsec initiate --child NAME`` names a child alone, so child names are unique across connections."""
    seen: dict[str, Connection] = {}
    for conn in connections:
        for child in conn.children:
            first = seen.setdefault(child.name, conn)
            if first is not conn:
                issues.append(
                    ConfigIssue(
                        child.file, child.line, f"connections.{conn.name}.children.{child.name}",
                        f"child name already used in connection {first.name} ({first.file}:{first.line}); "
                        "tunsec initiate --child needs unique names",
                    )
                )  # fmt: skip


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------


def read_ike(sections: Mapping[str, Section], base_dir: str, issues: list[ConfigIssue]) -> IkeParts:
    """Validate ``connections``, ``secrets`` and ``authorities``; problems go to ``issues``.

    ``base_dir`` is the folder of the main config file, where x509/, x509ca/,
    private/... are looked up (``''`` is the current directory).
    """
    creds = _Credentials(base_dir, issues)
    authorities = sections.get("authorities")
    if authorities is not None:
        _read_authorities(authorities, creds, issues)
    secrets = sections.get("secrets")
    psks, broken = _read_secrets(secrets, creds, issues) if secrets is not None else ([], False)
    ctx = _ConnContext(creds, psks, broken, issues, _weak_psk_warnings(secrets, psks))
    connections: list[Connection] = []
    section = sections.get("connections")
    if section is not None:
        for name, setting in section.settings.items():
            issues.append(
                ConfigIssue(
                    setting.file, setting.line, section.key_path(name),
                    "connections takes one section per connection ('NAME { ... }'), not keys",
                )
            )  # fmt: skip
        if any(_uses_pubkey(sub) for sub in section.sections.values()):
            creds.trusted_cas()  # report problems in x509ca/ even if no connection gets that far
        for sub in section.sections.values():
            conn = _read_connection(sub, ctx)
            if conn is not None:
                connections.append(conn)
        _check_unique_children(connections, issues)
    return IkeParts(tuple(connections), tuple(psks), tuple(ctx.warnings))
