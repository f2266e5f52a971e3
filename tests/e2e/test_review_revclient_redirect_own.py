"""Review revclient (s20) R1, with a proof: a REDIRECT to an address of the client's own host is followed
when no connection names that address in ``local_addrs``.

address_role.refused_address refuses "this host's own" addresses, but the engine knows the host only
by the connections' configured ``local_addrs`` (role "own") and the IKE SA's local address: any other
address of the host (a second interface, a LAN address on lo or a bridge, a container bridge's
172.17.0.1) is no role at all.  A REDIRECT in IKE_SA_INIT, which anyone on the path may forge with the
request's nonce, then sends the client's next IKE_SA_INIT (and, were something on the host to answer,
its identity and AUTH) to the host itself.  Here the gateway sends the REDIRECT (``redirect_on =
init``), its bytes are what a forger would send; the target is the client host's 10.1.0.1 (on lo).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from ike_peers import TunsecIke
from roadwarrior import GatewayConn, Pool, RoadWarriorConn
from routed_hosts import RoutedHosts

from tunsec.bench.netns import wait_until


@pytest.fixture
def topo() -> Iterator[RoutedHosts]:
    t = RoutedHosts(prefix="revclient")
    with t:
        yield t


def test_a_redirect_to_an_address_of_the_clients_own_host_is_not_followed(topo: RoutedHosts) -> None:
    own = topo.a.inner4   # an address of the client's host (on lo), not in any local_addrs
    redirect = f"    redirect_to = {own}\n    redirect_on = init\n"
    gateway = TunsecIke(topo, GatewayConn(topo.b, topo.a, pools=(Pool("rw4", "10.3.0.0/24"),), extra_conn=redirect))
    client = TunsecIke(topo, RoadWarriorConn(topo.a, topo.b, vips=("0.0.0.0",), start_action="start"))
    gateway.start()
    client.start()
    assert wait_until(lambda: own in client.log_text(), 20), client.log_tail()
    wait_until(lambda: "REDIRECT" in client.log_text() or f"to {own}" in client.log_text(), 5)
    log = client.log_text()
    assert f"redirected us to {own}" not in log, \
        f"the client followed a REDIRECT to its own host's address {own}:\n{client.log_tail()}"
    assert "REDIRECT not followed" in log, client.log_tail()
