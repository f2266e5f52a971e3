"""(review revclient s20 F3) An address the client's host gets after tunsec started counts as its own
too: the IKE service's list of the host's addresses (services/ike/host_addresses.py) follows the
address watch (addrwatch.py), so a REDIRECT to it is refused as one to an address the host had at
start (e2e/test_review_revclient_redirect_own.py).

The gateway sends the REDIRECT in IKE_SA_INIT (``redirect_on = init``), its bytes are what an
on-path forger would send; the target is an address added to the client host's lo once its daemon
is up, before the client initiates.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from ike_peers import CHILD, TunsecIke
from roadwarrior import GatewayConn, Pool, RoadWarriorConn
from routed_hosts import RoutedHosts

from tunsec.bench.netns import wait_until

LATER = "10.1.0.77"   # in no connection's local_addrs, nor on the client host when tunsec starts


@pytest.fixture
def topo() -> Iterator[RoutedHosts]:
    t = RoutedHosts(prefix="fixclient")
    with t:
        yield t


def test_a_redirect_to_an_address_the_client_host_got_since_start_is_not_followed(topo: RoutedHosts) -> None:
    redirect = f"    redirect_to = {LATER}\n    redirect_on = init\n"
    gateway = TunsecIke(topo, GatewayConn(topo.b, topo.a, pools=(Pool("rw4", "10.3.0.0/24"),), extra_conn=redirect))
    client = TunsecIke(topo, RoadWarriorConn(topo.a, topo.b, vips=("0.0.0.0",), start_action="none"))
    gateway.start()
    client.start()
    topo.run(topo.a, ["ip", "addr", "add", f"{LATER}/32", "dev", "lo"])
    # the service's debug line once its list has the address (the watch's burst settled, the dump done)
    assert wait_until(lambda: f"+{LATER}" in client.log_text(), 20), client.log_tail()
    r = client.cli("initiate", "--child", CHILD)
    assert r.returncode == 0 or "REDIRECT" in r.stdout + r.stderr, r.stdout + r.stderr
    assert wait_until(lambda: "REDIRECT not followed" in client.log_text(), 20), client.log_tail()
    log = client.log_text()
    assert f"REDIRECT not followed: {LATER} is an address of this host" in log, client.log_tail()
    assert f"redirected us to {LATER}" not in log, client.log_tail()
