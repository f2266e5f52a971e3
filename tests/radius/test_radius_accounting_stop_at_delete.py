"""Review revdelete F1: a session we deleted keeps being accounted, with an address given to another.

Since h/fixreload an IKE SA we delete (terminate, a reload's logout, RADIUS DAE, unique = replace, Session-
Timeout, ...) takes its Child SAs out of the worker and gives the peer's virtual IP leases back to the pool at
once (ike/sa_teardown.py): with a full pool, the next client of another identity is leased that address within
the second (policy/pools.py: the longest offline goes first). Its RADIUS accounting session, though, lives on
until the IKE SA closes, which for a peer that stays silent is when our DELETE's retransmissions give up (~165
s): Interim-Updates keep going every interval, each naming the session's user and its Framed-IP-Address, and
its Stop comes at the end. An accounting server (or a firewall that learns who is behind an address from
RADIUS accounting: user-to-IP mapping, RSSO) then sees two open sessions with one Framed-IP-Address, and an
Interim-Update of the deleted user's after the new user's Start maps the new user's traffic to the deleted
user; the deleted user's late Stop removes the mapping of the address the new user holds.

"What remains" (docs/issue9-coverage.md) names the late Stop, not the Interim-Updates nor that the
address is someone else's meanwhile.

The real IKE service and worker of test_ikeservice_peers.Gateway (the site authenticates with a PSK;
accounting started as eap-radius would), the site's answers lost, an accounting server on loopback."""
from __future__ import annotations

import asyncio

from test_ikeservice_delete_silent_peer import gateway_sa, silence
from test_ikeservice_peers import Gateway
from test_radius_accounting import serve, settings, until
from test_radius_messages import STATION

from tunsec.ike.sa import State
from tunsec.radius.accounting import Accounting

VIP = "10.3.0.1"
INTERVAL = 0.05


def test_no_interim_update_names_a_deleted_sessions_address_while_its_peer_is_silent() -> None:
    async def main() -> tuple[list[dict[str, object]], list[dict[str, object]], State]:
        server, port = await serve("answer")
        gw = Gateway(1)
        await gw.start()
        gw.connect(0)
        await gw.settle()
        svc = gw.service
        svc.accounting = Accounting(settings(port, interval=INTERVAL), svc._acct_dump, svc._acct_children)
        (child,) = gw.children_of(0)
        svc.accounting.start(child.ike, "site0", STATION, [VIP])
        await until(lambda: server.of("Interim-Update"))   # the session is accounted every INTERVAL
        silence(gw, 0)
        sa = gateway_sa(gw, 0)
        assert svc.terminate("gw").deleted == 1
        await gw.settle()
        assert gw.children_of(0) == [] and sa.state is State.DELETING   # out of the worker, lease given back
        await asyncio.sleep(0.1)   # anything the delete itself set off has gone out
        before = len(server.of("Interim-Update"))
        await asyncio.sleep(10 * INTERVAL)   # a few intervals of the ~165 s the IKE SA waits
        after = server.of("Interim-Update")[before:]
        stops = server.of("Stop")
        state = sa.state
        svc.accounting.close()
        server.transport.close()
        return after, stops, state

    after, stops, state = asyncio.run(main())
    assert state is State.DELETING   # the silent peer's IKE SA still waits for its DELETE's answer
    assert [(r.get("User-Name"), r.get("Framed-IP-Address")) for r in after] == [], \
        f"{len(after)} Interim-Updates of the deleted session, naming the address given back"
    # its Stop went when its Child SAs left and its address was given back, with their final counters
    assert [(r.get("User-Name"), r.get("Framed-IP-Address")) for r in stops] == [("site0", VIP)]
