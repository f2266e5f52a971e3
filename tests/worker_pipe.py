"""A real Daemon's WorkerClient on a real SOCK_SEQPACKET pipe whose worker end the test writes (as a
worker taken over would): for the tests of what the control process makes of a lying worker."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

from tunsec.daemon import Daemon
from tunsec.dataplane.client import WorkerClient


@dataclass
class WorkerPipe:
    client: WorkerClient    # the control process's end, reading events into the daemon
    theirs: socket.socket   # the worker's end (blocking, 30 s timeout: written from a thread)

    def close(self) -> None:
        sock = self.client._sock
        if sock is not None:
            asyncio.get_running_loop().remove_reader(sock.fileno())
        self.client._closed()
        self.theirs.close()


def attach(daemon: Daemon, as_worker: bool = True) -> WorkerPipe:
    """A WorkerClient delivering to ``daemon``'s events, read by the running loop; ``as_worker``: the
    daemon's worker too (its requests go there)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    theirs.settimeout(30)
    wc = WorkerClient(daemon._on_event)
    wc._sock = ours
    asyncio.get_running_loop().add_reader(ours.fileno(), wc._readable)
    if as_worker:
        daemon.worker = wc
    return WorkerPipe(wc, theirs)
