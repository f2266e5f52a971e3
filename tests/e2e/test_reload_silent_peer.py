"""`tunsec reload` removing a connection whose peer does not answer the DELETE (review revreload F1):
the removed connection's Child SAs and policies leave A's worker at once, while its IKE SA waits
(deleting) for an answer that never comes; before, they stayed, and carried traffic, until the
DELETE's retransmissions gave up (~165 s).  B's IKE to A is dropped by an nftables rule (its ESP,
UDP 4500 without the non-ESP marker, passes: x keeps carrying pings)."""

from __future__ import annotations

import grp
import os
from collections.abc import Iterator

import pytest
from ike_peers import Conn, TunsecIke
from test_reload import names_up, write

from tunsec.bench.netns import TwoHosts, wait_until

# B's IKE out: UDP to 500, and to 4500 with the non-ESP marker (four zero octets) after the UDP header
SILENCE_IKE = [["add", "table", "inet", "fixreload"],
               ["add", "chain", "inet", "fixreload", "out", "{ type filter hook output priority 0 ; }"],
               ["add", "rule", "inet", "fixreload", "out", "udp", "dport", "500", "drop"],
               ["add", "rule", "inet", "fixreload", "out", "udp", "dport", "4500", "@th,64,32", "0", "drop"]]


@pytest.fixture
def topo() -> Iterator[TwoHosts]:
    with TwoHosts(ipv6=False) as t:
        yield t


def y_policies(side: TunsecIke) -> list[str]:
    return [p["selector"] for p in side.status()["policies"] if "10.2.5.0-" in p["selector"]]


def test_a_removed_connections_child_sas_leave_at_once_though_its_peer_is_silent(topo: TwoHosts) -> None:
    a = TunsecIke(topo, Conn(topo.a, topo.b))
    b = TunsecIke(topo, Conn(topo.b, topo.a))
    write(a, topo.b, "xy", "start")
    write(b, topo.a, "xy", "none")
    b.start()
    a.start()
    assert wait_until(lambda: names_up(a) == names_up(b) == ["x", "y"], 20), (a.log_tail(), b.log_tail())
    assert y_policies(a)
    for rule in SILENCE_IKE:   # in B's namespace: gone with it
        topo.run(topo.b, ["nft", *rule])

    write(a, topo.b, "x", "start")
    os.chown(a.conf, -1, grp.getgrnam("tunsec").gr_gid)   # tunsec reads it as its user since it started
    a.conf.chmod(0o640)
    r = a.cli("reload")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "IKE connections removed: y", r.stdout
    # gone well before the DELETE's retransmissions (4 s, then 1.8 times longer each) could give up
    assert wait_until(lambda: not y_policies(a), 20), a.status()["policies"]
    (y,) = [sa for sa in a.ike_sas() if sa["name"] == "y"]
    assert y["state"] == "deleting" and y["children"] == [], y
    assert topo.ping(topo.a, topo.b.inner4, count=3, src=topo.a.inner4)   # x carries on
    b.wait_log(r"y: IKE SA closed: deleted by peer")   # B was told; its answer is what is lost
