"""A source address that comes back is used again at once, told by the control process (h/fixwatch,
review revlate4 F1): the worker holds no netlink socket, the daemon's one watch of the host's
addresses (services/addr_feed.py) sends it ADDR_ADDED.

Real parts in a namespace of the test's own, as the daemon wires them: the AddressFeed opened before
the worker, a real worker process started by WorkerClient (sandboxed, its capabilities dropped), a
real TUN, the worker's IPv6 ESP socket on [::]:4500, an SA from 2001:db8::77 (not the host's at
first: its ESP leaves from the route's address, ::1) to a peer socket on [::1]; then the address is
added, and the SA's next packets leave from it (before, the worker's own netlink socket read the
notice; with neither, the SA would wait out its 10 s)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent(r'''
    import asyncio, ipaddress, socket, subprocess, sys
    sys.path.insert(0, sys.argv[1])
    from esp_ref import new_key
    from tunsec.dataplane import pipe
    from tunsec.dataplane.client import WorkerClient, WorkerFds
    from tunsec.dataplane.pipe import Action, Alg, Direction, Endpoint, Lifetime, Policy, SaSpec, Selector
    from tunsec.dataplane.tun import Tun
    from tunsec.services.addr_feed import AddressFeed

    def ip(*args):
        subprocess.run(["ip", *args], check=True)

    async def main():
        loop = asyncio.get_running_loop()
        tun = Tun.open("fixwatch0", offload=False)
        ip("link", "set", "fixwatch0", "mtu", "1400", "up")
        ip("addr", "add", "10.9.0.1/24", "dev", "fixwatch0")
        udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        udp.bind(("::", 4500))
        peer_sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        peer_sock.bind(("::1", 0))
        peer_sock.settimeout(10)
        peer = Endpoint(ipaddress.ip_address("::1"), peer_sock.getsockname()[1])
        client = WorkerClient(lambda _msg: None)
        feed = AddressFeed(lambda: client)   # as the daemon: its one watch, opened before the worker
        feed.start()
        await client.start(WorkerFds(tun.fileno(), -1, udp.fileno()), 1400, 30.0, "info")
        ours = Endpoint(ipaddress.ip_address("2001:db8::77"), 4500)   # not the host's yet
        anywhere = Selector.from_networks(ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("10.9.0.0/24"))
        spec = SaSpec(spi=0x2005, direction=Direction.OUT, alg=Alg.AES128GCM16, key=new_key(), esn=False,
                      replay_window=0, reqid=1, local=ours, remote=peer, soft=Lifetime(), hard=Lifetime(),
                      selectors=(anywhere,), seq_start=0)
        await client.request(lambda r: pipe.Add(r, spec))
        await client.request(lambda r: pipe.SpdAdd(r, Policy(id=1, priority=10, action=Action.PROTECT, reqid=1,
                                                             selector=anywhere)))
        app = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sources = []

        async def one():
            app.sendto(b"x" * 100, ("10.9.0.5", 9))
            _data, src = await loop.run_in_executor(None, peer_sock.recvfrom, 65535)
            sources.append(src[0])

        await one()   # refused from 2001:db8::77: from the route's address, noted gone
        ip("addr", "add", "2001:db8::77/128", "dev", "lo", "nodad")
        for _ in range(1000):   # IPv6 sends the notice from a work queue, after `ip` returned
            if feed.notices:
                break
            await asyncio.sleep(0.01)
        await client.request(lambda r: pipe.Dump(r))   # answered after the notice: the worker has it
        for _ in range(3):
            await one()
        print("NOTICES", feed.notices, flush=True)
        print("RESULT", ",".join(sources), flush=True)
        feed.close()
        await client.stop()

    asyncio.run(main())
''')


def test_the_daemons_watch_tells_the_worker_its_source_is_back(tmp_path: Path) -> None:
    from conftest import netns_unavailable

    from tunsec.bench.netns import scratch_netns

    if os.geteuid() != 0:
        pytest.skip("needs root: a namespace and a TUN")
    if (why := netns_unavailable()) is not None:
        pytest.skip(f"NETNS UNAVAILABLE: {why}")
    with scratch_netns("fixwatch") as ns:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True, timeout=30)
        path = tmp_path / "fixwatch.py"
        path.write_text(SCRIPT)
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, str(path), here],
                             capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert out.returncode == 0, out.stderr[-3000:]
    assert "NOTICES 0" not in out.stdout, out.stdout + out.stderr[-3000:]
    sources = out.stdout.split("RESULT")[1].split()[0].split(",")
    # gone: the route's address (the fallback works) ...
    assert sources[0] == "::1", out.stdout
    # ... back: the SA's own address from its next packet, as the control process told the worker
    assert sources[1:] == ["2001:db8::77"] * 3, out.stdout + out.stderr[-3000:]
