"""Review revgso F1: an IPv6 SA whose source address is gone is taken for a path the kernel refuses
GSO on, and sends one datagram per ESP packet -- each paying a refused sendmsg first -- for as long
as its source stays gone (the pause is re-armed every 10 s; only a MOBIKE move clears it).

csrc/loop.c send_msgs treats EINVAL from a GSO run as gso_refused (EMSGSIZE/EINVAL/EIO: a segment
larger than the path MTU) and pauses GSO for the SA (gso_pause).  But the kernel also answers EINVAL
for an IPV6_PKTINFO source that is not ours (ip6_datagram_send_ctl) -- the case the IP(V6)_PKTINFO
fallback is for: an address taken away, a VIP failed over, DHCPv6/SLAAC renumbering.  Before h/fixgso
a run from a vanished source was retried once without the source cmsg, as one GSO message (2 calls a
run of up to 64 packets); now the SA's runs stop forming (gso_paused) and every packet is its own
message whose source cmsg the kernel refuses before the retry without it: 2 sendmmsg calls a packet,
and no GSO, until the SA moves.  IPv4 is not affected (the kernel answers ENETUNREACH there).

Real parts in a namespace of the test's own: a TUN, the gateway's IPv6 socket on [::]:4500, the fast
path's loop thread, an SA from 2001:db8::77 (not an address of the namespace) to a peer socket on
[::1] with UDP_GRO on: over loopback a GSO message reaches such a socket whole (one recvmsg with the
UDP_GRO segment size), so the peer sees whether runs left as GSO.  Enough packets wait in the TUN
for several flushes (FLUSH_BYTES): the first run is refused (the source), the later ones show whether
GSO went on.

Fixed (h/fixgso2): a GSO run carrying a source cmsg that gets EINVAL is first tried again as GSO
without it; only if refused again is it taken for a GSO refusal (cmsg restored, paused, split)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from gso_loop import run_script

SCRIPT = textwrap.dedent(r'''
    import ipaddress, socket, struct, sys, time
    sys.path.insert(0, sys.argv[1])
    from gso_loop import start_loop, stop_loop, tun_up, v6_sockets
    from tunsec.dataplane.pipe import Endpoint

    TUN, N = "revgso0", 200
    tun = tun_up(TUN, "txqueuelen", "1000")
    udp, peer_sock, peer = v6_sockets()
    peer_sock.setsockopt(socket.SOL_UDP, 104, 1)    # UDP_GRO: a GSO message arrives whole
    peer_sock.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)   # SO_RCVBUFFORCE: all N wait for the reader
    peer_sock.settimeout(0.5)
    gone = Endpoint(ipaddress.ip_address("2001:db8::77"), 4500)   # our address once; not any more
    # N full-size datagrams wait in the TUN before the loop starts: several flushes of runs
    dp, loop = start_loop(tun, gone, peer, udp6=udp.fileno(), n=N, spi=0x2001)
    seqs, largest = [], 1
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and len(seqs) < N:
        try:
            data, anc, _, _ = peer_sock.recvmsg(65535, socket.CMSG_SPACE(4))
        except socket.timeout:
            continue
        size = next((struct.unpack("i", d[:4])[0] for lvl, typ, d in anc if lvl == socket.SOL_UDP and typ == 104),
                    len(data))
        parts = [data[i:i + size] for i in range(0, len(data), size)]
        largest = max(largest, len(parts))
        seqs += [struct.unpack("!II", p[:8])[1] for p in parts]
    stop_loop(dp, loop)
    print("SEQS", seqs == list(range(1, N + 1)), len(seqs))
    print("RESULT", len(seqs), largest, dp.drops()["io"], flush=True)
''')


def test_a_gone_ipv6_source_does_not_turn_gso_off(tmp_path: Path) -> None:
    out = run_script("revgso", SCRIPT, tmp_path)
    received, largest, io = (int(x) for x in out.split("RESULT")[1].split())
    # every packet arrives, in order, from the address the route picks (the fallback works) ...
    assert (received, io) == (200, 0), out
    assert "SEQS True" in out, out
    # ... and the runs after the first still leave as GSO messages: the source, not the path, was refused
    assert largest > 1, out
