"""Group selection with eap-radius (strongSwan's ``remote.groups`` and eap-radius ``class_group``):
the tunsec gateway in A has two connections alike but for their groups and pools, ``tun-staff``
(groups = staff) and ``tun-guests`` (groups = guests), and FreeRADIUS in A puts each user's group
in the Access-Accept's Class. The strongSwan road warrior in B logs in as alice (Class "staff"),
then as bob (an opaque Class, then "guests"), then as carol (Class "other").

alice and bob each end in the connection of their group, get an address of its pool and ping
through; accounting names that connection. carol gets AUTHENTICATION_FAILED after her EAP
succeeded, the gateway logs a line naming her and her groups, and nothing stays: no IKE SA, no
lease, no accounting Start, no RADIUS conversation. No log line shows the opaque Class.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from freeradius import FreeRadius, requires_freeradius
from ike_peers import CONN, Charon, Pki, TunsecIke, ident, requires_strongswan
from roadwarrior import GatewayConn, Pool, RoadWarriorConn

from tunsec.bench.netns import TwoHosts, wait_until

pytestmark = [
    pytest.mark.interop,
    requires_strongswan,
    requires_freeradius,
]

RADIUS_SECRET = "radius-groups-secret-7"
USERS = {"alice": "Alice-Group-pw-1", "bob": "Bob-Group-pw-2", "carol": "Carol-Group-pw-3"}
OPAQUE = b"\x8a\x01session-cookie-4711"   # a Class that is no group name: never in a log line


def hexed(value: bytes) -> str:
    return "0x" + value.hex()


CLASSES = {
    "alice": f"Class := {hexed(b'staff')}",
    "bob": f"Class := {hexed(OPAQUE)}, Class += {hexed(b'guests')}",
    "carol": f"Class := {hexed(b'other')}",
}
# small pools: the gateway routes each pool's range
STAFF, GUESTS = Pool("staff", "10.3.1.1-10.3.1.2"), Pool("guests", "10.3.2.1-10.3.2.2")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.new_ca(tmp_path_factory, "pki-radius-groups")


@pytest.fixture
def topo() -> Iterator[TwoHosts]:
    with TwoHosts() as t:
        yield t


def login(gateway: TunsecIke, client: Charon, user: str) -> dict[str, Any]:
    """``user`` logs in; the gateway's IKE SA, once it has its Child SA."""
    client.write(eap_user=user, psk=USERS[user])
    client.swanctl_ok("--load-all", "--noprompt")
    r = client.initiate()
    assert r.returncode == 0, f"swanctl --initiate as {user}: {r.stdout[-3000:]}{r.stderr}\n{gateway.log_tail()}"
    return gateway.wait_established()


def logout(gateway: TunsecIke, client: Charon) -> None:
    client.swanctl_ok("--terminate", "--ike", CONN)
    assert wait_until(lambda: not gateway.ike_sas(), 10), gateway.ike_sas()


def test_each_user_ends_in_the_connection_of_its_radius_group_and_others_are_refused(
        topo: TwoHosts, pki: Pki) -> None:
    radius = FreeRadius(topo, topo.a, RADIUS_SECRET, USERS, CLASSES)
    radius.start()
    gateway = TunsecIke(topo, GatewayConn(topo.a, topo.b, method="eap-radius", radius_secret=RADIUS_SECRET,
                                          group_pools=(("staff", STAFF), ("guests", GUESTS)), accounting=True),
                        pki=pki)
    client = Charon(topo, RoadWarriorConn(topo.b, topo.a, method="eap-mschapv2", eap_user="alice",
                                          psk=USERS["alice"], vips=("0.0.0.0",)), pki=pki)
    client.start()
    gateway.start()

    for user, conn, vip, group in (("alice", "tun-staff", "10.3.1.1", "staff"),
                                   ("bob", "tun-guests", "10.3.2.1", "guests")):
        sa = login(gateway, client, user)
        assert (sa["name"], sa["remote_id"], sa["remote_vips"]) == (conn, user, [vip]), sa
        # status names the EAP identity, the IKE identity the client sent, and the group that
        # admitted it (bob's opaque Class is no group: not shown)
        assert (sa["remote_ike_id"], sa["remote_eap_id"], sa["groups"]) == (ident(topo.b), user, [group]), sa
        text = gateway.cli("status").stdout
        assert f"  EAP identity {user} (IKE identity {ident(topo.b)}), groups: {group}" in text.splitlines(), text
        assert topo.wait_ping(topo.b, topo.a.inner4, src=vip, timeout=10)
        logout(gateway, client)
    # bob's Accept was read on tun-staff, the first connection his identities fit; his group moved him
    gateway.wait_log(r"RADIUS server fr \(127\.0\.0\.1:1812\) accepted user 'bob', member of 'guests'")
    gateway.wait_log(r"tun-staff: switching to connection tun-guests: user 'bob' is a member of 'guests'")

    client.write(eap_user="carol", psk=USERS["carol"])
    client.swanctl_ok("--load-all", "--noprompt")
    r = client.initiate(timeout=10)
    assert r.returncode != 0, r.stdout[-2000:]
    client.wait_log(r"EAP method EAP_MSCHAPV2 succeeded, MSK established")
    client.wait_log(r"parsed IKE_AUTH response \d+ \[ N\(AUTH_FAILED\) \]")
    # refused after RADIUS accepted carol: not counted towards a ban, nor matched by fail2ban (review revban F2)
    gateway.wait_log(r"tun-staff: AUTHENTICATION_FAILED from \S+: the peer authenticated and was refused "
                     r"\(\"EAP-RADIUS user 'carol' "
                     r"is a member of no group its connections require \(tun-staff: staff; tun-guests: guests\); "
                     r"its groups from RADIUS: 'other'\"\)")
    status: dict[str, Any] = {}

    def nothing_left() -> bool:
        status.update(gateway.status())
        return not status["ike_sas"] and status["ike_half_open"] == 0 and \
            status["radius"]["accounting"]["sessions"] == 0
    assert wait_until(nothing_left, 10), status
    # alice's and bob's leases stay theirs while they are offline; carol got none
    assert sorted((lease["identity"], lease["address"]) for lease in status["leases"]) == \
        [("alice", "10.3.1.1"), ("bob", "10.3.2.1")], status["leases"]
    assert (status["radius"]["conversations"], status["radius"]["accepts"]) == (0, 3), status["radius"]
    starts = [rec for rec in radius.accounting_records() if rec.get("Acct-Status-Type") == "Start"]
    assert [(rec["User-Name"], rec["NAS-Port-Id"], rec["Framed-IP-Address"]) for rec in starts] == \
        [("alice", "tun-staff", "10.3.1.1"), ("bob", "tun-guests", "10.3.2.1")], starts
    log = gateway.log_text()
    assert "session-cookie" not in log and OPAQUE.hex() not in log and RADIUS_SECRET not in log
