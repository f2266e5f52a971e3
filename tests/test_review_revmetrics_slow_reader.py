"""Review revmetrics F1: a scrape whose client never reads its answer keeps the connection, its
descriptor and its unsent body in the control process after its slot was given back.

The endpoint gives a client REQUEST_TIMEOUT to read its answer (docs/operations.md: "5 s to read
the answer"); then the handler ends, frees the slot (so the caps of 16 connections, 4 per source,
no longer count it) and calls writer.close(), which keeps the socket open until the transport's
buffer is flushed: never, for a client that keeps its TCP window shut. Each round of 4 such
connections from one source is held for ever: descriptors (LimitNOFILE), ~128 KiB of the
transport's buffer each, and the kernel's send buffer (TCP memory of the whole host).

Real parts: the real MetricsServer on a real TCP socket in a network namespace of its own (lo's
MTU set to Ethernet's, as a scraper across a LAN sees it), the status document of 300 clients
built by tunsec.status, a client that sends a scrape and reads nothing, and `ss` counting the
server's established connections.
"""

from __future__ import annotations

import os

import metrics_netns
import pytest

_SCRIPT = """
import asyncio, json, socket, subprocess
import metrics_netns
from test_metrics_endpoint import SCRAPE
from tunsec import metrics

metrics.REQUEST_TIMEOUT = 0.3   # the 5 s a client has to read its answer, shorter for the test
ROUNDS = 5                      # of MAX_PER_SOURCE connections each: 20, more than MAX_CLIENTS

def held_by_server():
    out = subprocess.run(["ss", "-Htn", "state", "established", "( sport = :9101 )"],
                         capture_output=True, text=True, check=True).stdout
    return len([line for line in out.splitlines() if line.strip()])

async def main():
    server = await metrics_netns.serve(300)
    clients = []
    for _ in range(ROUNDS):
        for _ in range(metrics.MAX_PER_SOURCE):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)   # a window the body never fits
            s.bind(("192.0.2.2", 0))
            s.connect(("192.0.2.1", 9101))
            s.sendall(SCRAPE)   # and never reads
            clients.append(s)
        await asyncio.sleep(0.2)
        for _ in range(1000):   # until the server gave their slots back (their REQUEST_TIMEOUT is over)
            if server._clients == 0:
                break
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.5)
    result = {"connections": len(clients), "slots": server._clients, "held": held_by_server()}
    for s in clients:
        s.close()
    await server.close()
    print(json.dumps(result))

asyncio.run(main())
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a network namespace)")
def test_a_client_that_never_reads_its_answer_holds_nothing_after_its_time() -> None:
    """20 scrapes from one address that never read their answer, 4 at a time (the source's share):
    once each one's time to read is over, the server holds none of them (on main it held all 20,
    beyond MAX_CLIENTS, with no slot counting them)."""
    got = metrics_netns.run(_SCRIPT)
    assert got["slots"] == 0   # every handler ended: the caps no longer count any of them
    assert got["held"] == 0, got   # main: 20 connections held open, each with its unsent body
