"""RADIUS accounting (RFC 2866) against FreeRADIUS: a strongSwan road warrior authenticates
with eap-radius to a tunsec gateway with ``radius { accounting = yes }`` (the setup of
test_strongswan_radius.py), pings through the tunnel and terminates. FreeRADIUS's ``detail``
module must then hold an Accounting-Request Start and a Stop for the same session, with the
EAP identity, the leased address, the attributes strongSwan's eap-radius sends, and in the
Stop at least the bytes and packets the ping carried each way; the Class of the Access-Accept
in both.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from freeradius import FreeRadius, requires_freeradius
from ike_peers import CONN, Charon, Pki, TunsecIke, requires_strongswan
from test_strongswan_radius import PASSWORD, RADIUS_SECRET, USER, VIP, RadiusGatewayConn, RoadWarriorConn

from tunsec.bench.netns import TwoHosts, wait_until
from tunsec.bench.systems.strongswan import PLUGINS, strongswan_conf

pytestmark = [
    pytest.mark.interop,
    requires_strongswan,
    requires_freeradius,
]

PINGS = 5
ECHO = 84   # an echo request or reply of ping's default 56 data bytes: IPv4 20 + ICMP 8 + 56
CLASS = "0x" + b"vpn-gold".hex()   # in the Access-Accept: accounting must echo it (RFC 2865 5.25)


@dataclass(frozen=True)
class AccountingGatewayConn(RadiusGatewayConn):
    """The eap-radius gateway of test_strongswan_radius.py, with accounting to FreeRADIUS's 1813."""

    def swanctl_text(self) -> str:
        text = super().swanctl_text()
        assert "  retransmit_tries = 1\n" in text
        return text.replace("  retransmit_tries = 1\n", "  retransmit_tries = 1\n  accounting = yes\n", 1) \
            .replace("      auth_port = 1812\n", "      auth_port = 1812\n      acct_port = 1813\n", 1)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    p = Pki(Path(tmp_path_factory.mktemp("pki-radius-acct")), "ecdsa")
    p.make_ca()
    return p


@pytest.fixture
def topo() -> Iterator[TwoHosts]:
    with TwoHosts() as t:
        yield t


def setup(topo: TwoHosts, pki: Pki) -> tuple[TunsecIke, Charon, FreeRadius]:
    radius = FreeRadius(topo, topo.a, RADIUS_SECRET, {USER: PASSWORD}, {USER: f"Class := {CLASS}"})
    radius.start()
    gateway = TunsecIke(topo, AccountingGatewayConn(topo.a, topo.b, auth="pubkey"), pki=pki)
    client = Charon(topo, RoadWarriorConn(topo.b, topo.a, auth="pubkey", psk=PASSWORD), pki=pki)
    conf = strongswan_conf(client.inst, level=2, extra="  install_virtual_ip = yes\n").replace(
        f"load = {PLUGINS}", f"load = {PLUGINS} eap-mschapv2 eap-identity")
    (client.inst.dir / "strongswan.conf").write_text(conf)
    client.start()
    gateway.start()
    return gateway, client, radius


def records_of(radius: FreeRadius, status: str) -> list[dict[str, str]]:
    return [r for r in radius.accounting_records() if r.get("Acct-Status-Type") == status]


def test_freeradius_logs_start_and_stop_with_user_address_session_and_the_pings_bytes(
        topo: TwoHosts, pki: Pki) -> None:
    gateway, client, radius = setup(topo, pki)
    r = client.initiate()
    assert r.returncode == 0, f"swanctl --initiate: {r.stdout[-3000:]}{r.stderr}\ntunsec:\n{gateway.log_tail()}"
    sa = gateway.wait_established()
    assert sa["remote_vips"] == [VIP]
    assert wait_until(lambda: bool(records_of(radius, "Start")), 10), \
        f"no Accounting Start at FreeRADIUS:\n{radius.log_text()[-3000:]}\ntunsec:\n{gateway.log_tail()}"
    assert topo.wait_ping(topo.b, topo.a.inner4, src=VIP, timeout=10)
    assert topo.ping(topo.b, topo.a.inner4, count=PINGS, src=VIP)

    client.swanctl_ok("--terminate", "--ike", CONN)
    assert wait_until(lambda: bool(records_of(radius, "Stop")), 10), \
        f"no Accounting Stop at FreeRADIUS:\n{radius.log_text()[-3000:]}\ntunsec:\n{gateway.log_tail()}"
    (start,), (stop,) = records_of(radius, "Start"), records_of(radius, "Stop")
    for record in (start, stop):
        assert record["User-Name"] == USER, record
        assert record["Framed-IP-Address"] == VIP, record
        assert record["NAS-Port-Type"] == "Virtual", record
        assert record["NAS-IP-Address"] == topo.a.outer4, record
        # strongSwan's "%#H": address[port]; both float to 4500 (encap = yes)
        assert record["Called-Station-Id"] == f"{topo.a.outer4}[4500]", record
        assert record["Calling-Station-Id"] == f"{topo.b.outer4}[4500]", record
        assert record["NAS-Port-Id"] == CONN, record
        assert record["Class"] == CLASS, record
    assert start["Acct-Session-Id"] == stop["Acct-Session-Id"] != ""
    assert stop["Acct-Terminate-Cause"] == "User-Request", stop   # the client deleted the IKE SA
    # the echo requests came from the client (input), the replies went to it (output); the
    # first successful wait_ping adds one each way, failed tries of it only requests
    assert int(stop["Acct-Input-Octets"]) >= (PINGS + 1) * ECHO, stop
    assert int(stop["Acct-Output-Octets"]) >= (PINGS + 1) * ECHO, stop
    assert int(stop["Acct-Input-Packets"]) >= PINGS + 1 and int(stop["Acct-Output-Packets"]) >= PINGS + 1, stop
    assert "Acct-Input-Octets" not in start, start

    def settled() -> bool:
        return bool(gateway.status()["radius"]["accounting"]["sessions"] == 0)
    assert wait_until(settled, 10)
    acct = gateway.status()["radius"]["accounting"]
    assert (acct["requests"], acct["responses"], acct["failed"], acct["bad"]) == (2, 2, 0, 0), acct
    health = gateway.status()["radius"]["servers"]["fr"]
    assert (health["auth"]["state"], health["acct"]["state"], health["acct"]["address"]) == \
        ("up", "up", "127.0.0.1:1813"), health
    assert RADIUS_SECRET not in gateway.log_text()
