"""``tunsec reload`` and two copies of one CA (review revcert3 F1, its remark on the reload check):
two certificates of one CA's name and key are two trust anchors, but an IKE SA remembers the CA it
verified to by name and key (certs.ca_fingerprint).  When the copy that certified a peer leaves and
another copy stays, the peer stays only if the remaining copy is within its validity: an expired
copy verifies no one, so the peer is logged out as if the CA had left (services/ike/revoked.py
still_trusted).  A remaining copy that is valid keeps the peer (a renewal: test_reload_ike_revoked_ca.py).

The gateway of test_reload_ca_removed_logout (a real IkeService fed from the file through the
daemon's reload command, the worker's logic in-process, certificate clients as engines)."""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from test_ikeservice_peers import run
from test_reload_ca_removed_logout import CA_B, CONF, pem, up
from test_reload_ike import down_events
from test_reload_ike_revoked_ca import GONE, both_up

from tunsec.ike.events import DownReason
from tunsec.ike.testing import EPOCH, Issued


def _file(tmp_path: Path, name: str, until: datetime.datetime) -> None:
    """Another copy of site 1's CA (its name and key) in x509ca/, valid until ``until``."""
    ca = CA_B.cert
    copy = (x509.CertificateBuilder().subject_name(ca.subject).issuer_name(ca.subject).public_key(ca.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(EPOCH - datetime.timedelta(days=400))
            .not_valid_after(until).add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(CA_B.key, hashes.SHA256()))
    (tmp_path / "x509ca" / name).write_bytes(pem(Issued(copy, CA_B.key)))


def test_the_certifying_copy_gone_an_expired_copy_left_logs_its_peers_out(tmp_path: Path) -> None:
    async def body() -> None:
        gw = await both_up(tmp_path)
        site0 = gw.site_sa(0)
        _file(tmp_path, "b-expired.pem", EPOCH)   # expired before the test runs
        answer = await gw.reload(CONF)   # a copy added: no one out
        assert answer["ok"] and GONE not in answer["message"], answer
        (tmp_path / "x509ca" / "b.pem").unlink()   # the copy site 1's chain verified to
        answer = await gw.reload(CONF)
        assert answer["ok"], answer
        assert GONE + "C=CH, O=tunsec test, CN=site1.example (rw)" in answer["message"].splitlines(), answer
        assert [e.reason for e in down_events(gw, 1)] == [DownReason.DELETED_BY_PEER] and not up(gw, 1)
        assert down_events(gw, 0) == [] and gw.site_sa(0) is site0   # partner A's peer: untouched

    run(body())


def test_the_certifying_copy_gone_a_valid_copy_left_keeps_them(tmp_path: Path) -> None:
    async def body() -> None:
        gw = await both_up(tmp_path)
        site1 = gw.site_sa(1)
        _file(tmp_path, "b-renewed.pem", EPOCH + datetime.timedelta(days=3650))
        (tmp_path / "x509ca" / "b.pem").unlink()
        answer = await gw.reload(CONF)
        assert answer["ok"] and GONE not in answer["message"], answer
        assert down_events(gw, 1) == [] and gw.site_sa(1) is site1

    run(body())
