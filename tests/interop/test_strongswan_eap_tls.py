"""EAP-TLS with strongSwan (RFC 5216 in RFC 7296 §2.16): a charon road warrior (kernel-libipsec,
``vips = 0.0.0.0``) in namespace B proves itself with a client certificate inside EAP-TLS to a
tunsec gateway in A, which proves itself with its own certificate (IKE AUTH and TLS server) and
asks for the EAP identity (``eap_id = %any``).

With a certificate of another CA (same CA name, other key) charon gets EAP-Failure /
AUTHENTICATION_FAILED, tunsec logs why and keeps no IKE SA and no lease; then, with a certificate
of the configured CA, the client gets the pool's first address and pings through (which needs the
same MSK on both sides: the AUTH payloads are keyed with it).
"""

from __future__ import annotations

import grp
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from ike_peers import CONN, Charon, Pki, TunsecIke, ident, requires_strongswan
from roadwarrior import GatewayConn, Pool, RoadWarriorConn

from tunsec.bench.netns import TwoHosts, wait_until

pytestmark = [
    pytest.mark.interop,
    requires_strongswan,
]

POOL4, VIP4 = "10.3.0.0/24", "10.3.0.1"
CACERTS = "cacerts = ca.crt"   # the gateway's: roadwarrior.GatewayConn


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.new_ca(tmp_path_factory, "pki-eap-tls")


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Another CA, whose certificates the gateway must not accept."""
    return Pki.new_ca(tmp_path_factory, "pki-other")


@pytest.fixture
def topo() -> Iterator[TwoHosts]:
    with TwoHosts() as t:
        yield t


def peers(topo: TwoHosts, pki: Pki, client_pki: Pki | None = None, trust: Pki | None = None
          ) -> tuple[TunsecIke, Charon]:
    """The gateway and the client, started; ``client_pki`` issues the client's certificate
    (default: the gateway's CA), ``trust`` is a CA the gateway trusts besides its own (its connection's
    ``cacerts = ca.crt, other.crt``).
    The client trusts the gateway's CA either way."""
    # the gateway: its certificate, EAP-TLS (after EAP-Identity) for the client, a pool; the client:
    # EAP-TLS with its certificate (EAP identity = its IKE identity), a virtual IP, TLS in charon's log
    gateway = TunsecIke(topo, GatewayConn(topo.a, topo.b, method="eap-tls", pools=(Pool("rw4", POOL4),)), pki=pki)
    if trust is not None:
        shutil.copy(trust.ca_cert, gateway.dir / "x509ca" / "other.crt")
        gateway.conf.write_text(gateway.conf.read_text().replace(CACERTS, f"{CACERTS}, other.crt"))
    client = Charon(topo, RoadWarriorConn(topo.b, topo.a, method="eap-tls", vips=("0.0.0.0",)), pki=pki)
    if client_pki is not None:
        key, cert = client_pki.issue(ident(topo.b))
        shutil.copy(cert, client.inst.dir / "x509" / cert.name)
        shutil.copy(key, client.inst.dir / "private" / key.name)
    client.start()
    gateway.start()
    return gateway, client


def test_strongswan_eap_tls_refused_with_another_ca_then_gets_a_pool_address_and_pings(
        topo: TwoHosts, pki: Pki, other_pki: Pki) -> None:
    """One gateway and one client for both cases (each costs a tunsec and a charon start)."""
    gateway, client = peers(topo, pki, client_pki=other_pki)
    r = client.initiate(timeout=10)
    assert r.returncode != 0
    client.wait_log(r"parsed IKE_AUTH response \d+ \[ EAP/FAIL N\(AUTH_FAILED\) \]")
    gateway.wait_log(rf"EAP-TLS authentication of '{ident(topo.b)}' failed: client certificate refused: "
                     r"certificate .* not trusted")
    assert wait_until(lambda: gateway.status()["ike_half_open"] == 0 and gateway.ike_sas() == [], 10), \
        gateway.status()
    assert gateway.status()["leases"] == [] and gateway.status()["policies"] == []

    # the same client with a certificate of the gateway's CA
    pki.install(client.inst.dir, topo.b)
    client.swanctl_ok("--load-all", "--clear", "--noprompt")
    r = client.initiate()
    assert r.returncode == 0, f"swanctl --initiate: {r.stdout[-3000:]}{r.stderr}\ntunsec:\n{gateway.log_tail()}"
    sa = gateway.wait_established()
    # known by its certificate's subject, whose subjectAltName it gave as its EAP identity
    assert (sa["remote_id"], sa["remote_eap_id"]) == (f"C=CH, O=tunsec test, CN={ident(topo.b)}", ident(topo.b))
    assert sa["remote_vips"] == [VIP4]  # the pool's first address: the refused attempt leased nothing
    client.wait_log(r"negotiated TLS 1.2")
    client.wait_log(r"EAP method EAP_TLS succeeded, MSK established")
    client.wait_log(r"authentication of '.*' with EAP successful")  # the gateway's AUTH from the MSK
    assert client.sas()[CONN]["local-vips"] == [VIP4]
    assert topo.wait_ping(topo.b, topo.a.inner4, src=VIP4, timeout=10)
    assert topo.ping(topo.b, topo.a.inner4, count=3, src=VIP4), "ping through the tunnel lost packets"


def readable_by_tunsec(root: Path) -> None:
    """The gateway's configuration and credentials readable by tunsec's group: it reads them as its
    own user on a reload (the operator's part, docs/operations.md)."""
    gid = grp.getgrnam("tunsec").gr_gid
    for path in (root, *root.rglob("*")):
        os.chown(path, -1, gid)
        path.chmod(path.stat().st_mode | (0o050 if path.is_dir() else 0o040))


def test_a_reload_that_takes_the_clients_ca_away_logs_it_out(topo: TwoHosts, pki: Pki, other_pki: Pki) -> None:
    """Review revreload F3 for EAP-TLS: the gateway's connection trusts the client's CA besides its own
    (cacerts); a reload that takes it out of cacerts deletes the client's IKE SA (charon is told) and
    names the client in its answer."""
    gateway, client = peers(topo, pki, client_pki=other_pki, trust=other_pki)
    r = client.initiate()
    assert r.returncode == 0, f"swanctl --initiate: {r.stdout[-3000:]}{r.stderr}\ntunsec:\n{gateway.log_tail()}"
    gateway.wait_established()
    readable_by_tunsec(gateway.dir)
    r = gateway.cli("reload")
    assert r.returncode == 0 and "no changes" in r.stdout, f"{r.stdout}{r.stderr}"
    gateway.conf.write_text(gateway.conf.read_text().replace(f"{CACERTS}, other.crt", CACERTS))
    r = gateway.cli("reload")
    assert r.returncode == 0, f"{r.stdout}{r.stderr}"
    assert ("certificate peers whose CA left the trust anchors, their IKE SAs deleted: "
            f"C=CH, O=tunsec test, CN={ident(topo.b)} (tun)") in r.stdout, r.stdout
    client.wait_log(r"received DELETE for IKE_SA")
    assert wait_until(lambda: gateway.ike_sas() == [], 15), gateway.status()["ike_sas"]
