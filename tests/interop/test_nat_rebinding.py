"""NAT rebinding (RFC 7296 §2.23) end to end: a strongSwan client behind a NAT whose mapping
changes, against the tunsec gateway.

StarHosts' site A is the client; an iptables SNAT in A's namespace (postrouting, to A's second
address) is its NAT.  The mapping changes mid-ping: the rule now maps to a third address and A's
conntrack table is flushed (pyroute2).  The gateway's ESP to the old mapping then reaches nobody,
so charon's DPD sends an IKE request from the new mapping; the gateway moves the IKE SA and now
also the Child SA, and the ping goes on through the same SAs (no rekey).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator

import pytest
from ike_peers import Charon, Conn, TunsecIke, requires_strongswan
from pyroute2 import Conntrack
from test_gateway_two_sites import GatewayConn, children

from tunsec.bench.netns import StarHosts, in_netns, wait_until

pytestmark = [
    pytest.mark.interop,
    pytest.mark.netns,
    requires_strongswan,
]

FIRST, SECOND = "192.0.2.3", "192.0.2.4"   # A's NAT's outside addresses, before and after


@pytest.fixture
def star() -> Iterator[StarHosts]:
    with StarHosts(prefix="nr") as t:
        yield t


def snat(star: StarHosts, op: str, to: str) -> None:
    subprocess.run(["ip", "netns", "exec", star.a.ns, "iptables", "-t", "nat", op, "POSTROUTING", *(
        ["1"] if op == "-R" else []), "-d", star.g.outer4, "-p", "udp", "-j", "SNAT", "--to-source", to],
        check=True, capture_output=True)


def test_a_client_whose_nat_mapping_changes_keeps_its_child_sa(star: StarHosts) -> None:
    g, a = star.g, star.a
    for addr in (FIRST, SECOND):
        subprocess.run(["ip", "-n", a.ns, "addr", "add", f"{addr}/32", "dev", a.veth], check=True)
    snat(star, "-A", FIRST)
    gw = TunsecIke(star, GatewayConn(g, a))
    client = Charon(star, Conn(a, g, extra_conn="    dpd_delay = 1s\n    encap = yes\n"))
    client.start()
    gw.start()
    r = client.initiate()
    assert r.returncode == 0, f"swanctl --initiate: {r.stdout[-1500:]}\n{gw.log_tail()}"
    assert wait_until(lambda: FIRST in children(gw), 15), gw.log_tail()
    before = children(gw)[FIRST]
    assert star.wait_ping(a, g.inner4, src=a.inner4, timeout=10)

    log = star.workdir / "ping.log"
    ping = star.popen(a, ["ping", "-n", "-i", "0.1", "-c", "100", "-W", "3", "-I", a.inner4, g.inner4], log=log)
    assert wait_until(lambda: log.exists() and log.read_text().count("bytes from") >= 10, 10)
    snat(star, "-R", SECOND)
    # the old mapping is gone: what the gateway still sends there reaches nobody
    subprocess.run(["ip", "-n", a.ns, "addr", "del", f"{FIRST}/32", "dev", a.veth], check=True)
    with in_netns(a.ns):
        ct = Conntrack()
        try:
            ct.flush()
        finally:
            ct.close()
    assert wait_until(lambda: SECOND in children(gw), 15), gw.log_tail()
    after = children(gw)[SECOND]
    # the same Child SA, moved: no rekey, no new SPIs
    assert (after["spi_in"], after["spi_out"], after["reqid"]) == (before["spi_in"], before["spi_out"],
                                                                   before["reqid"])
    assert after["remote"].startswith(SECOND + "[")
    assert ping.wait(timeout=60) is not None
    text = log.read_text()
    m = re.search(r"(\d+) packets transmitted, (\d+) received", text)
    assert m, text[-500:]
    # only the pings sent while the gateway still sent to the old mapping are lost; the last ones all pass
    replies = [int(s) for s in re.findall(r"icmp_seq=(\d+)", text)]
    assert replies and replies[-1] == 100 and int(m.group(2)) >= 50, text[-800:]
    assert star.ping(a, g.inner4, count=5, src=a.inner4), "pings after the rebinding lost"
    assert "follows its peer to " + SECOND in gw.log_text()
