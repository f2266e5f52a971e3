"""How the metrics endpoint ends a connection (review revmetrics F1): after the client's time to
read, nothing is held (tests/test_review_revmetrics_slow_reader.py); within it, the whole answer.
The answer is closed and waited for inside that time and the socket aborted after: this is the
other half, that the abort never cuts an answer still being taken (an abort after drain() alone
throws away up to 16 KiB the transport still holds).

Real parts: the real endpoint in a network namespace of its own (tests/metrics_netns.py), a client
whose receive buffer is small and that reads slowly, the status document of 300 clients."""

from __future__ import annotations

import os

import metrics_netns
import pytest

_SCRIPT = """
import asyncio, json, socket
import metrics_netns
from test_metrics_endpoint import SCRAPE

async def main():
    server = await metrics_netns.serve(300)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)   # the answer waits in the server's buffers
    s.bind((metrics_netns.CLIENT, 0))
    s.setblocking(False)
    await asyncio.get_running_loop().sock_connect(s, (metrics_netns.SERVER, metrics_netns.PORT))
    reader, writer = await asyncio.open_connection(sock=s)
    writer.write(SCRAPE)
    await asyncio.sleep(0.3)   # the server wrote what its buffers take and waits for the rest to go
    answer = b""
    while chunk := await reader.read(4096):   # ~400 KB in ~1 s: well within the 5 s to read it
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
    got = metrics_netns.run(_SCRIPT)
    assert got["head"] == "HTTP/1.1 200 OK"
    (length,) = got["length"]
    assert length > 200_000, got   # many times what the buffers between the two hold
    assert got["got"] == length, got   # an abort before the last byte went would cut it short
    assert got["slots"] == 0
