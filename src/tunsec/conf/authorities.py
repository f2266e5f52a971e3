"""swanctl.conf's ``authorities { <name> { cacert = FILE } }``: more trusted CA certificates.

They join the CAs of ``x509ca/`` in :class:`~tunsec.conf.credentials.Credentials`.
Revocation, tokens and hash-and-URL lookup are refused: tunsec cannot do them,
and silently skipping a CRL would trust a revoked certificate.
"""

from __future__ import annotations

from tunsec.conf.credentials import X509CA_DIR, Credentials, is_ca, subject_name
from tunsec.conf.errors import BadValue, ConfigIssue
from tunsec.conf.reader import SectionReader, refuse_keys
from tunsec.conf.syntax import Section
from tunsec.conf.values import parse_file, refuse

__all__ = ["read_authorities"]


def read_authorities(section: Section, creds: Credentials, issues: list[ConfigIssue]) -> None:
    refuse_keys(section, issues, "authorities takes one section per CA ('NAME { cacert = FILE }'), not keys")
    for sub in section.sections.values():
        r = SectionReader(sub, issues)
        cacert = r.get("cacert", parse_file, None)
        file = r.get("file", parse_file, None)
        pkcs11 = refuse("CA certificates on tokens (PKCS#11) are not supported: use cacert = FILE")
        for key in ("handle", "slot", "module"):
            r.get(key, pkcs11, None)
        revocation = refuse("revocation checking (CRL and OCSP) is not supported")
        r.get("crl_uris", revocation, None)
        r.get("ocsp_uris", revocation, None)
        r.get("cert_uri_base", refuse("hash and URL certificate lookup is not supported"), None)
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
            cert = creds.certificate(path)
        except BadValue as exc:
            r.error(key, f"{creds.shown(path)}: {exc}")
            continue
        if not is_ca(cert):
            r.error(key, f"{creds.shown(path)}: {subject_name(cert)} is not a CA certificate")
            continue
        creds.authority_cas.append(cert)


