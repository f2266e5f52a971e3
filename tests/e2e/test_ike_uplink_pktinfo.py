"""IKE to an unauthenticated address a full tunnel captures leaves by the uplink without a route
(services/ike/exclude_gate.py, review revfull F1): pktinfo.sendto with ``oif`` puts the uplink's
interface in IP_PKTINFO's ipi_ifindex (IPv6: ipi6_ifindex), and the kernel's route lookup then skips the
routes of every other device, the TUN's halves among them.  Checked against the kernel, both families:
host a routes everything into a TUN (0.0.0.0/1 + 128.0.0.0/1, ::/1 + 8000::/1, as tunsec does for a
full tunnel) and sends UDP to b, which is reached through a's default route by router r.  Without the
interface the datagram goes into the TUN (nothing reaches b); with it, it reaches b, and no route was
added for b's address.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest
from routed_hosts import RoutedHosts

from tunsec import pktinfo
from tunsec.dataplane.routetable import RULE_PRIORITY, TABLE

PORT = 5000
TUN = "fx2t0"


@pytest.fixture
def topo() -> Iterator[RoutedHosts]:
    t = RoutedHosts(prefix="fixfull2")
    with t:
        t.run(t.a, ["ip", "tuntap", "add", "mode", "tun", "name", TUN])   # no reader: what enters it is lost
        t.run(t.a, ["ip", "link", "set", TUN, "up"])
        # as tunsec routes a full tunnel: in its table, looked up before the main table (dataplane/routetable.py)
        for family, halves in (("-4", ("0.0.0.0/1", "128.0.0.0/1")), ("-6", ("::/1", "8000::/1"))):
            t.run(t.a, ["ip", family, "rule", "add", "priority", str(RULE_PRIORITY), "lookup", str(TABLE)])
            for half in halves:
                t.run(t.a, ["ip", family, "route", "add", half, "dev", TUN, "table", str(TABLE)])
        yield t


def ifindex(topo: RoutedHosts, dev: str) -> int:
    return int(json.loads(topo.run(topo.a, ["ip", "-j", "link", "show", "dev", dev]).stdout)[0]["ifindex"])


def arrives(topo: RoutedHosts, family: int, dst: str, oif: int) -> bool:
    """A datagram from a to dst (an address of b's) with oif (0: none) reaches b."""
    rx = topo.socket(topo.b, family, socket.SOCK_DGRAM)
    tx = topo.socket(topo.a, family, socket.SOCK_DGRAM)
    try:
        rx.bind((dst, PORT))
        rx.settimeout(2.0)
        pktinfo.sendto(tx, b"ike", (dst, PORT), None, oif)
        try:
            return rx.recv(16) == b"ike"
        except TimeoutError:
            return False
    finally:
        rx.close()
        tx.close()


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_a_datagram_with_the_uplink_interface_skips_the_tun_halves(topo: RoutedHosts, family: int) -> None:
    dst = topo.b.outer4 if family == socket.AF_INET else topo.b.outer6
    v = [] if family == socket.AF_INET else ["-6"]
    assert f"dev {TUN}" in topo.run(topo.a, ["ip", *v, "route", "get", dst]).stdout   # captured
    assert not arrives(topo, family, dst, 0)   # as routed: into the TUN
    assert arrives(topo, family, dst, ifindex(topo, topo.a.veth)), "the uplink's interface did not take it"
    assert dst not in topo.run(topo.a, ["ip", *v, "route", "show", "table", "all"]).stdout   # and no route for it
