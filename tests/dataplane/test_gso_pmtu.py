"""A GSO run of ESP packets larger than the path MTU towards their peer still leaves, datagram by
datagram, fragmented by the kernel as each one sent alone is (review revcpath F1: it was lost whole).

The loop (csrc/loop.c queue_esp) joins consecutive equal-size ESP packets to one peer into one
UDP_SEGMENT message.  The kernel refuses such a message when a segment does not fit the route's MTU
towards the peer (udp_send_skb: gso_size + headers > the cork's fragsize, EMSGSIZE or EINVAL),
while it fragments the same datagram sent on its own (IP_PMTUDISC_WANT, the socket's default).  The
tunnel MTU is sized from the local interface's MTU (daemon.py), so the path to one peer can be
smaller: a road warrior on PPPoE (1492) or a mobile link, or a PMTU the kernel learnt from an ICMP
"fragmentation needed" -- which anyone who knows the peer's address and port can forge (no
sequence number to check for UDP).  send_queue used to retry without IP_PKTINFO and count the run
lost (TS_DROP_IO): every burst to that peer vanished, single packets passed.  Now it sends a refused
run's segments one datagram at a time (loop.c send_split; the C self-test's test_gso_split.c).

Real parts in a namespace of the test's own: a TUN, the ESP-in-UDP socket with the offloads the
worker enables (Dataplane.set_offloads), the fast path's loop thread, a veth towards the peer, and an
AF_PACKET socket on the veth's other end that counts the ESP datagrams that left.  The smaller path
is made two ways: a route to the peer with MTU 1300 (a PPPoE or mobile client's line), and one
ICMP "fragmentation needed" (MTU 576) from a made-up router address, quoting our port 4500 towards
the peer's address and any port: the kernel keeps that PMTU for 10 minutes (mtu_expires), and
the forger needs to know only the peer's address."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from gso_loop import run_script

SCRIPT = textwrap.dedent(r'''
    import ipaddress, socket, subprocess, sys, time
    sys.path.insert(0, sys.argv[1])
    from gso_loop import esp_left, ip, start_loop, stop_loop
    from tunsec.dataplane.pipe import Direction, Endpoint
    from tunsec.dataplane.tun import Tun

    GW, PEER, TUN, MODE = "192.0.2.1", "198.51.100.7", "revcpath0", sys.argv[2]
    ip("link", "set", "lo", "up")
    ip("link", "add", "revcpath1", "type", "veth", "peer", "name", "revcpath2")
    ip("addr", "add", GW + "/24", "dev", "revcpath1")
    ip("link", "set", "revcpath1", "up")
    ip("link", "set", "revcpath2", "up")
    ip("neigh", "add", "192.0.2.2", "lladdr", "02:00:00:00:00:02", "dev", "revcpath1")
    ip("route", "add", "default", "via", "192.0.2.2")
    if MODE == "route":   # the path to this peer carries 1300 bytes (a PPPoE client's line ...)
        ip("route", "add", PEER + "/32", "via", "192.0.2.2", "mtu", "1300")
    tun = Tun.open(TUN, offload=False)
    ip("link", "set", TUN, "mtu", "1400", "up")      # sized for the local interface, as daemon.py does
    ip("route", "add", "10.9.0.0/24", "dev", TUN)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", 4500))
    udp.setblocking(False)
    cap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    cap.bind(("revcpath2", 0))
    cap.settimeout(0.2)
    if MODE == "icmp":   # anyone: "fragmentation needed, MTU 576" about our port 4500 to the peer
        from scapy.layers.inet import ICMP, IP, UDP
        from scapy.layers.l2 import Ether
        quote = bytes(IP(src=GW, dst=PEER, flags="DF", len=1500) / UDP(sport=4500, dport=33333, len=1480))[:28]
        mac = open("/sys/class/net/revcpath1/address").read().strip()
        forged = Ether(src="02:00:00:00:00:02", dst=mac) / IP(src="203.0.113.9", dst=GW) / ICMP(
            type=3, code=4, nexthopmtu=576) / quote
        cap.send(bytes(forged))
        for _ in range(50):   # the kernel takes it in softirq: wait until the route shows it
            route = subprocess.run(["ip", "route", "get", PEER], capture_output=True, text=True).stdout
            if "mtu 576" in route:
                break
            time.sleep(0.1)
        assert "mtu 576" in route, route
    peer = Endpoint(ipaddress.ip_address(PEER), 4500)
    dp, loop = start_loop(tun, Endpoint(ipaddress.ip_address(GW), 4500), peer, udp4=udp.fileno())
    left = sum(1 for _ in esp_left(cap, PEER))   # a whole ESP datagram or its first fragment, within 3 s
    stop_loop(dp, loop)
    sealed = dp.get(0x1001, Direction.OUT, peer).counters["packets"]
    print("RESULT", sealed, left, dp.drops()["io"], flush=True)
''')


@pytest.mark.parametrize("smaller_path", ["route", "icmp"])
def test_a_gso_run_over_a_smaller_path_mtu_still_leaves(tmp_path: Path, smaller_path: str) -> None:
    out = run_script("revcpath", SCRIPT, tmp_path, smaller_path)
    sealed, left, io = (int(x) for x in out.split("RESULT")[1].split())
    assert sealed == 20
    # every ESP packet sealed leaves towards the peer (fragmented, as a lone one is), none lost to I/O
    assert (left, io) == (20, 0), out
