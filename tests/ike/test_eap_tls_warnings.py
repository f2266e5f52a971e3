"""An EAP-TLS client certificate cryptography reads with a warning (a country that is not 2
characters, a common name empty or longer than 64) puts nothing on stderr and is judged as any
other (ike/peer_warnings.py; the IKE certificates' side: tests/test_ikeservice_cert_warnings.py).

The authenticator against test_eap_tls's in-memory OpenSSL client, the warnings module as in the
daemon (printing to stderr, or -W error), stderr read with capfd."""

from __future__ import annotations

import pytest
from test_eap_tls import NOW, Peer, converse
from test_ikeservice_cert_subject import with_subject
from test_ikeservice_cert_warnings import WARNED, as_in_the_daemon, with_serial

from tunsec.ike import peer_warnings
from tunsec.ike.eap.tls import EapTlsAuthenticator, TlsServerCredentials
from tunsec.ike.testing import Issued, make_ca, make_cert
from tunsec.loglimit import LogLimiter


def authenticator(ca: Issued) -> EapTlsAuthenticator:
    gw = make_cert(ca, "gw", san=["gw.example"])
    return EapTlsAuthenticator(TlsServerCredentials(gw.cert, gw.key, cas=(ca.cert,)), None, lambda: NOW)


@pytest.fixture(autouse=True)
def fresh_log_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peer_warnings, "_log_limit", LogLimiter())


@pytest.mark.parametrize("mode", ["default", "error"])
@pytest.mark.parametrize("subject", list(WARNED), ids=list(WARNED))
def test_a_client_certificate_cryptography_warns_about_is_accepted_without_stderr(
        subject: str, mode: str, capfd: pytest.CaptureFixture[str]) -> None:
    ca = make_ca(kind="ecdsa")
    der, named = WARNED[subject]
    alice = with_subject(ca, make_cert(ca, "alice", san=["alice@example.org"]), der)
    srv = authenticator(ca)
    capfd.readouterr()
    with as_in_the_daemon(mode):
        result = converse(srv, Peer(alice, b"alice@example.org"))
    assert result.ok, result.reason
    assert str(result.peer) == named
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("mode", ["default", "error"])
def test_a_client_certificate_of_another_ca_cryptography_warns_about_is_refused_without_stderr(
        mode: str, capfd: pytest.CaptureFixture[str]) -> None:
    other = make_ca("someone else's CA", kind="ecdsa")
    der, named = WARNED["a common name of 65 characters"]
    mallory = with_subject(other, make_cert(other, "alice", san=["alice@example.org"]), der)
    srv = authenticator(make_ca(kind="ecdsa"))
    capfd.readouterr()
    with as_in_the_daemon(mode):
        result = converse(srv, Peer(mallory, b"alice@example.org"))
    assert not result.ok
    assert result.reason.startswith(f"client certificate refused: certificate of {named} not trusted: ")
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("mode", ["default", "error"])
def test_a_client_certificate_with_a_negative_serial_is_refused_without_stderr(
        mode: str, capfd: pytest.CaptureFixture[str]) -> None:
    """cryptography warns as it loads such a certificate (OpenSSL took it in the handshake)."""
    ca = make_ca(kind="ecdsa")
    alice = with_serial(ca, make_cert(ca, "alice", san=["alice@example.org"]), -255)
    srv = authenticator(ca)
    capfd.readouterr()
    with as_in_the_daemon(mode):
        result = converse(srv, Peer(alice, b"alice@example.org"))
    assert not result.ok
    assert "not trusted: validation failed: certificate serial number cannot be negative" in result.reason
    assert capfd.readouterr().err == ""
