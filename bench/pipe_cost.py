#!/usr/bin/env python3
"""What one road-warrior client's set-up costs the pipe codec, both ends together.

    python3 bench/pipe_cost.py [--clients 2000]      # CPU microseconds per client (noisy on a shared machine)
    python3 bench/pipe_cost.py --callgrind           # instructions per client (valgrind; repeatable)

Per client the control process builds and encodes GETSPI, UPDATE, ADD, SPDADD, IKE_SPI_ADD and SEND_IKE and
decodes their six answers and one IKE event; the worker decodes the six requests and encodes the
event and the answers.  ``--callgrind`` runs this script under valgrind with 0 and 1000 clients and
prints the difference per client: instruction counts do not move with the machine's load, so they
show a change of a few percent that CPU time on a loaded machine hides.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from tunsec.bench.callgrind import instructions
from tunsec.bench.client_setup import IKE_AUTH, PEER, setup_requests
from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Errno, Ike, MsgType, Reply

VIP = ipaddress.ip_address("10.3.0.5")


def one_client(n: int) -> None:
    requests = setup_requests(1, VIP, 0xC0000100 + n, 0x100 + n, n % 1000 + 1, 5)
    for data in [pipe.encode(m) for m in requests]:          # control -> worker
        pipe.decode(data)
    pipe.decode(pipe.encode(Ike(data=IKE_AUTH, remote=PEER)))   # the IKE_AUTH request, up
    answers = [pipe.encode(Reply(1, MsgType.GETSPI, Errno.OK, spi=0xC0000200))]
    answers += [pipe.encode_ok(i, m.TYPE) for i, m in enumerate(requests[1:], 2)]
    for data in answers:
        pipe.decode(data)


def callgrind(clients: int) -> int:
    def refs(n: int) -> int:
        return instructions([__file__, "--clients", str(n), "--quiet"])
    return (refs(clients) - refs(0)) // clients


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--clients", type=int, default=2000)
    ap.add_argument("--callgrind", action="store_true", help="instructions per client (1000 clients, valgrind)")
    ap.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.callgrind:
        print(f"pipe codec: {callgrind(1000)} instructions per client")
        return 0
    one_client(0)   # warm
    t0 = time.process_time()
    for n in range(args.clients):
        one_client(n)
    if not args.quiet:
        print(f"pipe codec: {1e6 * (time.process_time() - t0) / max(args.clients, 1):.1f} us CPU per client")
    return 0


if __name__ == "__main__":
    sys.exit(main())
