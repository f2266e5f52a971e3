"""RADIUS accounting (RFC 2866) against FreeRADIUS: a strongSwan road warrior authenticates
with eap-radius to a tunsec gateway with ``radius { accounting = yes }`` (the setup of
test_strongswan_radius.py), pings through the tunnel and terminates. FreeRADIUS's ``detail``
module must then hold an Accounting-On, then an Accounting-Request Start and a Stop for the
same session, with the EAP identity, the leased address, the attributes strongSwan's
eap-radius sends, and in the Stop at least the bytes and packets the ping carried each way;
the Class of the Access-Accept in both. When the gateway stops instead, the Stop says
NAS-Reboot and an Accounting-Off follows it. When the gateway's worker dies and is restarted,
the Stop still counts the traffic from before. A reload that turns accounting off and on again
stops the session (Admin-Reset) and starts a new one for the IKE SA still up; a client that
stops answering is closed by DPD and its Stop says Lost-Service; an Access-Accept's
Session-Timeout ends the IKE SA, and its Stop says Session-Timeout.
"""

from __future__ import annotations

import contextlib
import grp
import os
import signal
from collections.abc import Iterator

import pytest
from freeradius import FreeRadius, requires_freeradius
from ike_peers import CONN, Charon, Pki, TunsecIke, requires_strongswan
from roadwarrior import GatewayConn, Pool, RoadWarriorConn
from test_strongswan_radius import PASSWORD, POOL, RADIUS_SECRET, USER, VIP

from tunsec.bench.netns import TwoHosts, wait_until
from tunsec.services.ike.radius_edge import MIN_SESSION_TIMEOUT

pytestmark = [
    pytest.mark.interop,
    requires_strongswan,
    requires_freeradius,
]

PINGS = 5
ECHO = 84   # an echo request or reply of ping's default 56 data bytes: IPv4 20 + ICMP 8 + 56
CLASS = "0x" + b"vpn-gold".hex()   # in the Access-Accept: accounting must echo it (RFC 2865 5.25)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.new_ca(tmp_path_factory, "pki-radius-acct")


@pytest.fixture
def topo() -> Iterator[TwoHosts]:
    with TwoHosts() as t:
        yield t


# the gateway's DPD: a liveness check after 1 s without traffic, given up 1 s later
DPD_CONN = "    dpd_delay = 1s\n"
FAST_IKE = "  retransmit_timeout = 0.5\n  retransmit_base = 1.0\n  retransmit_tries = 1\n"


def setup(topo: TwoHosts, pki: Pki, gateway_child: str = "",
          dpd: bool = False, session_timeout: int = 0) -> tuple[TunsecIke, Charon, FreeRadius]:
    """``session_timeout``: the Access-Accept's Session-Timeout (0: none)."""
    reply = f"Class := {CLASS}" + (f", Session-Timeout := {session_timeout}" if session_timeout else "")
    radius = FreeRadius(topo, topo.a, RADIUS_SECRET, {USER: PASSWORD}, {USER: reply})
    radius.start()
    gateway = TunsecIke(topo, GatewayConn(topo.a, topo.b, method="eap-radius", pools=(Pool("rw4", POOL),),
                                          radius_secret=RADIUS_SECRET, accounting=True,
                                          extra_child=gateway_child, extra_conn=DPD_CONN if dpd else ""),
                        pki=pki, tunsec_extra=FAST_IKE if dpd else "")
    client = Charon(topo, RoadWarriorConn(topo.b, topo.a, method="eap-mschapv2", eap_user=USER, psk=PASSWORD,
                                          vips=("0.0.0.0",)), pki=pki)
    client.start()
    gateway.start()
    return gateway, client, radius


def records_of(radius: FreeRadius, status: str) -> list[dict[str, str]]:
    return [r for r in radius.accounting_records() if r.get("Acct-Status-Type") == status]


def reload_accounting(gateway: TunsecIke, on: bool) -> None:
    """``tunsec reload`` of the gateway's config with ``accounting = yes`` or ``no``."""
    gateway.write(accounting=on)
    # tunsec reads the config and its key as its own user now (it dropped root after starting)
    gid = grp.getgrnam("tunsec").gr_gid
    for path in [gateway.dir, *gateway.dir.rglob("*")]:
        os.chown(path, -1, gid)
        path.chmod(path.stat().st_mode | (0o050 if path.is_dir() else 0o040))
    reload = gateway.cli("reload")
    assert reload.returncode == 0, f"{reload.stdout}{reload.stderr}\n{gateway.log_tail()}"


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
    (theirs,) = client.sas()[CONN]["child-sas"].values()   # the client's kernel counts each packet too

    client.swanctl_ok("--terminate", "--ike", CONN)
    assert wait_until(lambda: bool(records_of(radius, "Stop")), 10), \
        f"no Accounting Stop at FreeRADIUS:\n{radius.log_text()[-3000:]}\ntunsec:\n{gateway.log_tail()}"
    (start,), (stop,) = records_of(radius, "Start"), records_of(radius, "Stop")
    on = radius.accounting_records()[0]   # before the Start (FreeRADIUS writes in the order it got them)
    assert (on["Acct-Status-Type"], on["NAS-Identifier"], on["NAS-IP-Address"]) == \
        ("Accounting-On", "tunsec", topo.a.outer4), on
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
    # exactly what went through: every packet the client sent on the Child SA, every one it got
    # (the pings answered, nothing is in flight when it is asked, nothing moves after)
    assert (int(stop["Acct-Input-Packets"]), int(stop["Acct-Output-Packets"])) == \
        (int(theirs["packets-out"]), int(theirs["packets-in"])), (stop, theirs)
    assert (int(stop["Acct-Input-Octets"]), int(stop["Acct-Output-Octets"])) == \
        (int(theirs["bytes-out"]), int(theirs["bytes-in"])), (stop, theirs)
    assert "Acct-Input-Octets" not in start, start

    def settled() -> bool:
        return bool(gateway.status()["radius"]["accounting"]["sessions"] == 0)
    assert wait_until(settled, 10)
    acct = gateway.status()["radius"]["accounting"]
    assert (acct["requests"], acct["responses"], acct["failed"], acct["bad"]) == (3, 3, 0, 0), acct
    health = gateway.status()["radius"]["servers"]["fr"]
    assert (health["auth"]["state"], health["acct"]["state"], health["acct"]["address"]) == \
        ("up", "up", "127.0.0.1:1813"), health
    assert RADIUS_SECRET not in gateway.log_text()


def test_gateway_shutdown_stops_the_session_with_nas_reboot_then_sends_accounting_off(
        topo: TwoHosts, pki: Pki) -> None:
    gateway, client, radius = setup(topo, pki)
    r = client.initiate()
    assert r.returncode == 0, f"swanctl --initiate: {r.stdout[-3000:]}{r.stderr}\ntunsec:\n{gateway.log_tail()}"
    gateway.wait_established()
    assert wait_until(lambda: bool(records_of(radius, "Start")), 10), \
        f"no Accounting Start at FreeRADIUS:\n{radius.log_text()[-3000:]}\ntunsec:\n{gateway.log_tail()}"
    gateway.stop()   # SIGTERM: a graceful shutdown
    assert wait_until(lambda: bool(records_of(radius, "Accounting-Off")), 10), \
        f"no Accounting-Off at FreeRADIUS:\n{radius.log_text()[-3000:]}\ntunsec:\n{gateway.log_tail()}"
    statuses = [rec["Acct-Status-Type"] for rec in radius.accounting_records()]
    assert statuses == ["Accounting-On", "Start", "Stop", "Accounting-Off"], statuses
    (start,), (stop,) = records_of(radius, "Start"), records_of(radius, "Stop")
    assert stop["Acct-Session-Id"] == start["Acct-Session-Id"] and stop["User-Name"] == USER, stop
    assert stop["Acct-Terminate-Cause"] == "NAS-Reboot", stop


def test_a_reload_that_turns_accounting_off_stops_the_session_with_admin_reset_then_sends_off(
        topo: TwoHosts, pki: Pki) -> None:
    """The IKE SA stays up (only radius { } changed); its accounting session ends at the server."""
    gateway, client, radius = setup(topo, pki)
    r = client.initiate()
    assert r.returncode == 0, f"swanctl --initiate: {r.stdout[-3000:]}{r.stderr}\ntunsec:\n{gateway.log_tail()}"
    sa = gateway.wait_established()
    assert wait_until(lambda: bool(records_of(radius, "Start")), 10), \
        f"no Accounting Start at FreeRADIUS:\n{radius.log_text()[-3000:]}\ntunsec:\n{gateway.log_tail()}"
    reload_accounting(gateway, False)
    assert wait_until(lambda: bool(records_of(radius, "Accounting-Off")), 10), \
        f"no Accounting-Off at FreeRADIUS:\n{radius.log_text()[-3000:]}\ntunsec:\n{gateway.log_tail()}"
    statuses = [rec["Acct-Status-Type"] for rec in radius.accounting_records()]
    assert statuses == ["Accounting-On", "Start", "Stop", "Accounting-Off"], statuses
    (stop,) = records_of(radius, "Stop")
    assert stop["Acct-Terminate-Cause"] == "Admin-Reset" and stop["User-Name"] == USER, stop
    (still,) = gateway.established()
    assert (still["spi_i"], still["spi_r"]) == (sa["spi_i"], sa["spi_r"]), still   # the IKE SA was not touched
    assert "accounting" not in gateway.status()["radius"], gateway.status()["radius"]


def test_a_reload_that_turns_accounting_off_then_on_again_starts_a_new_session_for_the_ike_sa_still_up(
        topo: TwoHosts, pki: Pki) -> None:
    """Off: the session's Stop (Admin-Reset) and the Accounting-Off; on again: an Accounting-On
    after that Off, then a Start for the IKE SA that stayed up, a new session (its own
    Acct-Session-Id) with the same user, address and the Access-Accept's Class; its Stop counts
    the traffic from that Start on."""
    gateway, client, radius = setup(topo, pki)
    r = client.initiate()
    assert r.returncode == 0, f"swanctl --initiate: {r.stdout[-3000:]}{r.stderr}\ntunsec:\n{gateway.log_tail()}"
    sa = gateway.wait_established()
    assert wait_until(lambda: bool(records_of(radius, "Start")), 10), \
        f"no Accounting Start at FreeRADIUS:\n{radius.log_text()[-3000:]}\ntunsec:\n{gateway.log_tail()}"
    assert topo.wait_ping(topo.b, topo.a.inner4, src=VIP, timeout=10)   # usage of the first session
    reload_accounting(gateway, False)
    assert wait_until(lambda: bool(records_of(radius, "Accounting-Off")), 10), \
        f"no Accounting-Off at FreeRADIUS:\n{radius.log_text()[-3000:]}\ntunsec:\n{gateway.log_tail()}"
    reload_accounting(gateway, True)
    assert wait_until(lambda: len(records_of(radius, "Start")) == 2, 10), \
        f"no second Start at FreeRADIUS:\n{radius.log_text()[-3000:]}\ntunsec:\n{gateway.log_tail()}"
    (still,) = gateway.established()
    assert (still["spi_i"], still["spi_r"]) == (sa["spi_i"], sa["spi_r"]), still   # up all along
    assert topo.ping(topo.b, topo.a.inner4, count=PINGS, src=VIP)
    client.swanctl_ok("--terminate", "--ike", CONN)
    assert wait_until(lambda: len(records_of(radius, "Stop")) == 2, 10), \
        f"no second Stop at FreeRADIUS:\n{radius.log_text()[-3000:]}\ntunsec:\n{gateway.log_tail()}"

    statuses = [rec["Acct-Status-Type"] for rec in radius.accounting_records()]
    assert statuses == ["Accounting-On", "Start", "Stop", "Accounting-Off", "Accounting-On", "Start", "Stop"], \
        statuses
    (first, again), (reset, ended) = records_of(radius, "Start"), records_of(radius, "Stop")
    assert reset["Acct-Session-Id"] == first["Acct-Session-Id"] and reset["Acct-Terminate-Cause"] == "Admin-Reset"
    assert int(reset["Acct-Input-Octets"]) >= ECHO, reset   # the first wait_ping's echo, before the reload
    assert again["Acct-Session-Id"] not in (first["Acct-Session-Id"], "")
    for record in (again, ended):
        assert (record["User-Name"], record["Framed-IP-Address"], record["Class"]) == (USER, VIP, CLASS), record
        assert record["Calling-Station-Id"] == f"{topo.b.outer4}[4500]", record
    assert ended["Acct-Session-Id"] == again["Acct-Session-Id"], ended
    assert ended["Acct-Terminate-Cause"] == "User-Request", ended
    # from the second Start on: the PINGS echoes each way, not the first session's traffic too
    assert PINGS * ECHO <= int(ended["Acct-Input-Octets"]) < int(reset["Acct-Input-Octets"]) + PINGS * ECHO, ended
    assert int(ended["Acct-Output-Packets"]) >= PINGS, ended
    ons = records_of(radius, "Accounting-On")
    assert ons[0]["Acct-Session-Id"] != ons[1]["Acct-Session-Id"], ons   # another run


def test_a_client_that_stops_answering_is_closed_by_dpd_and_its_stop_says_lost_service(
        topo: TwoHosts, pki: Pki) -> None:
    """The client's namespace drops everything it sends (it is gone, no DELETE): the gateway's
    DPD gives the IKE SA up and the Stop says Lost-Service, as strongSwan's eap-radius sends for
    ALERT_RETRANSMIT_SEND_TIMEOUT (not Idle-Timeout nor Lost-Carrier)."""
    gateway, client, radius = setup(topo, pki, dpd=True)
    r = client.initiate()
    assert r.returncode == 0, f"swanctl --initiate: {r.stdout[-3000:]}{r.stderr}\ntunsec:\n{gateway.log_tail()}"
    gateway.wait_established()
    assert wait_until(lambda: bool(records_of(radius, "Start")), 10), \
        f"no Accounting Start at FreeRADIUS:\n{radius.log_text()[-3000:]}\ntunsec:\n{gateway.log_tail()}"
    table = "gone"
    for rule in (["add", "table", "inet", table],
                 ["add", "chain", "inet", table, "out", "{ type filter hook output priority 0 ; policy drop ; }"]):
        topo.run(topo.b, ["nft", *rule], check=True)
    assert wait_until(lambda: bool(records_of(radius, "Stop")), 15), \
        f"no Accounting Stop at FreeRADIUS:\n{radius.log_text()[-3000:]}\ntunsec:\n{gateway.log_tail()}"
    (start,), (stop,) = records_of(radius, "Start"), records_of(radius, "Stop")
    assert stop["Acct-Session-Id"] == start["Acct-Session-Id"], stop
    assert stop["Acct-Terminate-Cause"] == "Lost-Service", stop
    assert not gateway.established()


def test_the_accepts_session_timeout_ends_the_ike_sa_and_its_stop_says_session_timeout(
        topo: TwoHosts, pki: Pki) -> None:
    """FreeRADIUS's Access-Accept says Session-Timeout := MIN_SESSION_TIMEOUT (10 s, the least the
    gateway takes): the gateway deletes the IKE SA then, the client is told (its SA goes too), and
    the Stop says Session-Timeout."""
    gateway, client, radius = setup(topo, pki, session_timeout=MIN_SESSION_TIMEOUT)
    r = client.initiate()
    assert r.returncode == 0, f"swanctl --initiate: {r.stdout[-3000:]}{r.stderr}\ntunsec:\n{gateway.log_tail()}"
    gateway.wait_established()
    assert wait_until(lambda: bool(records_of(radius, "Stop")), MIN_SESSION_TIMEOUT + 15), \
        f"no Accounting Stop at FreeRADIUS:\n{radius.log_text()[-3000:]}\ntunsec:\n{gateway.log_tail()}"
    (start,), (stop,) = records_of(radius, "Start"), records_of(radius, "Stop")
    assert stop["Acct-Session-Id"] == start["Acct-Session-Id"], stop
    assert stop["Acct-Terminate-Cause"] == "Session-Timeout", stop
    assert int(stop["Acct-Session-Time"]) >= MIN_SESSION_TIMEOUT - 1, stop
    assert not gateway.established()
    assert wait_until(lambda: not client.sas().get(CONN), 10), client.sas()   # told by the DELETE
    assert "Session-Timeout ran out" in gateway.log_text()


def test_the_stop_after_a_worker_restart_still_counts_the_traffic_before_it(topo: TwoHosts, pki: Pki) -> None:
    """The gateway's worker is killed (SIGKILL) after PINGS echoes went through and a status query
    (its DUMP) saw them; the daemon starts a new worker and renegotiates the Child SA into it,
    whose counters start from 0. The Stop still has the echoes from before the restart."""
    gateway, client, radius = setup(topo, pki)
    r = client.initiate()
    assert r.returncode == 0, f"swanctl --initiate: {r.stdout[-3000:]}{r.stderr}\ntunsec:\n{gateway.log_tail()}"
    gateway.wait_established()
    assert topo.wait_ping(topo.b, topo.a.inner4, src=VIP, timeout=10)
    assert topo.ping(topo.b, topo.a.inner4, count=PINGS, src=VIP)
    old = gateway.status()["worker"]["pid"]   # `tunsec status`: a DUMP accounting sees too
    os.kill(old, signal.SIGKILL)

    def restarted() -> bool:
        with contextlib.suppress(Exception):   # the status fails while no worker runs
            return bool(gateway.status()["worker"]["pid"] not in (old, None))
        return False
    assert wait_until(restarted, 10), f"the worker was not restarted:\n{gateway.log_tail()}"
    assert topo.wait_ping(topo.b, topo.a.inner4, src=VIP, timeout=15), \
        f"no traffic after the worker restart:\n{gateway.log_tail()}"

    client.swanctl_ok("--terminate", "--ike", CONN)
    assert wait_until(lambda: bool(records_of(radius, "Stop")), 10), \
        f"no Accounting Stop at FreeRADIUS:\n{radius.log_text()[-3000:]}\ntunsec:\n{gateway.log_tail()}"
    (stop,) = records_of(radius, "Stop")
    # before the restart the first wait_ping's echo and PINGS more, after it at least one: each way
    sent = (PINGS + 2) * ECHO
    assert int(stop["Acct-Input-Octets"]) >= sent and int(stop["Acct-Output-Octets"]) >= sent, stop
    assert int(stop["Acct-Input-Packets"]) >= PINGS + 2 and int(stop["Acct-Output-Packets"]) >= PINGS + 2, stop


def test_the_stop_counts_a_child_sa_the_gateway_worker_ended_at_its_hard_lifetime(topo: TwoHosts, pki: Pki) -> None:
    """The gateway's Child SA is never rekeyed and lives LIFE seconds: then the gateway's worker
    removes its SAs by itself, and the gateway deletes the Child SA.  Nothing read their counters
    after the pings (no Interim-Update, no status query): only the worker's EXPIREs carry them, and
    the Stop has the pings (it had none of them when the EXPIRE carried no counters)."""
    life = 12   # seconds: the pings are done well before it ends
    gateway, client, radius = setup(topo, pki, f"        rekey_time = 0\n        life_time = {life}s\n")
    r = client.initiate()
    assert r.returncode == 0, f"swanctl --initiate: {r.stdout[-3000:]}{r.stderr}\ntunsec:\n{gateway.log_tail()}"
    gateway.wait_established()
    assert topo.wait_ping(topo.b, topo.a.inner4, src=VIP, timeout=10)
    assert topo.ping(topo.b, topo.a.inner4, count=PINGS, src=VIP)
    gateway.wait_log(r"CHILD_SA \S+ reached its hard limit; deleting", timeout=life + 10)
    gateway.wait_log(r"CHILD_SA \S+ \S+_i \S+_o deleted", timeout=10)
    assert (up := gateway.ike_sas()) and up[0]["usage"]["octets_out"] >= (PINGS + 1) * ECHO, up

    client.swanctl_ok("--terminate", "--ike", CONN)
    assert wait_until(lambda: bool(records_of(radius, "Stop")), 10), \
        f"no Accounting Stop at FreeRADIUS:\n{radius.log_text()[-3000:]}\ntunsec:\n{gateway.log_tail()}"
    (stop,) = records_of(radius, "Stop")
    sent = (PINGS + 1) * ECHO
    assert int(stop["Acct-Input-Octets"]) >= sent and int(stop["Acct-Output-Octets"]) >= sent, stop
    assert int(stop["Acct-Input-Packets"]) >= PINGS + 1 and int(stop["Acct-Output-Packets"]) >= PINGS + 1, stop
