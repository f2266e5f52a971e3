#!/usr/bin/env python3
"""What one road-warrior client's pipe traffic costs each side: the control process (encode the
requests, decode the answers and the IKE event) and the worker (decode, apply to a real C
Dataplane, answer, report the IKE_AUTH as an event).

    python3 bench/install_cost.py --callgrind           # instructions per client, each side (valgrind)
    python3 bench/install_cost.py [--clients 2000]      # CPU microseconds per client (noisy)

Per client: the IKE_AUTH request up as an IKE event, GETSPI, the Child SA's install (UPDATE, ADD,
SPDADD), IKE_SPI_ADD and SEND_IKE (the answer), each a datagram.  ``--callgrind`` runs this script under
valgrind with 0 and N clients, once counting both sides and once the worker alone (every client's
datagrams are made in both runs, only N are handled), and prints the differences per client:
instruction counts do not move with the machine's load.  The datagrams are handed over in memory:
no syscalls (a send and a read of one cost ~5 us more, in the kernel, which valgrind does not count).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from tunsec.bench.callgrind import instructions
from tunsec.bench.client_setup import IKE_AUTH, PEER, SPI_HI, SPI_LO, setup_requests
from tunsec.dataplane import pipe
from tunsec.dataplane.fastpath import Dataplane
from tunsec.dataplane.pipe import Ike
from tunsec.dataplane.worker import Worker


class _NoUdp:
    def sendto(self, data: bytes, addr: Any) -> int:
        return len(data)


def requests(n: int, spi_in: int) -> list[bytes]:
    """Client n's datagrams to the worker."""
    vip = ipaddress.ip_address(f"10.3.{n // 250}.{n % 250 + 1}")
    return [pipe.encode(m) for m in setup_requests(10 * n + 1, vip, spi_in, 0x100 + n, n + 1, n + 1)]


def run(clients: int, made: int, worker_only: bool) -> float:
    loop = asyncio.new_event_loop()
    dp = Dataplane()
    sent: list[bytes] = []
    worker = Worker(dp, sent.append, {4: _NoUdp()}, loop)  # type: ignore[dict-item]
    # larval SAs for every client made (their GETSPIs are answered by these; the requests' own
    # GETSPI gets another): the same in every run, so only handling differs
    spis = [dp.getspi(SPI_LO, SPI_HI) for _ in range(made)]
    prepared = [requests(n, spis[n]) for n in range(made)] if worker_only else []
    t0 = time.process_time()
    for n in range(clients):
        datagrams = prepared[n] if worker_only else requests(n, spis[n])
        worker._emit(Ike(data=IKE_AUTH, remote=PEER))        # the IKE_AUTH request, up as an event
        answers = [a for d in datagrams for a in worker.handle_datagram(d)]
        if worker_only:
            continue
        pipe.decode(sent.pop())
        for a in answers:
            pipe.decode(a)
    elapsed = time.process_time() - t0
    worker.timers.cancel_all()
    dp.flush()
    loop.close()
    return elapsed


def callgrind(clients: int) -> tuple[int, int]:
    def refs(n: int, worker_only: bool) -> int:
        argv = [__file__, "--clients", str(n), "--made", str(clients), "--quiet"]
        return instructions(argv + (["--worker-only"] if worker_only else []))
    both = (refs(clients, False) - refs(0, False)) // clients
    worker = (refs(clients, True) - refs(0, True)) // clients
    return both - worker, worker


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--clients", type=int, default=2000)
    ap.add_argument("--made", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--worker-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--callgrind", action="store_true", help="instructions per client, each side (200 clients)")
    ap.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.callgrind:
        control, worker = callgrind(200)
        print(f"pipe traffic of a client's set-up: control {control} + worker {worker} instructions")
        return 0
    made = max(args.made, args.clients)
    run(min(made, 10), min(made, 10), args.worker_only)   # warm
    elapsed = run(args.clients, made, args.worker_only)
    if not args.quiet:
        print(f"pipe traffic of a client's set-up: {1e6 * elapsed / max(args.clients, 1):.1f} us CPU per client")
    return 0


if __name__ == "__main__":
    sys.exit(main())
