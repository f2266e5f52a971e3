"""``tunsec reload`` and certificate peers (review revreload F3): a CA taken out of the trust anchors
(x509ca/, a connection's cacerts) logs out the peers whose chain verified to it, as a removed EAP user
or PSK entry is (services/ike/revoked.removed_cas); a CA is known by its subject and public key, so
one renewed with both logs no one out, and neither does one added.

The gateway of test_reload_ca_removed_logout (a real IkeService fed from the file through the
daemon's reload command, the worker's logic in-process, certificate clients as engines)."""

from __future__ import annotations

from pathlib import Path

from test_ikeservice_peers import GW, run, site_ip
from test_reload_ca_removed_logout import CA_B, CONF, CertGateway, pem, up, write_credentials
from test_reload_ike import down_events

from tunsec.ike.events import DownReason
from tunsec.ike.testing import make_ca

GONE = "certificate peers whose CA left the trust anchors, their IKE SAs deleted: "


async def started(tmp_path: Path) -> CertGateway:
    write_credentials(tmp_path)
    gw = CertGateway(2)
    gw.path = tmp_path / "swanctl.conf"
    gw.path.write_text(CONF)
    await gw.start()
    return gw


async def both_up(tmp_path: Path) -> CertGateway:
    gw = await started(tmp_path)
    gw.connect(0)
    gw.connect(1)
    await gw.settle()
    assert up(gw, 0) and up(gw, 1) and gw.children_of(0) and gw.children_of(1)
    return gw


def test_a_ca_renewed_with_its_key_and_subject_keeps_its_peers_while_a_removed_one_logs_its_own_out(
        tmp_path: Path) -> None:
    async def body() -> None:
        gw = await both_up(tmp_path)
        site1 = gw.site_sa(1)
        renewed = make_ca("partner B CA", key=CA_B.key)   # a new certificate: serial, signature
        assert pem(renewed) != pem(CA_B)
        (tmp_path / "x509ca" / "b.pem").write_bytes(pem(renewed))
        (tmp_path / "x509ca" / "a.pem").unlink()   # partner A's CA is no longer trusted
        answer = await gw.reload(CONF)
        assert answer["ok"], answer
        assert gw.service.connections["rw"].ike.remote.cas == (renewed.cert,)
        assert GONE + "C=CH, O=tunsec test, CN=site0.example (rw)" in answer["message"].splitlines(), answer
        assert [e.reason for e in down_events(gw, 0)] == [DownReason.DELETED_BY_PEER]   # site 0 was told
        assert gw.children_of(0) == [] and not up(gw, 0)
        # site 1's chain verifies to the renewed CA as it did to the old one: untouched
        assert down_events(gw, 1) == [] and gw.site_sa(1) is site1 and gw.children_of(1)

    run(body())


def test_a_ca_rekeyed_under_its_subject_logs_its_peers_out_and_an_added_ca_logs_no_one_out(tmp_path: Path) -> None:
    async def body() -> None:
        gw = await both_up(tmp_path)
        site0 = gw.site_sa(0)
        # the same name, another key: site 1's certificate is not signed by it
        (tmp_path / "x509ca" / "b.pem").write_bytes(pem(make_ca("partner B CA")))
        (tmp_path / "x509ca" / "c.pem").write_bytes(pem(make_ca("partner C CA")))
        answer = await gw.reload(CONF)
        assert answer["ok"], answer
        assert len(gw.service.connections["rw"].ike.remote.cas) == 3
        assert GONE + "C=CH, O=tunsec test, CN=site1.example (rw)" in answer["message"].splitlines(), answer
        assert gw.children_of(1) == [] and not up(gw, 1)
        assert down_events(gw, 0) == [] and gw.site_sa(0) is site0 and gw.children_of(0)

    run(body())


def with_s1() -> str:
    """CONF and s1: the gateway initiates to site 1 (start_action = start), which proves itself with
    CA B's certificate."""
    s1 = ("  s1 { local_addrs = " + GW + "\n remote_addrs = " + site_ip(1) + "\n"
          "  local { auth = pubkey\n id = gw.example\n certs = gw.pem }\n"
          "  remote { auth = pubkey\n id = site1.example }\n"
          "  children { net { local_ts = 10.1.0.0/16\n remote_ts = 10.2.2.0/24\n"
          "  esp_proposals = aes128gcm16\n start_action = start } } }\n")
    return CONF.replace("connections {\n", "connections {\n" + s1)


def test_a_peer_we_initiated_to_is_logged_out_when_its_ca_goes(tmp_path: Path) -> None:
    async def body() -> None:
        gw = await started(tmp_path)
        answer = await gw.reload(with_s1())   # s1 added: it starts (the sockets are the test's by now)
        assert answer == {"ok": True, "message": "IKE connections added: s1"}, answer
        (sa,) = [sa for sa in gw.service.endpoint.sas if sa.name == "s1"]
        assert sa.is_initiator and up(gw, 1) and gw.children_of(1)

        (tmp_path / "x509ca" / "b.pem").unlink()
        answer = await gw.reload(with_s1())
        assert answer["ok"], answer
        assert GONE + "C=CH, O=tunsec test, CN=site1.example (s1)" in answer["message"].splitlines(), answer
        assert gw.children_of(1) == [] and not up(gw, 1)

    run(body())
