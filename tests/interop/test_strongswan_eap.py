"""EAP-MSCHAPv2 with strongSwan (RFC 7296 §2.16): a charon road warrior (kernel-libipsec) in
namespace B authenticates with EAP-Identity + EAP-MSCHAPv2 against a tunsec gateway in A that
proves itself with a certificate of the test CA (made by ``pki``).

With the right password the tunnel comes up and pings pass (also with tunsec as the EAP
client of a charon gateway); with a wrong one charon gets
EAP-Failure / AUTHENTICATION_FAILED, tunsec logs why (without the password) and keeps no IKE SA.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from ike_peers import CHILD, Charon, Pki, TunsecIke, ping_both_ways, requires_strongswan
from roadwarrior import GatewayConn, RoadWarriorConn

from tunsec.bench.netns import Host, TwoHosts, wait_until

pytestmark = [
    pytest.mark.interop,
    requires_strongswan,
]

USER, PASSWORD = "alice", "Alice-Interop-pw-7"


def gateway_conn(me: Host, peer: Host) -> GatewayConn:
    """A certificate for itself, EAP-MSCHAPv2 (with EAP-Identity) for the client, who may be alice."""
    return GatewayConn(me, peer, method="eap-mschapv2", users=((USER, PASSWORD),))


def client_conn(me: Host, peer: Host, password: str) -> RoadWarriorConn:
    """EAP-MSCHAPv2 as alice, the gateway by its certificate."""
    return RoadWarriorConn(me, peer, method="eap-mschapv2", eap_user=USER, psk=password)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.new_ca(tmp_path_factory, "pki-eap")


@pytest.fixture
def topo() -> Iterator[TwoHosts]:
    with TwoHosts() as t:
        yield t


def peers(topo: TwoHosts, pki: Pki, password: str) -> tuple[TunsecIke, Charon]:
    gateway = TunsecIke(topo, gateway_conn(topo.a, topo.b), pki=pki)
    client = Charon(topo, client_conn(topo.b, topo.a, password), pki=pki)
    client.start()
    gateway.start()
    return gateway, client


def test_strongswan_eap_mschapv2_road_warrior_pings_through(topo: TwoHosts, pki: Pki) -> None:
    gateway, client = peers(topo, pki, PASSWORD)
    r = client.initiate()
    assert r.returncode == 0, f"swanctl --initiate: {r.stdout[-3000:]}{r.stderr}\ntunsec:\n{gateway.log_tail()}"
    sa = gateway.wait_established()
    assert sa["remote_id"] == USER  # what EAP proved (eap_id = %any), not the IKE identity
    client.wait_log(r"EAP method EAP_MSCHAPV2 succeeded, MSK established")
    client.wait_log(r"authentication of '.*' with EAP successful")
    ping_both_ways(topo)


def assert_refused_and_nothing_left(gateway: TunsecIke, client: Charon, log_line: str) -> None:
    """charon gets EAP-Failure and AUTHENTICATION_FAILED in one response (as from strongSwan's gateway),
    tunsec logs why, and keeps no IKE SA, no half-open SA, no Child SA, no policy."""
    r = client.initiate(timeout=10)
    assert r.returncode != 0, r.stdout[-2000:]
    client.wait_log(r"parsed IKE_AUTH response \d+ \[ EAP/FAIL N\(AUTH_FAILED\) \]")
    gateway.wait_log(log_line)
    status: dict[str, Any] = {}

    def nothing_left() -> bool:
        status.update(gateway.status())
        return not status["ike_sas"] and status["ike_half_open"] == 0 and not status["policies"]
    assert wait_until(nothing_left, 10), status


def test_strongswan_eap_wrong_password_and_unknown_user_are_refused_and_nothing_stays(
        topo: TwoHosts, pki: Pki) -> None:
    gateway, client = peers(topo, pki, "not-the-password")
    assert_refused_and_nothing_left(
        gateway, client, r"EAP-MSCHAPv2 authentication of 'alice' failed: wrong EAP-MSCHAPv2 password")
    # the same client as a user the gateway does not know (its password is alice's)
    client.write(eap_user="mallory", psk=PASSWORD)
    client.swanctl_ok("--load-all", "--noprompt")
    assert_refused_and_nothing_left(gateway, client, r"EAP-MSCHAPv2 authentication of 'mallory' failed: "
                                    r"unknown EAP user")
    log = gateway.log_text()
    assert PASSWORD not in log and "not-the-password" not in log


def test_tunsec_eap_client_against_strongswan_gateway(topo: TwoHosts, pki: Pki) -> None:
    """tunsec as the EAP-MSCHAPv2 road warrior: charon checks tunsec's MSK AUTH and tunsec charon's."""
    # the same gateway connection as tunsec's: the swanctl.conf syntax is shared
    gateway = Charon(topo, gateway_conn(topo.b, topo.a), pki=pki)
    client = TunsecIke(topo, client_conn(topo.a, topo.b, PASSWORD), pki=pki)
    gateway.start()
    client.start()
    r = client.cli("initiate", "--child", CHILD)
    assert r.returncode == 0, f"{r.stdout}{r.stderr}\n{client.log_tail()}"
    client.wait_established()
    gateway.wait_log(r"EAP method EAP_MSCHAPV2 succeeded, MSK established")
    gateway.wait_log(r"authentication of '.*' with EAP successful")
    ping_both_ways(topo)


def test_tunsec_eap_client_with_a_wrong_password_fails_cleanly(topo: TwoHosts, pki: Pki) -> None:
    """charon answers a wrong password with an MSCHAPv2 Failure request (E=691 R=1): tunsec acknowledges it,
    does not try the same password again, logs why and keeps nothing."""
    gateway = Charon(topo, gateway_conn(topo.b, topo.a), pki=pki)
    client = TunsecIke(topo, client_conn(topo.a, topo.b, "not-the-password"), pki=pki)
    gateway.start()
    client.start()
    r = client.cli("initiate", "--child", CHILD)
    assert r.returncode == 0, f"{r.stdout}{r.stderr}\n{client.log_tail()}"
    client.wait_log(r"AUTHENTICATION_FAILED from \S+: the peer refused our authentication \('the gateway refused our "
                    r"EAP-MSCHAPv2 authentication: E=691 \(authentication failure: wrong user name or password\), "
                    r"retry allowed \(R=1\) but not attempted")
    assert wait_until(lambda: client.ike_sas() == [], 10), client.log_tail()
    assert client.established() == [] and "IKE SA established" not in client.log_text()
    log = gateway.log_text()
    assert len(re.findall(r"EAP-MS-CHAPv2 verification failed", log)) == 1, gateway.log_tail()  # one try only
    assert "not-the-password" not in client.log_text()
