"""Review revcsmall F2: a source address that comes back is not used for up to 10 s.

h/fixcsmall (revgso) remembers per SA a source the kernel refused (loop.c send_msgs,
source_gone_until, SOURCE_GONE_NS = 10 s): queue_esp then puts no source cmsg on the SA's ESP until
the time is over.  Before it, every message tried the SA's local address first, so the first
packet after the address came back (a VIP failing back, an IPv6 address out of DAD, renumbering
undone) left from it again.  Now the SA's ESP leaves from whatever address the route picks for up
to 10 s after the address is back: a peer behind a NAT with address-dependent filtering (RFC 4787)
drops it, and a peer that follows ESP's source (a NAT mapping change) is led to the wrong address.

Real parts in a namespace of the test's own, as test_gso_source_remembered.py: a TUN, the gateway's
IPv6 socket on [::]:4500, the loop thread, an SA from 2001:db8::77 to a peer socket on [::1]."""

from __future__ import annotations

import textwrap
from pathlib import Path

from gso_loop import run_script

SCRIPT = textwrap.dedent(r'''
    import ipaddress, socket, sys
    sys.path.insert(0, sys.argv[1])
    from gso_loop import control_watch, ip, start_loop, stop_loop, tun_up, v6_sockets
    from tunsec.dataplane.pipe import Endpoint

    TUN = "revcsmall0"
    tun = tun_up(TUN)
    udp, peer_sock, peer = v6_sockets()
    ours = Endpoint(ipaddress.ip_address("2001:db8::77"), 4500)   # gone for a moment
    dp, loop = start_loop(tun, ours, peer, udp6=udp.fileno(), n=0, spi=0x2003)
    app = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sources = []
    app.sendto(b"x" * 100, ("10.9.0.5", 9))          # while the address is gone: from the route's
    sources.append(peer_sock.recvfrom(65535)[1][0])
    # and it is back; the control process's watch hears of it and tells the worker (ADDR_ADDED: the
    # worker holds no netlink socket, h/fixwatch): the packets go once it has
    told, stop_watch = control_watch(dp)
    ip("addr", "add", "2001:db8::77/128", "dev", "lo", "nodad")
    told.wait(1)
    for _ in range(3):
        app.sendto(b"x" * 100, ("10.9.0.5", 9))
        sources.append(peer_sock.recvfrom(65535)[1][0])
    stop_watch()
    stop_loop(dp, loop)
    print("TOLD", told.addrs, flush=True)
    print("RESULT", ",".join(sources), flush=True)
''')


def test_a_source_that_is_back_is_used_again(tmp_path: Path) -> None:
    out = run_script("revcsmall", SCRIPT, tmp_path)
    sources = out.split("RESULT")[1].split()[0].split(",")
    # gone: the route's address (the fallback works) ...
    assert sources[0] == "::1", out
    # ... back: the SA's own address again, as before the source-gone memory
    assert sources[1:] == ["2001:db8::77"] * 3, out
    assert "TOLD ['2001:db8::77']" in out, out
