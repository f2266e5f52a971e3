"""What the swanctl.conf connection tests share: a strongSwan-style PSK config and helpers to change
it and read its errors, and a PKI (CA, RSA and ECDSA end entities) laid out as swanctl expects."""

from __future__ import annotations

import base64
import datetime
from dataclasses import dataclass
from pathlib import Path

import config_data
import pytest
from config_data import line_of  # noqa: F401  (the connection tests import it from here)
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tunsec.conf.errors import ConfigIssue
from tunsec.ike.auth import PrivateKey
from tunsec.ike.identity import Identity
from tunsec.ike.testing import EPOCH, Issued, make_ca, make_cert

PSK_TEXT = "This is a strong secret, 32+ chars long"
PSK_B64 = base64.b64encode(PSK_TEXT.encode()).decode()

# A strongSwan-style site-to-site PSK config (as in strongSwan's swanctl examples).
PSK_CONF = f"""\
# moon's swanctl.conf
connections {{
    gw-gw {{
        version = 2
        local_addrs = 192.168.0.1
        remote_addrs = 192.168.0.2
        proposals = aes256gcm16-prfsha384-ecp384, aes128-sha256-modp2048
        encap = yes
        local {{
            auth = psk
            id = moon.strongswan.org
        }}
        remote {{
            auth = psk
            id = sun.strongswan.org
        }}
        children {{
            net-net {{
                local_ts = 10.1.0.0/16
                remote_ts = 10.2.0.0/16
                esp_proposals = aes128gcm16-ecp256
                start_action = start
            }}
        }}
    }}
}}

secrets {{
    ike-1 {{
        id-moon = moon.strongswan.org
        id-sun = sun.strongswan.org
        secret = 0s{PSK_B64}
    }}
}}

tunsec {{
    tun = tunsec0
}}
"""

# Where with_line() inserts a line: after the first line containing the anchor.
ANCHORS = {
    "conn": "        encap = yes",
    "local": "            id = moon.strongswan.org",
    "remote": "            id = sun.strongswan.org",
    "child": "                start_action = start",
    "secret": "        id-sun = sun.strongswan.org",
}


def with_line(where: str, line: str, text: str = PSK_CONF) -> str:
    anchor = ANCHORS[where]
    indent = " " * (len(anchor) - len(anchor.lstrip()))
    assert anchor in text
    return text.replace(anchor, f"{anchor}\n{indent}{line}", 1)


def issues_of(text: str, path: str = "swanctl.conf") -> list[ConfigIssue]:
    return config_data.issues_of(text, path)


def only_issue(text: str, path: str = "swanctl.conf") -> ConfigIssue:
    return config_data.only_issue(text, path)


MOON, SUN, CAROL = (Identity.parse(n) for n in ("moon.strongswan.org", "sun.strongswan.org", "carol@strongswan.org"))


WHEN = EPOCH + datetime.timedelta(days=30)


@dataclass
class Pki:
    ca: Issued
    sub_ca: Issued  # an intermediate under ca
    moon: Issued  # RSA, issued by ca
    sun: Issued  # ECDSA, issued by sub_ca
    other_ca: Issued


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def key_bytes(
    key: PrivateKey,
    encoding: serialization.Encoding = serialization.Encoding.PEM,
    fmt: serialization.PrivateFormat = serialization.PrivateFormat.TraditionalOpenSSL,
    passphrase: bytes | None = None,
) -> bytes:
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    return key.private_bytes(encoding, fmt, enc)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


SUN_DN = '            id = "C=CH, O=tunsec test, CN=sun.strongswan.org"'
CERT_CONF = """\
connections {
    host-host {
        local_addrs = 192.168.0.1
        remote_addrs = 192.168.0.2
        local {
            auth = pubkey
            certs = moonCert.pem
            id = moon.strongswan.org
        }
        remote {
            auth = pubkey
            id = "C=CH, O=tunsec test, CN=sun.strongswan.org"
        }
        children {
            host-host {
                start_action = trap
            }
        }
    }
}
"""

SUN_CONF = """\
connections {
    host-host {
        local_addrs = 192.168.0.2
        remote_addrs = 192.168.0.1
        local {
            auth = ecdsa
            certs = sunCert.der
        }
        remote {
            auth = pubkey
            id = moon.strongswan.org
        }
        children {
            host-host {
            }
        }
    }
}
"""

def moon_dir(tmp: Path, pki: Pki, conf: str = CERT_CONF) -> Path:
    """moon's /etc/swanctl: RSA cert (PEM) and key (PKCS#1 PEM in private/), root and sub CA (DER/PEM)."""
    write(tmp / "x509" / "moonCert.pem", pem(pki.moon.cert))
    write(tmp / "x509ca" / "caCert.der", der(pki.ca.cert))
    write(tmp / "x509ca" / "subCaCert.pem", pem(pki.sub_ca.cert))
    write(tmp / "private" / "moonKey.pem", key_bytes(pki.moon.key))
    return write(tmp / "swanctl.conf", conf.encode())


def sun_dir(tmp: Path, pki: Pki, conf: str = SUN_CONF) -> Path:
    """sun's: ECDSA cert (DER) and key (SEC1 DER in ecdsa/), sub CA as intermediate, root CA."""
    write(tmp / "x509" / "sunCert.der", der(pki.sun.cert))
    write(tmp / "x509ca" / "caCert.pem", pem(pki.ca.cert))
    write(tmp / "x509ca" / "subCaCert.pem", pem(pki.sub_ca.cert))
    write(tmp / "ecdsa" / "sunKey.der", key_bytes(pki.sun.key, serialization.Encoding.DER))
    return write(tmp / "swanctl.conf", conf.encode())


def spki(key: object) -> bytes:
    assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | x509.Certificate)
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture(scope="module")
def pki() -> Pki:
    """The PKI the certificate tests lay out (once per module); a module that uses it imports it."""
    ca = make_ca("strongSwan Root CA", "ecdsa")
    sub_ca = make_ca("strongSwan Sub CA", "ecdsa", issuer=ca)
    moon = make_cert(ca, "moon.strongswan.org", ["moon.strongswan.org", "192.168.0.1"], kind="rsa")
    sun = make_cert(sub_ca, "sun.strongswan.org", ["sun.strongswan.org"], kind="ecdsa")
    return Pki(ca, sub_ca, moon, sun, make_ca("Other CA", "ecdsa"))
