"""IKEv2 interop: tunsec in namespace A, strongSwan's charon (kernel-libipsec,
``encap = yes``) in namespace B.

Both read the same swanctl.conf connection text (tests/ike_peers.py).
tunsec is the initiator (start_action = start) or the responder (charon
initiates with ``swanctl --initiate``); authentication by PSK, RSA and ECDSA
certificates made with strongSwan's ``pki``; three proposal sets (GCM,
CBC + HMAC, PFS in ESP). Each tunnel carries pings both ways and an iperf3 TCP
run, and both sides must agree on SPIs and algorithms. Failures (wrong PSK, no
common proposal) are checked on both sides: tunsec's log and status, charon's
log and ``swanctl --list-sas``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ike_peers import (
    CHILD,
    CONN,
    Charon,
    Conn,
    Pki,
    TunsecIke,
    iperf3_tcp,
    ping_both_ways,
    requires_strongswan,
    tunsec_counters,
)

from tunsec.bench.netns import TwoHosts, wait_until

pytestmark = [
    pytest.mark.interop,
    requires_strongswan,
]


@dataclass(frozen=True)
class ProposalSet:
    ike: str
    esp: str
    charon_ike: dict[str, str]        # what swanctl --list-sas --raw shows for the IKE SA
    charon_esp: dict[str, str]        # ... and for the Child SA negotiated in IKE_AUTH


GCM = ProposalSet(
    "aes256gcm16-prfsha384-ecp384", "aes128gcm16",
    {"encr-alg": "AES_GCM_16", "encr-keysize": "256", "prf-alg": "PRF_HMAC_SHA2_384", "dh-group": "ECP_384"},
    {"encr-alg": "AES_GCM_16", "encr-keysize": "128"},
)
CBC = ProposalSet(
    "aes128-sha256-modp2048", "aes256gcm16",
    {"encr-alg": "AES_CBC", "encr-keysize": "128", "integ-alg": "HMAC_SHA2_256_128",
     "prf-alg": "PRF_HMAC_SHA2_256", "dh-group": "MODP_2048"},
    {"encr-alg": "AES_GCM_16", "encr-keysize": "256"},
)
PFS = ProposalSet(
    "aes128gcm16-prfsha256-curve25519", "aes128gcm16-ecp256",
    {"encr-alg": "AES_GCM_16", "encr-keysize": "128", "prf-alg": "PRF_HMAC_SHA2_256", "dh-group": "CURVE_25519"},
    # IKE_AUTH's Child SA uses the IKE SA's keys (no KE payload there, RFC 7296 §1.2);
    # the group is used by every CREATE_CHILD_SA, checked in the PFS test
    {"encr-alg": "AES_GCM_16", "encr-keysize": "128"},
)
SETS = {"gcm": GCM, "cbc": CBC, "pfs": PFS}


@pytest.fixture
def topo() -> Iterator[TwoHosts]:
    with TwoHosts(ipv6=False) as t:
        yield t


@pytest.fixture(scope="module")
def pkis(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Pki]:
    """A test CA per key type (made once per module by pki)."""
    out = {}
    for kind in ("rsa", "ecdsa"):
        pki = Pki(Path(tmp_path_factory.mktemp(f"pki-{kind}")), kind)
        pki.make_ca()
        out[kind] = pki
    return out


def peers(topo: TwoHosts, tunsec_initiates: bool, pki: Pki | None = None,
          **conn: Any) -> tuple[TunsecIke, Charon]:
    """tunsec in A and charon in B with the same connection; both running.

    When tunsec initiates it does so as it starts; otherwise call :func:`charon_initiates`.
    """
    auth = "pubkey" if pki else "psk"
    tunsec = TunsecIke(topo, Conn(topo.a, topo.b, auth=auth, start_action="start" if tunsec_initiates else "none",
                                  **conn), pki=pki)
    charon = Charon(topo, Conn(topo.b, topo.a, auth=auth, **conn), pki=pki)
    charon.start()
    tunsec.start()
    return tunsec, charon


def charon_initiates(charon: Charon, tunsec: TunsecIke) -> None:
    r = charon.initiate()
    assert r.returncode == 0, f"swanctl --initiate: {r.stdout[-2000:]}{r.stderr}\ntunsec:\n{tunsec.log_tail()}"


def established(tunsec: TunsecIke, charon: Charon) -> tuple[dict[str, Any], dict[str, Any]]:
    """The IKE SA as both see it, once each has it up with a child; checks they agree."""
    sa = tunsec.wait_established()
    assert wait_until(lambda: charon.sas().get(CONN, {}).get("state") == "ESTABLISHED", 10), charon.list_sas()
    theirs = charon.sas()[CONN]
    assert (sa["spi_i"], sa["spi_r"]) == (theirs["initiator-spi"], theirs["responder-spi"])
    # (remote_ike_id: what it sent; with a certificate remote_id is the certificate's subject DN)
    assert (sa["local_id"], sa["remote_ike_id"]) == (theirs["remote-id"], theirs["local-id"])
    assert theirs["remote-host"] == tunsec.host.outer4 and theirs["remote-port"] == "4500"
    assert theirs["nat-any"] == "yes"        # tunsec's forced UDP encapsulation, as encap = yes does
    (child,) = sa["children"]
    (their_child,) = theirs["child-sas"].values()
    assert their_child["state"] == "INSTALLED" and their_child["encap"] == "yes"
    assert (child["spi_in"], child["spi_out"]) == (their_child["spi-out"], their_child["spi-in"])
    assert (child["local_ts"], child["remote_ts"]) == (their_child["remote-ts"], their_child["local-ts"])
    return sa, theirs


def check_traffic(topo: TwoHosts, tunsec: TunsecIke, charon: Charon) -> None:
    """Pings both ways and an iperf3 run each way; tunsec's and charon's counters agree."""
    ping_both_ways(topo)
    sent = iperf3_tcp(topo, seconds=2)
    received = iperf3_tcp(topo, seconds=2, reverse=True)
    assert sent > 1_000_000 and received > 1_000_000
    child = tunsec.wait_established()["children"][0]
    ours = tunsec_counters(tunsec, child)
    assert ours["out"]["bytes"] >= sent and ours["in"]["bytes"] >= received
    assert ours["in"]["auth_drops"] == ours["in"]["replay_drops"] == ours["in"]["policy_drops"] == 0
    (theirs,) = charon.sas()[CONN]["child-sas"].values()
    # charon counts inner bytes too; some of ours may still be in flight to it when it is asked
    assert int(theirs["packets-in"]) > 1000 and int(theirs["bytes-in"]) >= sent
    assert int(theirs["bytes-out"]) >= received


# --------------------------------------------------------------------------
# Tunnels that work
# --------------------------------------------------------------------------


@pytest.mark.parametrize("tunsec_initiates", [True, False], ids=["tunsec-initiator", "tunsec-responder"])
@pytest.mark.parametrize("name", ["gcm", "cbc", "pfs"])
def test_psk_proposal_sets(topo: TwoHosts, name: str, tunsec_initiates: bool) -> None:
    ps = SETS[name]
    tunsec, charon = peers(topo, tunsec_initiates, proposals=ps.ike, esp_proposals=ps.esp)
    if not tunsec_initiates:
        charon_initiates(charon, tunsec)
    sa, theirs = established(tunsec, charon)
    assert sa["initiator"] is tunsec_initiates
    assert sa["proposal"].startswith("IKE:") and ps.ike.split("-")[0] in sa["proposal"]
    assert {k: theirs[k] for k in ps.charon_ike} == ps.charon_ike
    assert "integ-alg" in ps.charon_ike or "integ-alg" not in theirs      # AEAD: no separate integrity
    (their_child,) = theirs["child-sas"].values()
    assert {k: their_child[k] for k in ps.charon_esp} == ps.charon_esp
    assert sa["children"][0]["alg"] == ps.esp.split("-")[0]
    assert "dh-group" not in their_child
    check_traffic(topo, tunsec, charon)
    # charon heard only well-formed messages from tunsec
    assert "parsing" not in charon.log_text() and "invalid" not in charon.log_text().lower()


@pytest.mark.parametrize("tunsec_initiates", [True, False], ids=["tunsec-initiator", "tunsec-responder"])
def test_pfs_in_create_child_sa_both_directions(topo: TwoHosts, tunsec_initiates: bool) -> None:
    """ESP aes128gcm16-ecp256: every CREATE_CHILD_SA carries KE payloads and uses ECP_256."""
    tunsec, charon = peers(topo, tunsec_initiates, proposals=PFS.ike, esp_proposals=PFS.esp)
    if not tunsec_initiates:
        charon_initiates(charon, tunsec)
    sa, _ = established(tunsec, charon)
    first = sa["children"][0]

    # charon rekeys the Child SA: tunsec answers a CREATE_CHILD_SA with KE
    r = charon.swanctl("--rekey", "--child", CHILD)
    assert r.returncode == 0, r.stdout + r.stderr
    charon.wait_log(r"parsed CREATE_CHILD_SA response \d+ \[ SA No KE TSi TSr \]")
    charon.wait_log(r"selected proposal: ESP:AES_GCM_16_128/ECP_256/NO_EXT_SEQ")
    tunsec.wait_log(rf"CHILD_SA {CHILD} {first['spi_in']}_i {first['spi_out']}_o deleted")

    # tunsec adds a second Child SA to the IKE SA: it sends a CREATE_CHILD_SA with KE
    r = tunsec.cli("initiate", "--child", CHILD)
    assert r.returncode == 0, r.stderr
    charon.wait_log(r"parsed CREATE_CHILD_SA request \d+ \[ SA No KE TSi TSr \]")

    def two_pfs_children() -> bool:
        children = charon.sas()[CONN]["child-sas"].values()
        return len(children) == 2 and all(c["state"] == "INSTALLED" for c in children)

    assert wait_until(two_pfs_children, 10), charon.list_sas()
    children = list(charon.sas()[CONN]["child-sas"].values())
    assert [c.get("dh-group") for c in children] == ["ECP_256", "ECP_256"]
    (ike,) = tunsec.ike_sas()
    assert ike["spi_i"] == sa["spi_i"] and ike["spi_r"] == sa["spi_r"]    # the same IKE SA throughout
    ours = {(c["spi_in"], c["spi_out"]) for c in ike["children"]}
    assert ours == {(c["spi-out"], c["spi-in"]) for c in children}
    assert (first["spi_in"], first["spi_out"]) not in ours
    ping_both_ways(topo)
    assert iperf3_tcp(topo, seconds=2) > 1_000_000


@pytest.mark.parametrize("tunsec_initiates", [True, False], ids=["tunsec-initiator", "tunsec-responder"])
@pytest.mark.parametrize("kind", ["rsa", "ecdsa"])
def test_certificate_auth(topo: TwoHosts, pkis: dict[str, Pki], kind: str, tunsec_initiates: bool) -> None:
    ps = GCM if kind == "ecdsa" else CBC
    tunsec, charon = peers(topo, tunsec_initiates, pki=pkis[kind], proposals=ps.ike, esp_proposals=ps.esp)
    if not tunsec_initiates:
        charon_initiates(charon, tunsec)
    established(tunsec, charon)
    # charon verified tunsec's certificate chain and its signature (RFC 7427), and tunsec charon's
    charon.wait_log(r"received end entity cert \"C=CH, O=tunsec test, CN=ts-a.tunsec.test\"")
    charon.wait_log(rf"using trusted ca certificate \"C=CH, O=tunsec test, CN=tunsec {kind} test CA\"")
    scheme = "RSA_EMSA_PKCS1_SHA2_256" if kind == "rsa" else "ECDSA_WITH_SHA256_DER"
    charon.wait_log(rf"authentication of 'ts-a.tunsec.test' with {scheme} successful")
    charon.wait_log(rf"authentication of 'ts-b.tunsec.test' \(myself\) with {scheme} successful")
    ping_both_ways(topo)
    assert iperf3_tcp(topo, seconds=2) > 1_000_000


# --------------------------------------------------------------------------
# Failures, seen from both sides
# --------------------------------------------------------------------------


def nothing_up(tunsec: TunsecIke, charon: Charon) -> None:
    assert wait_until(lambda: tunsec.ike_sas() == [], 10), tunsec.ike_sas()
    doc = tunsec.status()
    assert doc["policies"] == [] and all(sa["state"] == "larval" for sa in doc["sas"])
    assert charon.list_sas().strip() == ""
    assert not charon.topo.ping(charon.topo.a, charon.topo.b.inner4, src=charon.topo.a.inner4, timeout=1)


@pytest.mark.parametrize("tunsec_initiates", [True, False], ids=["tunsec-initiator", "tunsec-responder"])
def test_wrong_psk(topo: TwoHosts, tunsec_initiates: bool) -> None:
    tunsec = TunsecIke(topo, Conn(topo.a, topo.b, psk="not what charon has",
                                  start_action="start" if tunsec_initiates else "none"))
    charon = Charon(topo, Conn(topo.b, topo.a))
    charon.start()
    tunsec.start()
    if tunsec_initiates:
        line = tunsec.wait_log(r"ERROR tun: AUTHENTICATION_FAILED from .*").group(0)
        assert "the peer refused our authentication" in line
        charon.wait_log(r"tried 1 shared key for 'ts-b.tunsec.test' - 'ts-a.tunsec.test', but MAC mismatched")
        charon.wait_log(r"generating IKE_AUTH response 1 \[ N\(AUTH_FAILED\) \]")
    else:
        r = charon.initiate()
        assert r.returncode != 0 and "AUTHENTICATION_FAILED" in r.stdout
        line = tunsec.wait_log(r"ERROR tun: AUTHENTICATION_FAILED from .*").group(0)
        assert "the peer failed authentication" in line and "pre-shared key" in line
        charon.wait_log(r"received AUTHENTICATION_FAILED notify error")
    nothing_up(tunsec, charon)
    assert "not what charon has" not in tunsec.log_text()


@pytest.mark.parametrize("tunsec_initiates", [True, False], ids=["tunsec-initiator", "tunsec-responder"])
def test_no_common_proposal(topo: TwoHosts, tunsec_initiates: bool) -> None:
    tunsec = TunsecIke(topo, Conn(topo.a, topo.b, proposals="aes256-sha512-modp4096",
                                  start_action="start" if tunsec_initiates else "none"))
    charon = Charon(topo, Conn(topo.b, topo.a, proposals=GCM.ike))
    charon.start()
    tunsec.start()
    if tunsec_initiates:
        line = tunsec.wait_log(r"ERROR tun: NO_PROPOSAL_CHOSEN: .*").group(0)
        assert "IKE:aes256-" in line and "modp4096" in line
        charon.wait_log(r"received proposals: IKE:AES_CBC_256/HMAC_SHA2_512_256/PRF_HMAC_SHA2_512/MODP_4096")
        charon.wait_log(r"received proposals unacceptable")
        charon.wait_log(r"generating IKE_SA_INIT response 0 \[ N\(NO_PROP\) \]")
    else:
        r = charon.initiate()
        assert r.returncode != 0
        line = tunsec.wait_log(r"ERROR tun: NO_PROPOSAL_CHOSEN: .*").group(0)
        # tunsec, the responder, names both lists
        assert f"received IKE:{GCM.ike}" in line and "configured IKE:aes256-" in line and "modp4096" in line
        charon.wait_log(r"received NO_PROPOSAL_CHOSEN notify error")
    nothing_up(tunsec, charon)


def test_charon_deletes_and_tunsec_follows(topo: TwoHosts) -> None:
    """An INFORMATIONAL DELETE from charon removes tunsec's IKE SA, Child SA and policies; and back."""
    tunsec, charon = peers(topo, True)
    sa, _ = established(tunsec, charon)
    child = sa["children"][0]
    charon.swanctl_ok("--terminate", "--ike", CONN)
    tunsec.wait_log(r"tun: IKE SA closed: deleted by peer")
    tunsec.wait_log(rf"CHILD_SA {CHILD} {child['spi_in']}_i {child['spi_out']}_o deleted: deleted by peer")
    nothing_up(tunsec, charon)
    # tunsec brings it back and deletes it; charon hears the DELETE
    r = tunsec.cli("initiate", "--child", CHILD)
    assert r.returncode == 0, r.stderr
    established(tunsec, charon)
    ping_both_ways(topo, count=1)
    r = tunsec.cli("terminate", "--ike", CONN)
    assert r.returncode == 0, r.stderr
    charon.wait_log(r"received DELETE for IKE_SA tun\[\d+\]")
    assert wait_until(lambda: charon.list_sas().strip() == "", 10), charon.list_sas()
    nothing_up(tunsec, charon)
