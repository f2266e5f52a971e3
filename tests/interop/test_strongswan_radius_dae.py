"""RADIUS Dynamic Authorization (RFC 5176) against FreeRADIUS's radclient: a strongSwan road
warrior authenticates with eap-radius to a tunsec gateway with accounting and
``radius { dae { enable = yes } }`` (the setup of test_strongswan_radius_accounting.py); from
the RADIUS server's address (the default dae client), radclient sends a Disconnect-Request for
a user no IKE SA has and one for the client's EAP identity with another virtual IP
(Disconnect-NAK, Error-Cause Session-Context-Not-Found, nothing closed), one with the wrong
secret (no answer at all), one with a NAS-Port that is not the client's Start's (NAK), then one
for the client's EAP identity, virtual IP and the station attributes of its Start: the
Disconnect-ACK comes back, the client's IKE SA is gone (the gateway deleted it, the client was
told) and FreeRADIUS got the session's accounting Stop with Acct-Terminate-Cause Admin-Reset.

A user whose name is not ASCII (review revradius F1), "jörg": accounting's User-Name is the name
the Access-Request carried, "jörg" (UTF-8), not the log form of the peer's identity
("2:#6ac3b67267", Identity.__str__), which FreeRADIUS would file under a user it never
authenticated; a Disconnect-Request for the ASCII user literally named "2:#6ac3b67267" leaves him
connected (NAK), one for "jörg" ends his session.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon import requires
from freeradius import FreeRadius, requires_freeradius
from ike_peers import Charon, Pki, TunsecIke, requires_strongswan
from roadwarrior import GatewayConn, Pool, RoadWarriorConn
from test_strongswan_radius import PASSWORD, POOL, RADIUS_SECRET, USER, VIP

from tunsec.bench.netns import Host, TwoHosts, wait_until
from tunsec.ike.identity import Identity

pytestmark = [
    pytest.mark.interop,
    requires_strongswan,
    requires_freeradius,
    requires(None if shutil.which("radclient") else "radclient missing (apt install freeradius-utils)",
             "radclient"),
]

DAE_SECRET = "dae-shared-secret-9"
DAE_PORT = 3799   # in the gateway's own namespace: no one else's port
DAE = f'    enable = yes\n    listen = 127.0.0.1\n    secret = "{DAE_SECRET}"\n'
JORG = "jörg"
LOG_FORM = str(Identity.of_user(JORG.encode()))   # "2:#6ac3b67267": what a log line shows of him


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.new_ca(tmp_path_factory, "pki-radius-dae")


@pytest.fixture
def topo() -> Iterator[TwoHosts]:
    with TwoHosts() as t:
        yield t


def radclient(topo: TwoHosts, host: Host, code: str, secret: str, attributes: str, name: str) -> str:
    """radclient's output for one request (``code``: disconnect, coa) to the gateway's DAE port,
    from ``host``'s loopback; one try, a 2 s wait. Stamped now (the gateway requires Event-Timestamp
    by default; radclient sends only what its input names) unless ``attributes`` has one or ends
    with ``# unstamped``."""
    request = Path(topo.workdir) / f"{name}.radclient"
    if "Event-Timestamp" not in attributes and "# unstamped" not in attributes:
        attributes += f"Event-Timestamp = {int(time.time())}\n"
    request.write_text(attributes.replace("# unstamped\n", ""))
    r = topo.run(host, ["radclient", "-x", "-r", "1", "-t", "2", "-f", str(request),
                        f"127.0.0.1:{DAE_PORT}", code, secret], check=False, timeout=15)
    return r.stdout + r.stderr


def records(radius: FreeRadius, status: str) -> list[dict[str, str]]:
    return [rec for rec in radius.accounting_records() if rec.get("Acct-Status-Type") == status]


def logged_in(topo: TwoHosts, pki: Pki, user: str, charon_user: str = "") -> tuple[FreeRadius, TunsecIke, Charon]:
    """FreeRADIUS knows ``user``, the gateway has accounting and DAE, the client is logged in as
    ``user`` (``charon_user``: as swanctl.conf names it) and its Start is at FreeRADIUS; the DAE
    listener takes requests stamped now."""
    radius = FreeRadius(topo, topo.a, RADIUS_SECRET, {user: PASSWORD})
    radius.start()
    gateway = TunsecIke(topo, GatewayConn(topo.a, topo.b, method="eap-radius", pools=(Pool("rw4", POOL),),
                                          radius_secret=RADIUS_SECRET, accounting=True, dae=DAE), pki=pki)
    client = Charon(topo, RoadWarriorConn(topo.b, topo.a, method="eap-mschapv2", eap_user=charon_user or user,
                                          psk=PASSWORD, vips=("0.0.0.0",)), pki=pki)
    client.start()
    gateway.start()
    up = int(time.time())   # the DAE listener started in this second or before
    r = client.initiate()
    assert r.returncode == 0, f"swanctl --initiate: {r.stdout[-3000:]}{r.stderr}\ntunsec:\n{gateway.log_tail()}"
    assert gateway.wait_established()["remote_vips"] == [VIP]
    # a request stamped in the listener's start second is refused as a possible replay from before a
    # restart (docs/radius.md "Replays"): the DAC's requests here are stamped after it
    assert wait_until(lambda: int(time.time()) > up, 3)
    assert wait_until(lambda: bool(records(radius, "Start")), 10), f"no Accounting Start:\n{gateway.log_tail()}"
    return radius, gateway, client


def test_a_disconnect_request_from_radclient_deletes_the_users_ike_sa_acks_and_stops_its_accounting(
        topo: TwoHosts, pki: Pki) -> None:
    radius, gateway, client = logged_in(topo, pki, USER)

    def starts() -> list[dict[str, str]]:
        return records(radius, "Start")

    def stops() -> list[dict[str, str]]:
        return records(radius, "Stop")

    # a user without a session: NAK, Session-Context-Not-Found; the client's IKE SA stays
    out = radclient(topo, topo.a, "disconnect", DAE_SECRET, 'User-Name = "mallory"\n', "nak")
    assert "Received Disconnect-NAK" in out and "Session-Context-Not-Found" in out, out
    # without Event-Timestamp: NAK, Missing-Attribute (require_event_timestamp, the default)
    out = radclient(topo, topo.a, "disconnect", DAE_SECRET, f'User-Name = "{USER}"\n# unstamped\n', "unstamped")
    assert "Received Disconnect-NAK" in out and "Missing-Attribute" in out, out
    # the wrong secret: dropped, no answer
    out = radclient(topo, topo.a, "disconnect", "guessed-secret", f'User-Name = "{USER}"\n', "forged")
    assert "Received Disconnect" not in out and "No reply" in out, out
    assert len(gateway.established()) == 1 and client.sas(), client.list_sas()

    # another user's address: NAK (all the attributes must match)
    out = radclient(topo, topo.a, "disconnect", DAE_SECRET,
                    f'User-Name = "{USER}"\nFramed-IP-Address = 10.3.0.2\n', "other-vip")
    assert "Received Disconnect-NAK" in out and "Session-Context-Not-Found" in out, out
    # the station attributes the Start carried, one of them not the client's: NAK
    (start,) = starts()
    station = (f'Calling-Station-Id = "{start["Calling-Station-Id"]}"\nNAS-Port = {start["NAS-Port"]}\n'
               f'Called-Station-Id = "{start["Called-Station-Id"]}"\n')
    port = int(start["NAS-Port"])
    other_port = station.replace(f"NAS-Port = {port}", f"NAS-Port = {(port + 1) % 2**32}")
    out = radclient(topo, topo.a, "disconnect", DAE_SECRET, f'User-Name = "{USER}"\n{other_port}', "other-port")
    assert "Received Disconnect-NAK" in out and "Session-Context-Not-Found" in out, out
    assert len(gateway.established()) == 1 and client.sas(), client.list_sas()
    # the user's session by its name (in another case: names compare as strongSwan's, without
    # regard to it), leased address and the station attributes copied from its Start, naming the
    # gateway as accounting does (NAS-IP-Address), with a Message-Authenticator (radclient computes
    # it for a 0x00 value)
    out = radclient(topo, topo.a, "disconnect", DAE_SECRET,
                    f'User-Name = "{USER.upper()}"\nFramed-IP-Address = {VIP}\nNAS-IP-Address = {topo.a.outer4}\n'
                    f'{station}Message-Authenticator = 0x00\n', "ack")
    assert "Received Disconnect-ACK" in out, f"{out}\ntunsec:\n{gateway.log_tail()}"
    assert wait_until(lambda: not client.sas(), 10), \
        f"the client's IKE SA is still up:\n{client.list_sas()}\ntunsec:\n{gateway.log_tail()}"
    assert wait_until(lambda: not gateway.ike_sas(), 10), gateway.ike_sas()
    assert wait_until(lambda: bool(stops()), 10), \
        f"no Accounting Stop at FreeRADIUS:\n{radius.log_text()[-3000:]}\ntunsec:\n{gateway.log_tail()}"
    (stop,) = stops()
    assert (stop["Acct-Session-Id"], stop["User-Name"]) == (start["Acct-Session-Id"], USER), stop
    assert stop["Acct-Terminate-Cause"] == "Admin-Reset", stop

    dae = gateway.status()["radius"]["dae"]
    assert (dae["listen"], dae["disconnect_acks"], dae["disconnect_naks"], dae["sessions_closed"], dae["bad"],
            dae["unstamped"]) == (f"127.0.0.1:{DAE_PORT}", 1, 3, 1, 1, 1), dae
    log = gateway.log_text()
    assert DAE_SECRET not in log and "guessed-secret" not in log
    assert re.search(r"RADIUS DAE: Disconnect-Request from 127\.0\.0\.1:\d+ for user 'ALICE': closing 1 IKE SA",
                     log), log[-3000:]


def test_accounting_and_a_disconnect_request_name_a_user_that_is_not_ascii_by_his_name(
        topo: TwoHosts, pki: Pki) -> None:
    assert LOG_FORM != JORG and LOG_FORM.isascii()
    # swanctl takes printable ASCII only: his name as strongSwan's typed hex identity (quoted: "#"
    # begins a comment in swanctl.conf)
    radius, gateway, client = logged_in(topo, pki, JORG, f'"fqdn:#{JORG.encode().hex()}"')
    (start,) = records(radius, "Start")
    # main: "2:#6ac3b67267"
    assert start["User-Name"] == JORG, start

    # main: ACK, and jörg's IKE SA closed: the ASCII user named like his log form is another user
    out = radclient(topo, topo.a, "disconnect", DAE_SECRET, f'User-Name = "{LOG_FORM}"\n', "log-form")
    assert "Received Disconnect-NAK" in out and "Session-Context-Not-Found" in out, out
    assert len(gateway.established()) == 1 and client.sas(), client.list_sas()

    out = radclient(topo, topo.a, "disconnect", DAE_SECRET, f'User-Name = "{JORG}"\n', "jorg")
    assert "Received Disconnect-ACK" in out, f"{out}\ntunsec:\n{gateway.log_tail()}"
    assert wait_until(lambda: not client.sas(), 10), \
        f"the client's IKE SA is still up:\n{client.list_sas()}\ntunsec:\n{gateway.log_tail()}"
    assert wait_until(lambda: bool(records(radius, "Stop")), 10), \
        f"no Accounting Stop at FreeRADIUS:\n{radius.log_text()[-3000:]}\ntunsec:\n{gateway.log_tail()}"
    (stop,) = records(radius, "Stop")
    assert (stop["Acct-Session-Id"], stop["User-Name"], stop["Acct-Terminate-Cause"]) == \
        (start["Acct-Session-Id"], JORG, "Admin-Reset"), stop
