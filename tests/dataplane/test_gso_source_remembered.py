"""Review revgso (low): a source address that is gone was not remembered.  While an SA's local address
stayed gone, every message of it -- a lone packet, each GSO run -- paid a sendmmsg the kernel refused
(the source cmsg: EINVAL on IPv6) before its retry without the source (csrc/loop.c send_msgs).

Now a source the kernel refused while the same message without it went out is remembered per SA
(source_gone_until, 10 s; ts_sad_migrate clears it): the SA's next messages leave without it.

Real parts in a namespace of the test's own: a TUN, the gateway's IPv6 socket on [::]:4500, the loop
thread, an SA from 2001:db8::77 (not an address of the namespace) to a peer socket on [::1]; the
script's own calls traced by strace (the loop thread is one of its threads).  Lone packets, one at a
time: each is read, sent and received before the next enters the TUN, so each is its own sendmmsg."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from shutil import which

import pytest
from gso_loop import run_script

ROUNDS = 20

SCRIPT = textwrap.dedent(r'''
    import ipaddress, socket, struct, sys, time
    sys.path.insert(0, sys.argv[1])
    from gso_loop import start_loop, stop_loop, tun_up, v6_sockets
    from tunsec.dataplane.pipe import Endpoint

    TUN, ROUNDS = "fixcsrc0", int(sys.argv[2])
    tun = tun_up(TUN)
    udp, peer_sock, peer = v6_sockets()
    gone = Endpoint(ipaddress.ip_address("2001:db8::77"), 4500)   # our address once; not any more
    dp, loop = start_loop(tun, gone, peer, udp6=udp.fileno(), n=0, spi=0x2002)
    app = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    started, seqs = time.monotonic(), []
    for _ in range(ROUNDS):
        app.sendto(b"x" * 100, ("10.9.0.5", 9))
        data = peer_sock.recv(65535)
        seqs.append(struct.unpack("!II", data[:8])[1])
    elapsed = time.monotonic() - started
    stop_loop(dp, loop)
    print("RESULT", seqs == list(range(1, ROUNDS + 1)), dp.drops()["io"], int(elapsed), flush=True)
''')


@pytest.mark.skipif(which("strace") is None, reason="strace is not installed")
def test_a_gone_source_is_not_tried_again_for_every_message(tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    out = run_script("fixcsrc", SCRIPT, tmp_path, str(ROUNDS),
                     wrap=("strace", "-f", "-qq", "-e", "trace=sendmmsg", "-o", str(trace)))
    in_order, io, elapsed = out.split("RESULT")[1].split()
    # every packet arrives, in order, from the address the route picks (the fallback works) ...
    assert (in_order, io) == ("True", "0"), out
    calls = trace.read_text().splitlines()
    refused = [c for c in calls if re.search(r"= -1 E", c)]
    assert refused and all("EINVAL" in c for c in refused), calls
    # ... and the source is tried once, then again only when its 10 s are over
    assert len(refused) <= 1 + int(elapsed) // 10, refused
