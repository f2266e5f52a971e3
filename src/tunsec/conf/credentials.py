"""Certificates and private keys, found the way ``swanctl --load-all`` finds them.

Folders next to the main config file: own certificates by file name in
``x509/`` (or an absolute path), trusted CA certificates in ``x509ca/`` (and
``authorities``), private keys in ``private/``, ``rsa/``, ``ecdsa/`` and
``pkcs8/`` (PEM or DER; encrypted ones with a passphrase from
``secrets.private<suffix>`` and friends). :class:`Credentials` reads a folder
only when some connection needs it, so a PSK-only or manual-only config never
depends on them. Folders of credentials tunsec cannot use (CRLs, OCSP...) must
be empty: ignoring a CRL would let a revoked certificate through.
"""

from __future__ import annotations

import os
import stat
import threading
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tunsec.conf.errors import BadValue, ConfigIssue
from tunsec.conf.filecheck import folder_untrusted
from tunsec.ike.auth import PrivateKey
from tunsec.ike.secret import Secret
from tunsec.safefs import Checked, Untrusted, read_checked, trusted, who

__all__ = [
    "KEY_DIRS",
    "X509CA_DIR",
    "X509_DIR",
    "Credentials",
    "Passphrase",
    "credential_owners",
    "is_ca",
    "key_kind",
    "load_certificate",
    "subject_name",
]

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


def _read_credential(path: str, owners: tuple[int, ...] | None = None) -> bytes:
    """The file's content; owners (as root: Credentials.owners) the users besides root who may change it."""
    if owners is not None:
        return _read_trusted(path, owners)
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


def _read_trusted(path: str, owners: tuple[int, ...]) -> bytes:
    """As root: the file, only when nobody but root and owners may change it or the path to it, read as
    checked (safefs.read_checked: the inode the check found, a regular file).  Another user who may replace
    a CA certificate makes tunsec trust their CA; one who may replace a key, sign with theirs.  When the file,
    a directory or a link on the way is an owner's, it is read with that owner's rights: the owner chose
    what the name leads to (a link to a root-only key elsewhere, a hard link of one), so root reads there
    only what the owner may read itself -- as it does at a reload."""
    try:
        checked = trusted(path, owners)
        if not checked.by_owner or os.geteuid() != 0:   # the service user at its reload: it reads as itself
            return read_checked(path, checked, _MAX_CREDENTIAL_BYTES)
        return _read_as_owner(path, checked, owners)
    except Untrusted as err:
        if not err.fix:   # gone, not a regular file, too large: not a question of who may change it
            raise BadValue(err.why) from None
        raise BadValue(_refusing(err, owners, "it or a directory on its path")) from None
    except ValueError:
        raise BadValue("invalid file name") from None


def _refusing(err: Untrusted, owners: tuple[int, ...], what: str) -> str:
    allowed = " and ".join(["root", *(who(uid) for uid in owners)])
    euid = os.geteuid()
    runs = "tunsec runs as root here and uses" if euid == 0 else f"tunsec, reloading as {who(euid)}, uses"
    return (f"refusing it: {err.why}; {runs} what it holds (whom to trust, which key to sign with), so nobody but "
            f"{allowed} may change {what}: as root, {err.fix}")


def _read_as_owner(path: str, checked: Checked, owners: tuple[int, ...]) -> bytes:
    """read_checked with the effective ids of the owner (credential_owners: one user) that may change the way."""
    from tunsec import privilege

    (uid,) = owners
    if threading.active_count() != 1:   # the switch of ids is the whole process's: another thread would share it
        raise Untrusted(f"cannot read it as {who(uid)} while other threads run; this is a bug in tunsec")
    try:
        with privilege.acting_as(privilege.target_of(uid)):
            return read_checked(path, checked, _MAX_CREDENTIAL_BYTES)
    except OSError as err:   # no CAP_SETUID/CAP_SETGID: tunsec up could not drop to that user either
        raise Untrusted(f"cannot read it as {who(uid)}: {err.strerror or err}") from None
    except privilege.PrivilegeError as err:
        raise Untrusted(f"cannot read it as {who(uid)}: {err}") from None
    except Untrusted as err:
        raise Untrusted(f"{err.why}; read as {who(uid)}, who may change it or a directory or link on its way: "
                        f"root reads there only what {who(uid)} may read") from None


def credential_owners(user: str | None) -> tuple[int, ...]:
    """Who besides root may own the credential files root reads at start: the service user (tunsec { user }),
    which reads them itself at a reload and holds them in memory while it runs; nobody with user = root (or
    no such user: tunsec up says so)."""
    from tunsec.conf.tunsec_section import service_uid

    uid = service_uid(user)
    return () if uid is None else (uid,)


def _is_pem(data: bytes) -> bool:
    return b"-----BEGIN " in data


def load_certificate(path: str, owners: tuple[int, ...] | None = None) -> x509.Certificate:
    data = _read_credential(path, owners)
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


def is_ca(cert: x509.Certificate) -> bool:
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


def subject_name(cert: x509.Certificate) -> str:
    try:
        return cert.subject.rfc4514_string()
    except ValueError:
        return "<unprintable subject>"


def key_kind(key: object) -> str:
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return "rsa"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return "ecdsa"
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "ed25519"
    return type(key).__name__


@dataclass(frozen=True)
class Passphrase:
    """A passphrase for one encrypted key file (``secrets.private<suffix>``), and where it was written."""

    secret: Secret
    file: str
    line: int
    key: str


class Credentials:
    """Certificates and keys next to the config file, read once and only when needed."""

    def __init__(self, base_dir: str, issues: list[ConfigIssue], owners: tuple[int, ...] | None = None) -> None:
        self.base_dir = base_dir
        self.issues = issues
        # as root (load_config's root_check): who besides root may change a file read; None: no check
        self.owners = owners
        self.authority_cas: list[x509.Certificate] = []
        self.passphrases: dict[str, Passphrase] = {}
        self.extra_keys: list[tuple[str, str]] = []  # (folder, path): secrets entries outside the folders
        self.key_files: list[str] = []  # the private keys loaded (readable.py warns of those others may read)
        self._cas: list[x509.Certificate] | None = None
        self._keys: list[PrivateKey] | None = None
        self._own: list[tuple[str, x509.Certificate]] | None = None
        self._checked_unsupported = False
        self._refused_folders: set[str] = set()   # why each folder was refused (_files): said once

    def certificate(self, path: str) -> x509.Certificate:
        """load_certificate, with this configuration's check of who may change the file (owners)."""
        return load_certificate(path, self.owners)

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
        """Regular, non-hidden files of a folder next to the config, sorted; [] if it does not exist.  With owners
        (as root, or the service user at its reload), [] and an issue when another user may add to it: even
        empty, a file put there later would be loaded by the next reload (review revconf F1)."""
        directory = os.path.join(self.base_dir, folder)
        if self.owners is not None and (err := folder_untrusted(directory or ".", self.owners)) is not None:
            if err.why not in self._refused_folders:   # the folders not made yet share the one above them
                self._refused_folders.add(err.why)
                what = "it (a credential folder tunsec looks in, even empty) or a directory on its path"
                self.file_issue(directory, _refusing(err, self.owners, what) if err.fix else
                                f"cannot be checked: {err.why}")
            return []
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
                    cert = self.certificate(path)
                except BadValue as exc:
                    self.file_issue(path, str(exc))
                    continue
                if not is_ca(cert):
                    self.file_issue(path, f"{subject_name(cert)} is not a CA certificate (basicConstraints CA:TRUE)")
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
            key = _load_private_key(_read_credential(path, self.owners), entry.secret if entry else None)
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
            self.file_issue(path, f"not an RSA key ({key_kind(key)}) in the rsa folder")
            return None
        if folder == "ecdsa" and not isinstance(key, ec.EllipticCurvePrivateKey):
            self.file_issue(path, f"not an ECDSA key ({key_kind(key)}) in the ecdsa folder")
            return None
        self.key_files.append(path)
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
                    own.append((path, self.certificate(path)))
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


