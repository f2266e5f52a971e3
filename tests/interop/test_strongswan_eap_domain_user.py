"""Review reveapimpl F1, with real charon: an EAP-MSCHAPv2 user named with a Windows domain
(``CORP\\alice``) cannot log in, in either direction, because tunsec puts the domain into the
ChallengeHash (RFC 2759 §8.2 and strongSwan's eap-mschapv2 extract_username() leave it out).

Both tests fail on main (b0ed2386): charon's client gets EAP-Failure from the tunsec gateway
("wrong EAP-MSCHAPv2 password" with the right one), and charon's gateway refuses the tunsec
client's NT-Response ("EAP-MS-CHAPv2 verification failed")."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from ike_peers import CHILD, Charon, Pki, TunsecIke, requires_strongswan
from roadwarrior import GatewayConn, RoadWarriorConn

from tunsec.bench.netns import TwoHosts

pytestmark = [
    pytest.mark.interop,
    requires_strongswan,
]

USER, PASSWORD = "CORP\\alice", "Alice-Domain-pw-3"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.new_ca(tmp_path_factory, "pki-eap-domain")


@pytest.fixture
def topo() -> Iterator[TwoHosts]:
    with TwoHosts() as t:
        yield t


def test_strongswan_client_with_a_domain_user_logs_in_to_tunsec(topo: TwoHosts, pki: Pki) -> None:
    gateway = TunsecIke(topo, GatewayConn(topo.a, topo.b, method="eap-mschapv2", users=((USER, PASSWORD),)),
                        pki=pki)
    client = Charon(topo, RoadWarriorConn(topo.b, topo.a, method="eap-mschapv2", eap_user=USER, psk=PASSWORD),
                    pki=pki)
    client.start()
    gateway.start()
    r = client.initiate(timeout=15)
    assert r.returncode == 0, f"swanctl --initiate: {r.stdout[-3000:]}{r.stderr}\ntunsec:\n{gateway.log_tail()}"
    gateway.wait_established()


def test_tunsec_client_with_a_domain_user_logs_in_to_strongswan(topo: TwoHosts, pki: Pki) -> None:
    gateway = Charon(topo, GatewayConn(topo.b, topo.a, method="eap-mschapv2", users=((USER, PASSWORD),)), pki=pki)
    client = TunsecIke(topo, RoadWarriorConn(topo.a, topo.b, method="eap-mschapv2", eap_user=USER, psk=PASSWORD),
                       pki=pki)
    gateway.start()
    client.start()
    r = client.cli("initiate", "--child", CHILD)
    assert r.returncode == 0, f"{r.stdout}{r.stderr}\n{client.log_tail()}"
    try:
        client.wait_established()
    except AssertionError as exc:
        raise AssertionError(f"{exc}\ncharon:\n{gateway.log_text()[-3000:]}") from None
