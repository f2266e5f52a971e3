"""(review revfull F2) a full-tunnel client follows an (unauthenticated) IKE_SA_INIT REDIRECT to any
address, which gets an exclude route; the redirected IKE SA never comes up, so no IkeSaDown sweeps the
route, and the address's traffic leaves in clear for as long as the client runs, its tunnel up.

A REDIRECT in the IKE_SA_INIT response is unauthenticated (RFC 5685 §5): all that ties it to the request
is the initiator's nonce, which every on-path observer has (the café's Wi-Fi, the very attacker a full
tunnel is for). h/fixfull made redirect.refused_target accept any target inside the client's full
tunnel. Here the gateway b itself sends the REDIRECT (``redirect_on = init``, ``redirect_to`` the
victim): its bytes are what an on-path forger would send, and the client cannot tell them apart.
The forger then goes away (b restarted without the redirect), the client tries b again and its tunnel
comes up; the victim's address must go through it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import tunsec_table
from ike_peers import CHILD, TunsecIke
from roadwarrior import GatewayConn, Pool, RoadWarriorConn
from routed_hosts import RoutedHosts

from tunsec.bench.netns import wait_until

VICTIM = "203.0.113.80"                 # say the user's mail server: not a gateway of anyone's
REDIRECT = f"    redirect_to = {VICTIM}\n    redirect_on = init\n"
FAST = "  retransmit_timeout = 1\n  retransmit_base = 1.0\n  retransmit_tries = 1\n"


@pytest.fixture
def topo() -> Iterator[RoutedHosts]:
    t = RoutedHosts(prefix="revfull")
    with t:
        yield t


def client_routes(topo: RoutedHosts) -> str:
    return tunsec_table.proto_routes(topo.a.ns)


def test_a_forged_init_redirect_does_not_route_its_target_around_the_full_tunnel(topo: RoutedHosts) -> None:
    gateway = TunsecIke(topo, GatewayConn(topo.b, topo.a, pools=(Pool("rw4", "10.3.0.0/24"),), local_ts="0.0.0.0/0",
                                          extra_conn=REDIRECT))
    client = TunsecIke(topo, RoadWarriorConn(topo.a, topo.b, vips=("0.0.0.0",), remote_ts="0.0.0.0/0",
                                             start_action="start", extra_conn="    keyingtries = 0\n"),
                       tunsec_extra=FAST)
    gateway.start()
    client.start()
    # the client met the REDIRECT: it either follows it (IKE to the victim) or refuses it
    assert wait_until(lambda: VICTIM in client.log_text(), 20), client.log_tail()
    wait_until(lambda: VICTIM in client_routes(topo), 5)
    # the forger is gone: the gateway answers as itself, the client's tunnel comes up
    gateway.stop()
    gateway.write(extra_conn="")
    gateway.start()
    if not wait_until(lambda: bool(client.established()), 10):   # it gave up (or refused): asked again
        r = client.cli("initiate", "--child", CHILD)
        assert r.returncode == 0, r.stdout + r.stderr
    client.wait_established(timeout=60)
    path = topo.run(topo.a, ["ip", "route", "get", VICTIM]).stdout
    assert "dev tunsec0" in path, (f"the tunnel is up, yet traffic to {VICTIM} leaves in clear: {path}"
                                   f"{client_routes(topo)}")
    client.stop()
    gateway.stop()
