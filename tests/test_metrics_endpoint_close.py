"""How the metrics endpoint ends a connection (review revmetrics F1): after the client's time to
read, nothing is held (tests/test_review_revmetrics_slow_reader.py); within it, the whole answer.
The answer is closed and waited for inside that time and the socket aborted after: this is the
other half, that the abort never cuts an answer still being taken (an abort after drain() alone
throws away up to 16 KiB the transport still holds).

Real parts: the real endpoint in a network namespace of its own, lo's MTU Ethernet's (on loopback's
64 KiB the kernel's send buffer grows to take a whole body, and the transport's stays empty), a
client whose receive buffer is small and that reads slowly, the status document of 300 clients."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tunsec import metrics

_SCRIPT = """
import asyncio, ipaddress, json, socket, sys
sys.path[:0] = sys.argv[1:]
import status_state
from test_metrics_endpoint import SCRAPE
from tunsec import metrics
from tunsec.conf.tunsec_section import ListenAddress
from tunsec.status import status_document_sliced

async def main():
    gw = status_state.gateway(300)
    d = status_state.daemon(gw)

    async def dump():
        return gw.dump()

    src = metrics.Source(dump=dump, document=lambda reply: status_document_sliced(d, reply, scrape=True),
                         events=lambda: None, worker_restarts=lambda: 0, worker_pid=lambda: None)
    server = await metrics.start(ListenAddress(ipaddress.ip_address("192.0.2.1"), 9101), src)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)   # the answer waits in the server's buffers
    s.bind(("192.0.2.2", 0))
    s.setblocking(False)
    await asyncio.get_running_loop().sock_connect(s, ("192.0.2.1", 9101))
    reader, writer = await asyncio.open_connection(sock=s)
    writer.write(SCRAPE)
    await asyncio.sleep(0.3)   # the server wrote what its buffers take and waits for the rest to go
    answer = b""
    while chunk := await reader.read(4096):   # ~300 KB in ~1 s: well within the 5 s to read it
        answer += chunk
        await asyncio.sleep(0.01)
    writer.close()
    slots = server._clients
    await server.close()
    head, _, body = answer.partition(b"\\r\\n\\r\\n")
    length = [int(line.split(b":")[1]) for line in head.split(b"\\r\\n") if line.startswith(b"Content-Length:")]
    print(json.dumps({"head": head.split(b"\\r\\n")[0].decode(), "length": length, "got": len(body), "slots": slots}))

asyncio.run(main())
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a network namespace)")
def test_a_client_that_reads_slowly_within_its_time_gets_the_whole_answer() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    src = os.path.dirname(os.path.dirname(os.path.abspath(metrics.__file__)))
    setup = ("ip link set lo up && ip link set lo mtu 1500 && ip addr add 192.0.2.1/32 dev lo && "
             "ip addr add 192.0.2.2/32 dev lo && exec \"$@\"")
    out = subprocess.run(["unshare", "--net", "sh", "-c", setup, "sh", sys.executable, "-c", _SCRIPT, here, src],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["head"] == "HTTP/1.1 200 OK"
    (length,) = got["length"]
    assert length > 200_000, got   # many times what the buffers between the two hold
    assert got["got"] == length, got   # an abort before the last byte went would cut it short
    assert got["slots"] == 0
