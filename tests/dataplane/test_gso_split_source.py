"""Review revgso F2: one datagram of a split GSO run refused for a reason of its own (a firewall rule
in OUTPUT: EPERM) moves every later datagram of the run off the SA's source address.

csrc/loop.c send_split gives all the datagrams of a refused run one source address cmsg (the run's
IP_PKTINFO); send_msgs answers ANY error of a datagram that carries one (other than a full socket) by
dropping the cmsg from every message sharing it -- "the source address is no longer ours" -- and
retrying.  When the error is the datagram's own (netfilter's EPERM, a rule matching that one packet)
the retry fails the same and is counted lost, but the rest of the run now leaves from whatever address
the route prefers: on a gateway with several addresses, not the one the peer (and every NAT or
stateful firewall between) knows.  Before h/fixgso a datagram's error moved only that datagram.

Real parts in a namespace of the test's own: a TUN, the ESP-in-UDP socket on 0.0.0.0:4500, the loop
thread, a veth with two addresses (192.0.2.1 the route's source, 192.0.2.9 the SA's), a route to the
peer with MTU 1300 (so the kernel refuses the GSO run and send_split sends it), an nftables rule in
OUTPUT that drops the ESP packet with sequence number 3, and an AF_PACKET socket on the veth's other
end reading each datagram's source address and sequence number.

Fixed (h/fixgso2): only the failing datagram is retried without its source; the others move
off it only for errors a source causes (EINVAL, EADDRNOTAVAIL, ENETUNREACH)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from shutil import which

import pytest
from gso_loop import run_script

SCRIPT = textwrap.dedent(r'''
    import ipaddress, socket, struct, subprocess, sys
    sys.path.insert(0, sys.argv[1])
    from gso_loop import esp_left, ip, start_loop, stop_loop
    from tunsec.dataplane.pipe import Endpoint
    from tunsec.dataplane.tun import Tun

    GW, SA_SRC, PEER, TUN = "192.0.2.1", "192.0.2.9", "198.51.100.7", "revgso0"
    ip("link", "add", "revgso1", "type", "veth", "peer", "name", "revgso2")
    ip("addr", "add", GW + "/24", "dev", "revgso1")
    ip("addr", "add", SA_SRC + "/24", "dev", "revgso1")        # secondary: the route's source stays GW
    ip("link", "set", "revgso1", "up")
    ip("link", "set", "revgso2", "up")
    ip("neigh", "add", "192.0.2.2", "lladdr", "02:00:00:00:00:02", "dev", "revgso1")
    ip("route", "add", "default", "via", "192.0.2.2")
    ip("route", "add", PEER + "/32", "via", "192.0.2.2", "mtu", "1300")   # the GSO run is refused
    # a firewall drops one ESP packet (sequence number 3; after UDP 8 and SPI 4: bit 96 of the UDP header)
    subprocess.run(["nft", "-f", "-"], check=True, text=True, input=(
        "table ip revgso {\n chain out {\n type filter hook output priority 0;\n"
        " ip daddr " + PEER + " udp dport 4500 @th,96,32 3 drop\n }\n}\n"))
    tun = Tun.open(TUN, offload=False)
    ip("link", "set", TUN, "mtu", "1400", "up")
    ip("route", "add", "10.9.0.0/24", "dev", TUN)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", 4500))
    udp.setblocking(False)
    cap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    cap.bind(("revgso2", 0))
    cap.settimeout(0.2)
    peer = Endpoint(ipaddress.ip_address(PEER), 4500)
    dp, loop = start_loop(tun, Endpoint(ipaddress.ip_address(SA_SRC), 4500), peer, udp4=udp.fileno())
    sources = {}
    for ip4 in esp_left(cap, PEER):
        ihl = (ip4[0] & 0xf) * 4
        seq = struct.unpack("!I", ip4[ihl + 12:ihl + 16])[0]
        sources[seq] = socket.inet_ntoa(ip4[12:16])
    stop_loop(dp, loop)
    print("SOURCES", " ".join(f"{k}={v}" for k, v in sorted(sources.items())))
    print("RESULT", dp.drops()["io"], flush=True)
''')


def test_one_datagram_refused_in_a_split_run_moves_no_other(tmp_path: Path) -> None:
    if which("nft") is None:
        pytest.skip("no nft here: the firewall rule cannot be made")
    out = run_script("revgso", SCRIPT, tmp_path)
    line = next(line for line in out.splitlines() if line.startswith("SOURCES"))
    sources = dict(item.split("=") for item in line.split()[1:])
    io = int(out.split("RESULT")[1].split()[0])
    # the firewall's packet is lost (and counted) ...
    assert "3" not in sources and io == 1, out
    # ... every other one leaves, from the SA's address
    assert sorted(int(s) for s in sources) == [1, 2, *range(4, 21)], out
    assert set(sources.values()) == {"192.0.2.9"}, out
