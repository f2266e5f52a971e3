"""Review revmobike F1, the consequence: an outbound SA whose peer address is one the host routes
into the TUN (what a MOBIKE update or a NAT float from a road warrior's own virtual IP makes of its
Child SA, tests/ike/test_engine_mobike_tunnel_address.py) encrypts its own ESP again and again.

Real parts in a namespace of the test's own: a TUN with the pool's route, the ESP-in-UDP socket on
4500, the fast path's loop thread.  One datagram is sent to the client's virtual IP; its ESP goes to
that same address, back into the TUN, is encrypted again (full-tunnel local_ts 0.0.0.0/0, as road
warriors have), and so on, ~70 bytes larger each round, until the datagram no longer fits the
tunnel's MTU (DF: too_big): here 20 ESP packets, encryptions, sends and TUN reads for the one
datagram sent, work of the loop thread every peer on it shares.  The assertion: one datagram to
the client, one ESP packet."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import netns_unavailable

from tunsec.bench.netns import scratch_netns

SCRIPT = textwrap.dedent(r'''
    import ipaddress, os, socket, subprocess, sys, threading, time
    sys.path.insert(0, sys.argv[1])
    from esp_ref import new_key
    from tunsec.dataplane.fastpath import Dataplane
    from tunsec.dataplane.pipe import Action, Alg, Direction, Endpoint, Lifetime, Policy, SaSpec, Selector
    from tunsec.dataplane.tun import Tun

    GW, VIP, TUN = "192.0.2.1", "10.3.0.1", "revmobike0"
    def ip(*a):
        subprocess.run(["ip", *a], check=True)
    ip("link", "set", "lo", "up")
    ip("addr", "add", GW + "/32", "dev", "lo")   # the gateway's address
    tun = Tun.open(TUN, offload=False)
    ip("link", "set", TUN, "mtu", "1400", "up")
    ip("route", "add", "10.3.0.0/24", "dev", TUN)     # the pool, routed into the TUN
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", 4500))
    udp.setblocking(False)
    os_tun = tun.fileno()
    os.set_blocking(os_tun, False)
    dp = Dataplane()
    dp.set_tunnel_mtu(1400 - 73)
    key = new_key()
    anywhere = Selector.from_networks(ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network(VIP + "/32"))
    peer = Endpoint(ipaddress.ip_address(VIP), 4500)   # the client's Child SA after it moved to its VIP
    dp.add(SaSpec(spi=0x1001, direction=Direction.OUT, alg=Alg.AES128GCM16, key=key, esn=False,
                  replay_window=0, reqid=1, local=Endpoint(ipaddress.ip_address(GW), 4500), remote=peer,
                  soft=Lifetime(), hard=Lifetime(), selectors=(anywhere,), seq_start=0))
    dp.spd_add(Policy(id=1, priority=10, action=Action.PROTECT, reqid=1, selector=anywhere))
    dp.set_fds(os_tun, udp.fileno())
    loop = threading.Thread(target=dp.run, daemon=True)
    loop.start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"x" * 32, (VIP, 9))                  # one datagram to the client
    counts = []
    for _ in range(3):
        time.sleep(1.0)   # observation only: what the SA counted with nothing more sent
        counts.append(dp.get(0x1001, Direction.OUT, peer).counters["packets"])
    dp.stop()
    loop.join(5)
    print("COUNTS", *counts, "DROPS", {k: v for k, v in dp.drops().items() if v})
''')


def test_esp_to_an_address_routed_into_the_tun_loops(tmp_path: Path) -> None:
    if (why := netns_unavailable()) is not None:
        pytest.skip(f"NETNS UNAVAILABLE: {why}")
    with scratch_netns("revmobike") as ns:
        script = tmp_path / "loop.py"
        script.write_text(SCRIPT)
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, str(script), here],
                             capture_output=True, text=True, timeout=120, env=os.environ.copy())
        assert out.returncode == 0, out.stderr[-3000:]
        line = next(ln for ln in out.stdout.splitlines() if ln.startswith("COUNTS"))
        counts = [int(x) for x in line.split()[1:4]]
        # one datagram sent: one ESP packet, not an SA encrypting its own output
        assert counts[-1] <= 1, line
