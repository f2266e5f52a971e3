"""tunsec <-> tunsec on custom IKE ports (unprivileged IKE: local_port >= 1024 on both sides).

After IKE_SA_INIT the initiator floats as strongSwan does: to a peer on a custom port it keeps
that port, so towards a tunsec peer (ESP only on port 4500) the initiator's remote_port is 4500:
IKE_SA_INIT goes to the peer's worker with the non-ESP marker and everything stays there. A
remote_port the peer's IKE listens on instead brings the IKE SA up but the peer drops the ESP
that arrives there: counted and said, and warned about when the initiator starts.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from ike_peers import PortConn, TunsecIke, ping_both_ways

from tunsec.bench.netns import TwoHosts, wait_until

PORT_A, PORT_B = 1500, 1600


@pytest.fixture
def topo() -> Iterator[TwoHosts]:
    with TwoHosts(ipv6=False) as t:
        yield t


def pair(topo: TwoHosts, remote_port: int) -> tuple[TunsecIke, TunsecIke]:
    a = TunsecIke(topo, PortConn(topo.a, topo.b, start_action="start", local_port=PORT_A, remote_port=remote_port))
    b = TunsecIke(topo, PortConn(topo.b, topo.a, local_port=PORT_B, remote_port=PORT_A))
    b.start()
    a.start()
    return a, b


def test_initiator_on_a_custom_port_to_the_peers_4500(topo: TwoHosts) -> None:
    a, b = pair(topo, remote_port=4500)
    sa = a.wait_established()
    assert sa["remote"] == f"{topo.b.outer4}[4500]"
    assert b.wait_established()["remote"] == f"{topo.a.outer4}[4500]"
    ping_both_ways(topo)
    assert "stay on the peer's port" not in a.log_text()


def test_initiator_on_a_custom_port_to_the_peers_ike_port(topo: TwoHosts) -> None:
    a, b = pair(topo, remote_port=PORT_B)
    a.wait_log(rf"IKE and ESP in UDP stay on the peer's port {PORT_B} after IKE_SA_INIT")
    assert a.wait_established()["remote"] == f"{topo.b.outer4}[{PORT_B}]"
    topo.ping(topo.a, topo.b.inner4, count=2, src=topo.a.inner4)      # A's ESP goes to B's IKE port
    assert wait_until(lambda: b.status()["ike_drops"]["esp_on_ike_port"] >= 1, 10), b.log_tail()
    b.wait_log(rf"ESP in UDP from {topo.a.outer4} port 4500 arrived on IKE port {PORT_B}")
