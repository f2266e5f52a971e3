"""A RADIUS client socket's receive buffer (tunsec.radius.client.RCVBUF) and the count of what the
kernel drops when it is full, against a plain UDP socket on loopback standing in for the server:
the buffer asked for (we are root: SO_RCVBUFFORCE; without CAP_NET_ADMIN, as after the daemon's
privilege drop, SO_RCVBUF up to net.core.rmem_max), and a burst larger than it sent while the event
loop does not read, each datagram either read (junk: unmatched) or counted as dropped."""
from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import subprocess
import sys
from pathlib import Path

from test_radius_client_sockets import build, until
from test_radius_messages import SECRET

from tunsec.ike.secret import Secret
from tunsec.radius.client import RCVBUF, RadiusStats, ServerLink
from tunsec.radius.messages import Answer
from tunsec.radius.settings import RadiusServer, RadiusSettings

BURST = 1000   # datagrams of 4096 bytes: twice the buffer the kernel grants (2 x RCVBUF)


def silent_server() -> tuple[socket.socket, ServerLink[Answer]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    server = RadiusServer("r1", ipaddress.ip_address("127.0.0.1"), Secret(SECRET), sock.getsockname()[1])
    settings = RadiusSettings((server,), retransmit_timeout=60.0, retransmit_tries=0)
    return sock, ServerLink(server, settings, RadiusStats())


def test_a_socket_asks_for_room_for_an_answer_per_identifier_and_the_kernels_drops_are_counted() -> None:
    async def main() -> tuple[int, int, ServerLink[Answer]]:
        server, link = silent_server()
        task = asyncio.ensure_future(link.exchange(build))
        await until(lambda: link.outstanding == 1)
        transport = link.sockets[0].transport
        assert transport is not None
        size = transport.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        client = transport.get_extra_info("sockname")
        for _ in range(BURST):   # no await: the loop reads none of them meanwhile
            server.sendto(b"\x02\xff" + bytes(4094), client)   # no request has that identifier

        def seen() -> int:
            link.count_drops()
            return link.stats.unmatched + link.stats.rcvbuf_drops

        await until(lambda: seen() == BURST)
        link.count_drops()   # again: nothing counted twice
        drops = link.stats.rcvbuf_drops
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        link.close()
        server.close()
        return size, drops, link

    size, drops, link = asyncio.run(main())
    assert size == 2 * RCVBUF   # the kernel reports it doubled
    assert 0 < drops < BURST and link.stats.unmatched + drops == BURST and link.stats.bad == 0


OPEN_ONE = """
import asyncio, logging, socket, sys
sys.path.insert(0, sys.argv[1])
from test_radius_client_buffer import build, silent_server

async def main():
    logging.basicConfig(level=logging.INFO)
    try:
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).setsockopt(socket.SOL_SOCKET, 33, 1 << 20)
        print("SO_RCVBUFFORCE allowed")
    except PermissionError:
        print("no CAP_NET_ADMIN")
    server, link = silent_server()
    task = asyncio.ensure_future(link.exchange(build))
    while not link.outstanding:
        await asyncio.sleep(0.005)
    print(link.sockets[0].transport.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    link.close()

asyncio.run(main())
"""


def test_without_cap_net_admin_the_buffer_is_what_rmem_max_allows() -> None:
    """Without CAP_NET_ADMIN, as the daemon after its privilege drop (this host's rmem_max may
    allow all of RCVBUF; a host's default, 208 KiB, does not, and that is said once)."""
    rmem_max = int(Path("/proc/sys/net/core/rmem_max").read_text())
    here = str(Path(__file__).parent)
    out = subprocess.run(["setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin", sys.executable,
                          "-c", OPEN_ONE, here], capture_output=True, text=True, timeout=30,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join([here, *sys.path])})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["no CAP_NET_ADMIN", str(2 * min(RCVBUF, rmem_max))]
    assert out.stderr.count("net.core.rmem_max caps it") == (rmem_max < RCVBUF), out.stderr
