"""swanctl.conf certificates, private keys and authorities laid out as swanctl expects, and EAP-TLS on
the gateway (tunsec.conf.connections, .secrets, .authorities)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import connections_data
import pytest
from connections_data import (
    CERT_CONF,
    PSK_CONF,
    SUN_DN,
    Pki,
    der,
    key_bytes,
    line_of,
    moon_dir,
    pem,
    spki,
    sun_dir,
    write,
)
from cryptography.hazmat.primitives import serialization

from tunsec.conf.config import load_config
from tunsec.conf.errors import ConfigError, ConfigIssue
from tunsec.ike.identity import Identity
from tunsec.ike.secret import Secret

# --------------------------------------------------------------------------
# Certificates: a CA, RSA and ECDSA end entities laid out as swanctl expects
# --------------------------------------------------------------------------

pki = connections_data.pki   # the module-scoped PKI fixture (a conftest here would shadow tests/conftest)


def test_certificate_config(tmp_path: Path, pki: Pki) -> None:
    config = load_config(moon_dir(tmp_path, pki))
    (conn,) = config.connections
    local, remote = conn.ike.local, conn.ike.remote
    assert local.method == "pubkey" and local.id == Identity.parse("moon.strongswan.org")
    assert local.cert == pki.moon.cert and not local.rsa_pss
    assert local.private_key is not None and spki(local.private_key) == spki(pki.moon.key)
    assert local.intermediates == ()  # moon's issuer is the (self-signed) root
    assert remote.method == "pubkey" and remote.id == Identity.from_name(pki.sun.cert.subject)
    assert set(remote.cas) == {pki.ca.cert, pki.sub_ca.cert}  # everything in x509ca/
    assert conn.ike.psk is None and conn.children[0].start_action == "trap"
    assert "PRIVATE" not in repr(config) and "private_key" not in repr(local)


def test_ecdsa_der_key_default_id_and_intermediate(tmp_path: Path, pki: Pki) -> None:
    (conn,) = load_config(sun_dir(tmp_path, pki)).connections
    local = conn.ike.local
    assert local.cert == pki.sun.cert
    assert local.id == Identity.from_name(pki.sun.cert.subject)  # strongSwan's default: the subject DN
    assert local.private_key is not None and spki(local.private_key) == spki(pki.sun.key)
    assert local.intermediates == (pki.sub_ca.cert,)  # sent along so moon can build the chain


@pytest.mark.parametrize(
    ("folder", "encoding", "fmt"),
    [
        ("private", serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8),
        ("private", serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL),
        ("rsa", serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL),
        ("rsa", serialization.Encoding.DER, serialization.PrivateFormat.PKCS8),
        ("pkcs8", serialization.Encoding.DER, serialization.PrivateFormat.PKCS8),
    ],
)
def test_private_keys_are_found_in_every_folder(
    tmp_path: Path, pki: Pki, folder: str, encoding: serialization.Encoding, fmt: serialization.PrivateFormat
) -> None:
    path = moon_dir(tmp_path, pki)
    (tmp_path / "private" / "moonKey.pem").unlink()
    write(tmp_path / folder / "key", key_bytes(pki.moon.key, encoding, fmt))
    write(tmp_path / "private" / "unrelated.pem", key_bytes(pki.sun.key))  # not the certificate's key
    local = load_config(path).connections[0].ike.local
    assert local.private_key is not None and spki(local.private_key) == spki(pki.moon.key)


def test_encrypted_key_with_passphrase_from_secrets(tmp_path: Path, pki: Pki) -> None:
    conf = (
        CERT_CONF
        + 'secrets {\n    private-moon {\n        file = moonKey.pem\n        secret = "pass word"\n    }\n}\n'
    )
    path = moon_dir(tmp_path, pki, conf)
    write(tmp_path / "private" / "moonKey.pem", key_bytes(pki.moon.key, fmt=serialization.PrivateFormat.PKCS8,
                                                          passphrase=b"pass word"))  # fmt: skip
    local = load_config(path).connections[0].ike.local
    assert local.private_key is not None and spki(local.private_key) == spki(pki.moon.key)

    path.write_text(conf.replace('"pass word"', "hunter2"))
    errors = load_errors(path)
    assert ConfigIssue(
        str(path), line_of(conf, "secret ="), "secrets.private-moon.secret",
        "private/moonKey.pem: cannot decrypt it (wrong passphrase?) or not a private key",
    ) in errors  # fmt: skip
    assert "hunter2" not in str(errors) and "pass word" not in str(errors)

    path.write_text(CERT_CONF)
    errors = load_errors(path)
    assert errors[0] == ConfigIssue(
        str(tmp_path / "private" / "moonKey.pem"), 0, "",
        "the key is encrypted: add a secrets.private-NAME section with file = moonKey.pem and secret = PASSPHRASE",
    )  # fmt: skip
    assert errors[1].key == "connections.host-host.local.certs"
    assert errors[1].message.startswith("no private key for x509/moonCert.pem (CN=moon.strongswan.org,")


def load_errors(path: Path) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.errors


def test_passphrase_for_a_missing_file(tmp_path: Path, pki: Pki) -> None:
    conf = CERT_CONF + "secrets {\n    rsa-x {\n        file = nothere.pem\n        secret = x\n    }\n}\n"
    errors = load_errors(moon_dir(tmp_path, pki, conf))
    assert [(e.line, e.key, e.message) for e in errors] == [
        (line_of(conf, "file = nothere"), "secrets.rsa-x.file", "no such file: rsa/nothere.pem")
    ]


def test_own_certificate_found_by_id_in_x509(tmp_path: Path, pki: Pki) -> None:
    conf = CERT_CONF.replace("            certs = moonCert.pem\n", "")
    write(tmp_path / "x509" / "other.pem", pem(pki.sun.cert))  # no key for it here
    local = load_config(moon_dir(tmp_path, pki, conf)).connections[0].ike.local
    assert local.cert == pki.moon.cert


def test_absolute_certificate_paths(tmp_path: Path, pki: Pki) -> None:
    elsewhere = write(tmp_path / "elsewhere" / "moon.crt", der(pki.moon.cert))
    ca = write(tmp_path / "elsewhere" / "ca.crt", pem(pki.ca.cert))
    conf = CERT_CONF.replace("certs = moonCert.pem", f"certs = {elsewhere}").replace(
        SUN_DN, f"{SUN_DN}\n            cacerts = {ca}"
    )
    conn = load_config(moon_dir(tmp_path / "etc", pki, conf)).connections[0]
    assert conn.ike.local.cert == pki.moon.cert
    assert conn.ike.remote.cas == (pki.ca.cert,)  # cacerts restricts the trust anchors


def test_authorities_add_trust_anchors(tmp_path: Path, pki: Pki) -> None:
    write(tmp_path / "x509ca" / "other.pem", pem(pki.other_ca.cert))
    abs_ca = write(tmp_path / "cas" / "ca.der", der(pki.ca.cert))
    conf = CERT_CONF + (
        f"authorities {{\n    other {{\n        cacert = other.pem\n    }}\n"
        f"    root {{\n        file = {abs_ca}\n    }}\n}}\n"
    )
    path = write(tmp_path / "swanctl.conf", conf.encode())
    write(tmp_path / "x509" / "moonCert.pem", pem(pki.moon.cert))
    write(tmp_path / "private" / "moonKey.pem", key_bytes(pki.moon.key))
    remote = load_config(path).connections[0].ike.remote
    assert set(remote.cas) == {pki.other_ca.cert, pki.ca.cert}


def test_mixed_authentication_pubkey_and_psk(tmp_path: Path, pki: Pki) -> None:
    conf = CERT_CONF.replace(f"auth = pubkey\n{SUN_DN}", "auth = psk\n            id = sun.strongswan.org") + (
        "secrets {\n    ike-sun {\n        id = sun.strongswan.org\n        secret = sunsecret\n    }\n}\n"
    )
    ike = load_config(moon_dir(tmp_path, pki, conf)).connections[0].ike
    assert (ike.local.method, ike.remote.method, ike.psk) == ("pubkey", "psk", Secret(b"sunsecret"))
    assert ike.remote.cas == ()


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d, c: c.replace("id = moon.strongswan.org", "id = venus.strongswan.org"),
         ("connections.host-host.local.id", "is not in the certificate x509/moonCert.pem (CN=moon.strongswan.org,"
          "O=tunsec test,C=CH) as subject or subjectAltName")),
        (lambda d, c: c.replace("auth = pubkey\n            certs", "auth = ecdsa\n            certs"),
         ("connections.host-host.local.auth", "auth wants an ecdsa key but the certificate has an rsa key")),
        (lambda d, c: c.replace("certs = moonCert.pem", "certs = nothere.pem"),
         ("connections.host-host.local.certs", "x509/nothere.pem: cannot read: No such file or directory")),
        (lambda d, c: c.replace("certs = moonCert.pem", "certs = moonCert.pem, other.pem"),
         ("connections.host-host.local.certs", "x509/other.pem: cannot read: No such file or directory")),
        (lambda d, c: c.replace(SUN_DN, f"{SUN_DN}\n            cacerts = ../x509/moonCert.pem"),
         ("connections.host-host.remote.cacerts", "x509ca/../x509/moonCert.pem: CN=moon.strongswan.org,"
          "O=tunsec test,C=CH is not a CA certificate")),
    ],
)  # fmt: skip
def test_certificate_errors(
    tmp_path: Path, pki: Pki, mutate: Callable[[Path, str], str], expected: tuple[str, str]
) -> None:
    conf = mutate(tmp_path, CERT_CONF)
    errors = load_errors(moon_dir(tmp_path, pki, conf))
    assert [(e.key, e.message) for e in errors] == [expected]
    assert errors[0].line == line_of(conf, expected[0].rsplit(".", 1)[1] + " =")


def test_certs_lists_candidates_and_the_one_with_the_local_id_is_used(tmp_path: Path, pki: Pki) -> None:
    write(tmp_path / "x509" / "sunCert.pem", pem(pki.sun.cert))   # listed first, but not moon's identity
    conf = CERT_CONF.replace("certs = moonCert.pem", "certs = sunCert.pem, moonCert.pem")
    local = load_config(moon_dir(tmp_path, pki, conf)).connections[0].ike.local
    assert local.cert == pki.moon.cert and local.id == Identity.parse("moon.strongswan.org")
    assert local.private_key is not None and spki(local.private_key) == spki(pki.moon.key)

    # without an id the first candidate is used and its subject is the identity, as in strongSwan
    no_id = CERT_CONF.replace("            id = moon.strongswan.org\n", "")
    local = load_config(moon_dir(tmp_path, pki, no_id.replace("certs = moonCert.pem", "certs = moonCert.pem, "
                                                             "sunCert.pem"))).connections[0].ike.local
    assert local.cert == pki.moon.cert and local.id == Identity.from_name(pki.moon.cert.subject)
    errors = load_errors(moon_dir(tmp_path, pki, no_id.replace("certs = moonCert.pem", "certs = sunCert.pem, "
                                                               "moonCert.pem")))
    assert [(e.key, e.message.split(" (")[0]) for e in errors] == [
        ("connections.host-host.local.certs", "no private key for x509/sunCert.pem")]

    # none of them has the identity: the error names every candidate
    venus = conf.replace("id = moon.strongswan.org", "id = venus.strongswan.org")
    (error,) = load_errors(moon_dir(tmp_path, pki, venus))
    assert error.key == "connections.host-host.local.id"
    assert error.message.startswith("is not in the certificates x509/sunCert.pem (")
    assert "x509/moonCert.pem (" in error.message


def test_files_that_are_not_credentials(tmp_path: Path, pki: Pki) -> None:
    path = moon_dir(tmp_path, pki)
    write(tmp_path / "x509ca" / "README", b"not a certificate")
    write(tmp_path / "x509ca" / "moon.pem", pem(pki.moon.cert))  # not a CA
    write(tmp_path / "private" / "junk.key", b"\x30\x03\x02\x01\x00")
    write(tmp_path / "ecdsa" / "rsa.pem", key_bytes(pki.moon.key))
    write(tmp_path / "private" / ".hidden", b"ignored, like an editor's backup")
    errors = [(Path(e.file).relative_to(tmp_path).as_posix(), e.line, e.message) for e in load_errors(path)]
    assert sorted(errors) == [
        ("ecdsa/rsa.pem", 0, "not an ECDSA key (rsa) in the ecdsa folder"),
        ("private/junk.key", 0, "not a PEM or DER private key"),
        ("x509ca/README", 0, "not a PEM or DER X.509 certificate"),
        ("x509ca/moon.pem", 0, "CN=moon.strongswan.org,O=tunsec test,C=CH is not a CA certificate "
         "(basicConstraints CA:TRUE)"),
    ]  # fmt: skip


def test_crls_are_refused_not_ignored(tmp_path: Path, pki: Pki) -> None:
    path = moon_dir(tmp_path, pki)
    write(tmp_path / "x509crl" / "ca.crl", b"whatever")
    assert load_errors(path) == [
        ConfigIssue(
            str(tmp_path / "x509crl"), 0, "",
            "CRLs are not supported (tunsec does no revocation checking): the folder must be empty",
        )
    ]  # fmt: skip


def test_pubkey_peer_needs_a_ca(tmp_path: Path, pki: Pki) -> None:
    path = moon_dir(tmp_path, pki)
    for ca in (tmp_path / "x509ca").iterdir():
        ca.unlink()
    (issue,) = load_errors(path)
    assert (issue.line, issue.key) == (line_of(CERT_CONF, "remote {") + 1, "connections.host-host.remote.auth")
    assert issue.message.startswith("auth = pubkey needs a CA certificate to verify the peer")


def test_psk_configs_never_read_the_credential_folders(tmp_path: Path) -> None:
    write(tmp_path / "x509ca" / "broken.pem", b"junk")
    write(tmp_path / "x509crl" / "ca.crl", b"junk")
    write(tmp_path / "private" / "broken.pem", b"junk")
    path = write(tmp_path / "swanctl.conf", PSK_CONF.encode())
    assert load_config(path).connections[0].ike.psk is not None


def test_authority_errors(tmp_path: Path, pki: Pki) -> None:
    write(tmp_path / "x509ca" / "moon.pem", pem(pki.moon.cert))
    write(tmp_path / "x509ca" / "ca.pem", pem(pki.ca.cert))
    text = PSK_CONF + (
        "authorities {\n"
        "    a {\n        cacert = moon.pem\n    }\n"
        "    b {\n        cacert = missing.pem\n    }\n"
        "    c {\n        crl_uris = http://crl.example/ca.crl\n        cacert = ca.pem\n    }\n"
        "    d {\n        handle = 0a0b\n    }\n"
        "}\n"
    )
    path = write(tmp_path / "swanctl.conf", text.encode())
    errors = [(e.line, e.key, e.message) for e in load_errors(path)]
    subject = "CN=moon.strongswan.org,O=tunsec test,C=CH"
    assert errors == [
        (line_of(text, "cacert = moon.pem"), "authorities.a.cacert",
         f"x509ca/moon.pem: {subject} is not a CA certificate"),
        (line_of(text, "missing.pem"), "authorities.b.cacert",
         "x509ca/missing.pem: cannot read: No such file or directory"),
        (line_of(text, "crl_uris"), "authorities.c.crl_uris", "revocation checking (CRL and OCSP) is not supported"),
        (line_of(text, "    d {"), "authorities.d.cacert", "required key is missing"),
        (line_of(text, "handle"), "authorities.d.handle",
         "CA certificates on tokens (PKCS#11) are not supported: use cacert = FILE"),
    ]  # fmt: skip


def test_credentials_are_next_to_the_main_file_even_from_includes(tmp_path: Path, pki: Pki) -> None:
    main = moon_dir(tmp_path, pki, "include conf.d/*.conf\n")
    write(tmp_path / "conf.d" / "moon.conf", CERT_CONF.encode())
    (conn,) = load_config(main).connections
    assert conn.ike.local.cert == pki.moon.cert
    assert conn.file == str(tmp_path / "conf.d" / "moon.conf")


# --------------------------------------------------------------------------
# EAP-TLS on the gateway (tests/interop/test_strongswan_eap_tls.py runs it with strongSwan)
# --------------------------------------------------------------------------

EAP_TLS_CONF = CERT_CONF.replace(
    '            auth = pubkey\n            id = "C=CH, O=tunsec test, CN=sun.strongswan.org"',
    "            auth = eap-tls\n            eap_id = %any\n            cacerts = caCert.der",
)


def test_eap_tls_gateway_config_reaches_the_engine(tmp_path: Path, pki: Pki) -> None:
    (conn,) = load_config(moon_dir(tmp_path, pki, EAP_TLS_CONF)).connections
    remote = conn.ike.remote
    assert (remote.method, remote.eap_id, remote.id) == ("eap-tls", "%any", Identity.any())
    assert remote.cas == (pki.ca.cert,)  # only the listed CA, not the sub CA also in x509ca/
    assert conn.ike.local.method == "pubkey" and conn.ike.local.cert == pki.moon.cert


def test_eap_tls_needs_a_ca_and_a_parsable_eap_id(tmp_path: Path, pki: Pki) -> None:
    path = moon_dir(tmp_path, pki, EAP_TLS_CONF.replace("            cacerts = caCert.der\n", ""))
    for ca in (tmp_path / "x509ca").iterdir():
        ca.unlink()
    (issue,) = load_errors(path)
    assert issue.key == "connections.host-host.remote.auth"
    assert issue.message.startswith("auth = eap-tls needs a CA certificate to verify the peer")
    path = moon_dir(tmp_path, pki, EAP_TLS_CONF.replace("eap_id = %any", 'eap_id = "CN=x, BOGUS=y"'))
    (issue,) = load_errors(path)
    assert issue.key == "connections.host-host.remote.eap_id"
    assert "invalid DER_ASN1_DN identity" in issue.message


def test_eap_tls_as_a_client_is_refused(tmp_path: Path, pki: Pki) -> None:
    text = CERT_CONF.replace("            auth = pubkey\n            certs = moonCert.pem",
                             "            auth = eap-tls\n            certs = moonCert.pem", 1)
    (issue,) = load_errors(moon_dir(tmp_path, pki, text))
    assert issue.key == "connections.host-host.local.auth"
    assert issue.message == "eap-tls authenticates clients (remote.auth); as a client tunsec has eap-mschapv2"
