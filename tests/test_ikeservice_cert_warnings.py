"""A certificate whose subject cryptography reads with a warning (a country that is not 2
characters, a common name empty or longer than 64) puts nothing on stderr (ike/peer_warnings.py).

cryptography reads such a subject all the same (a CA may have signed it), but warns, and the
warnings module would write that to stderr, past logging: output at the rate and in the variety a
peer chooses (with ``-W error``, an exception out of the exchange).  Here the warnings module is
as in the daemon (pytest records warnings instead of printing them), stderr is read with capfd,
and IKE_AUTH ends as it would without the warning: such a certificate of the CA is accepted, one
of another CA refused.  A real IkeService as the gateway (test_ikeservice_cert_subject.CertGateway),
and tunsec's engine as the client of a gateway with such a certificate."""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Iterator
from typing import TextIO

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from test_ikeservice_cert_subject import (
    CN,
    POOL,
    PRINTABLE,
    UTF8,
    CertGateway,
    Client,
    _atv,
    _name,
    client_config,
    gateway_config,
    with_subject,
)
from test_ikeservice_peers import GW, run, site_ip

from tunsec.ike import peer_warnings
from tunsec.ike._der import encode_tlv, read_all, read_tlv
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import AuthFailed, ChildSaUp, IkeSaUp
from tunsec.ike.identity import Identity
from tunsec.ike.testing import Issued, Network, make_ca, make_cert
from tunsec.loglimit import LogLimiter
from tunsec.policy.pools import AddressPools

C = "2.5.4.6"
WARNED = {   # subjects cryptography reads, with a UserWarning, and the peer they name
    "a country of 3 characters": (_name(_atv(C, PRINTABLE, b"CHE"), _atv(CN, UTF8, b"moon")), "C=CHE, CN=moon"),
    "an empty common name": (_name(_atv(C, PRINTABLE, b"CH"), _atv(CN, UTF8, b"")), "C=CH, CN="),
    "a common name of 65 characters": (_name(_atv(CN, UTF8, b"m" * 65)), "CN=" + "m" * 65),
}


def with_serial(ca: Issued, holder: Issued, serial: int) -> Issued:
    """``holder``'s certificate with serial number ``serial`` (negative: cryptography warns as it
    loads it, RFC 5280 forbids it), signed by ``ca``; loaded with that warning kept from stderr."""
    tag, body, _ = read_tlv(holder.cert.public_bytes(Encoding.DER))
    (_, tbs), (alg_tag, alg), _sig = read_all(body)
    parts = [encode_tlv(t, v) for t, v in read_all(tbs)]
    parts[1] = encode_tlv(0x02, serial.to_bytes(serial.bit_length() // 8 + 1, "big", signed=True))
    new_tbs = encode_tlv(0x30, b"".join(parts))
    assert isinstance(ca.key, ec.EllipticCurvePrivateKey)
    sig = ca.key.sign(new_tbs, ec.ECDSA(hashes.SHA256()))
    der = encode_tlv(tag, new_tbs + encode_tlv(alg_tag, alg) + encode_tlv(0x03, b"\x00" + sig))
    with warnings.catch_warnings(record=True):
        return Issued(x509.load_der_x509_certificate(der), holder.key)


@pytest.fixture(params=["default", "error"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The warnings filter of a daemon started without -W (or with -W error); the warnings log
    line's limit fresh."""
    monkeypatch.setattr(peer_warnings, "_log_limit", LogLimiter())
    return str(request.param)


@contextlib.contextmanager
def as_in_the_daemon(mode: str) -> Iterator[None]:
    """The warnings module as the daemon has it, printing to stderr (pytest's, set up around the
    test's call, records them instead)."""
    with warnings.catch_warnings():
        warnings.resetwarnings()
        warnings.simplefilter(mode)   # type: ignore[call-overload]
        for quiet in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", quiet)   # Python's defaults
        warnings.showwarning = to_stderr
        yield


def to_stderr(message: Warning | str, category: type[Warning], filename: str, lineno: int,
              file: TextIO | None = None, line: str | None = None) -> None:
    """What the warnings module does with a warning by default (its recording by pytest undone)."""
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def warned_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "a library warned" in r.getMessage()]


@pytest.mark.parametrize("subject", list(WARNED), ids=list(WARNED))
def test_a_client_certificate_cryptography_warns_about_is_accepted_without_stderr(
        subject: str, mode: str, capfd: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tunsec")
    ca = make_ca(kind="ecdsa")
    der, named = WARNED[subject]
    moon = with_subject(ca, make_cert(ca, "moon", ["moon.example"]), der)
    capfd.readouterr()

    async def body() -> None:
        gw = CertGateway(0, ca=ca, clients=(Client(moon, Identity.parse("moon.example")),))
        await gw.start()
        gw.connect(0)
        await gw.settle()
        assert [e for e in gw.site_events[0] if isinstance(e, IkeSaUp)]
        (up,) = gw.service.ike_up.values()
        assert up["remote_id"] == named
        assert len(gw.service.children) == 1 and gw.service.event_errors == 0
    with as_in_the_daemon(mode):
        run(body())
    assert capfd.readouterr().err == ""
    lines = warned_lines(caplog)
    assert lines and all("UserWarning: Attribute's length must be" in line for line in lines)
    assert not [r for r in caplog.records if r.exc_info or "internal error" in r.getMessage()]


def test_a_client_certificate_of_another_ca_cryptography_warns_about_is_refused_without_stderr(
        mode: str, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    """Its subject is read to name it in the refusal, before (without) its chain verifying."""
    caplog.set_level(logging.INFO, logger="tunsec")
    ca, other = make_ca(kind="ecdsa"), make_ca("someone else's CA", kind="ecdsa")
    der, named = WARNED["a common name of 65 characters"]
    mallory = with_subject(other, make_cert(other, "moon", ["moon.example"]), der)
    capfd.readouterr()

    async def body() -> None:
        gw = CertGateway(0, ca=ca, clients=(Client(mallory, Identity.parse("moon.example")),))
        await gw.start()
        gw.connect(0)
        await gw.settle()
        (failed,) = [e for e in gw.site_events[0] if isinstance(e, AuthFailed)]
        assert failed.by_peer and gw.service.ike_up == {} and gw.service.event_errors == 0
    with as_in_the_daemon(mode):
        run(body())
    assert capfd.readouterr().err == ""
    (line,) = [r.getMessage() for r in caplog.records if "AUTHENTICATION_FAILED" in r.getMessage()]
    assert f"'certificate of {named.replace(', ', ',')} not trusted: " in line
    assert not [r for r in caplog.records if r.exc_info or "internal error" in r.getMessage()]


def test_a_client_certificate_with_a_negative_serial_is_refused_without_stderr(
        mode: str, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    """cryptography warns as it loads such a certificate, before anything of it is checked: anyone
    can send one."""
    caplog.set_level(logging.INFO, logger="tunsec")
    ca = make_ca(kind="ecdsa")
    moon = with_serial(ca, make_cert(ca, "moon", ["moon.example"]), -255)
    capfd.readouterr()

    async def body() -> None:
        gw = CertGateway(0, ca=ca, clients=(Client(moon, Identity.parse("moon.example")),))
        await gw.start()
        gw.connect(0)
        await gw.settle()
        (failed,) = [e for e in gw.site_events[0] if isinstance(e, AuthFailed)]
        assert failed.by_peer and gw.service.ike_up == {} and gw.service.event_errors == 0
    with as_in_the_daemon(mode):
        run(body())
    assert capfd.readouterr().err == ""
    (line,) = [r.getMessage() for r in caplog.records if "AUTHENTICATION_FAILED" in r.getMessage()]
    assert " not trusted: validation failed: certificate serial number cannot be negative" in line
    (warned,) = warned_lines(caplog)
    assert warned.startswith("reading a peer's certificates: a library warned: CryptographyDeprecationWarning: "
                             "Parsed a serial number which wasn't positive")


def test_a_gateway_certificate_cryptography_warns_about_is_accepted_by_the_client_without_stderr(
        mode: str, capfd: pytest.CaptureFixture[str]) -> None:
    """tunsec as the client (the engine): the gateway's certificate is read as a client's is."""
    ca = make_ca(kind="ecdsa")
    der, _named = WARNED["a common name of 65 characters"]
    sun = with_subject(ca, make_cert(ca, "sun", ["gw.example"]), der)
    moon = Client(make_cert(ca, "moon", ["moon.example"]), Identity.parse("moon.example"))
    capfd.readouterr()
    net = Network()
    net.add(GW, IkeEndpoint([gateway_config(ca, sun)], address_pool=AddressPools([POOL])))
    client = net.add(site_ip(0), IkeEndpoint([client_config(0, moon, ca)]))
    with as_in_the_daemon(mode):
        client.initiate("site0", "net", net.now)
        net.run()
    events = net.take(site_ip(0))
    assert [e for e in events if isinstance(e, IkeSaUp)] and [e for e in events if isinstance(e, ChildSaUp)]
    assert not [e for e in events if isinstance(e, AuthFailed)]
    assert capfd.readouterr().err == ""
