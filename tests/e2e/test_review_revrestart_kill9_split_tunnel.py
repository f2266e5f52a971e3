"""Review revrestart F3: after a kill -9 of the control process (a crash, the OOM killer) a tunnel
that is not a full tunnel sends its traffic in clear.  Its remote networks are routes of the TUN
tunsec made; the worker dies with the control process, the TUN with its last descriptor, and its
routes with it: the host's default route then carries the protected networks' traffic, unencrypted,
until tunsec is started again.  Only a full tunnel got standing routes into the kill-switch device
(review revfull F3, dataplane/killswitch.py); a site-to-site tunnel's or a split road warrior's
networks have none.  (strongSwan's kernel policies outlive a charon crash: the traffic stays under
IPsec or is dropped.)

Real parts: tunsec in namespace a (a site-to-site connection, remote_ts 10.2.0.0/24, the peer's
inner network), the router r that forwards plain IP between a and b, b's inner address 10.2.0.1.
Before the kill the ping to 10.2.0.1 has no SA (b runs no IKE) and gets no answer; after it the
same ping is answered: it crossed the router in clear, and so did the answer."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest
from ike_peers import Conn, TunsecIke
from routed_hosts import RoutedHosts

from tunsec.bench.netns import wait_until


@pytest.fixture
def topo() -> Iterator[RoutedHosts]:
    t = RoutedHosts(prefix="revrst")
    with t:
        # the router knows both sites' inner networks: what a LAN behind a gateway looks like to the uplink
        t.run(t.r, ["ip", "route", "add", t.a.inner_net4, "via", t.a.outer4])
        t.run(t.r, ["ip", "route", "add", t.b.inner_net4, "via", t.b.outer4])
        yield t


def test_a_killed_site_to_site_tunnel_sends_nothing_in_clear(topo: RoutedHosts) -> None:
    """On main: the ping from 10.1.0.1 to 10.2.0.1 (the tunnel's remote_ts) is answered after the kill:
    it left by the uplink unencrypted.  Expected: dropped until tunsec runs again, as a full tunnel's
    traffic is (standing routes of the tunnel's networks, or prohibit routes, that outlive the TUN)."""
    client = TunsecIke(topo, Conn(topo.a, topo.b))   # remote_ts: b's inner 10.2.0.0/24
    client.start()
    route = topo.run(topo.a, ["ip", "route", "get", topo.b.inner4]).stdout
    assert "dev tunsec0" in route, route
    assert not topo.ping(topo.a, topo.b.inner4, src=topo.a.inner4)   # no SA: held, nothing in clear
    assert client.proc is not None
    os.kill(client.proc.pid, signal.SIGKILL)
    client.proc.wait(timeout=10)
    client.proc = None
    # the worker ends with its pipe, and the TUN with its last descriptor
    assert wait_until(lambda: "tunsec0" not in topo.run(topo.a, ["ip", "link"]).stdout, 15)
    route = topo.run(topo.a, ["ip", "route", "get", topo.b.inner4], check=False)
    leaked = topo.ping(topo.a, topo.b.inner4, src=topo.a.inner4)
    assert not leaked, (f"after kill -9 the tunnel's network {topo.b.inner_net4} is reached in clear: "
                        f"{route.stdout}{route.stderr}")
