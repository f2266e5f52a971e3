#!/usr/bin/env python3
"""What one road-warrior client costs the worker along its real path, with real sockets.

    python3 bench/worker_path_cost.py --callgrind      # instructions per client (valgrind; repeatable)

Unlike bench/install_cost.py (the pipe messages handed over in memory), per client: the IKE_AUTH
datagram enters the C inbound path (the non-ESP marker, from the peer to our address) and comes up
as an event (Worker.drain_events, PipeWriter, a SOCK_SEQPACKET socketpair); the six set-up
requests are read from that pipe and answered as the worker's pipe reader does; SEND_IKE goes out of
a UDP socket bound to the wildcard, from our address (IP_PKTINFO), to a local sink.  The kernel's
share (the syscalls, ~15 per client) is not counted by callgrind; the epoll wakeups are not made.
``--callgrind`` runs this script under valgrind with 0 and N clients (every client's requests are
made in both) and prints the difference per client.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from tunsec.bench.callgrind import instructions
from tunsec.bench.client_setup import IKE_AUTH, SPI_HI, SPI_LO, setup_requests
from tunsec.dataplane import pipe
from tunsec.dataplane.fastpath import Dataplane, _addr_in
from tunsec.dataplane.pipe import Endpoint, SendIke
from tunsec.dataplane.worker import MAX_DATAGRAM, PipeWriter, Worker, self_test
from tunsec.ike.constants import NON_ESP_MARKER


def run(clients: int, made: int) -> None:
    from tunsec.dataplane._fastpath import ffi, lib

    loop = asyncio.new_event_loop()
    ctl, chan = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    chan.setblocking(False)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", 0))
    peer = Endpoint(ipaddress.IPv4Address("127.0.0.1"), sink.getsockname()[1])
    local = Endpoint(ipaddress.IPv4Address("127.0.0.1"), 4500)
    dp = Dataplane()
    # as the worker does before it serves (worker.serve): OpenSSL's one-time fetch of the cipher
    # (~6M instructions) happens there, not on the first client's install
    self_test()
    writer = PipeWriter(chan, loop, lambda pause: None)
    worker = Worker(dp, lambda data: writer.send(data, is_event=True), {4: udp}, loop)
    src, ours = ffi.new("ts_addr *"), ffi.new("ts_addr *")
    _addr_in(src, peer)
    _addr_in(ours, local)
    out, drop = ffi.new("uint8_t[]", MAX_DATAGRAM), ffi.new("int *")
    datagram = NON_ESP_MARKER + IKE_AUTH
    spis = [dp.getspi(SPI_LO, SPI_HI) for _ in range(made)]
    requests = []
    for n in range(made):
        vip = ipaddress.ip_address(f"10.3.{n // 250}.{n % 250 + 1}")
        msgs = setup_requests(10 * n + 1, vip, spis[n], 0x100 + n, n + 1, n + 1)
        msgs[-1] = SendIke(msgs[-1].req_id, IKE_AUTH, peer, local)   # answered from our address
        requests.append([pipe.encode(m) for m in msgs])
    for n in range(clients):
        lib.ts_dp_inbound(dp._dp, datagram, len(datagram), src, ours, out, MAX_DATAGRAM, drop)
        worker.drain_events()
        ctl.recv(MAX_DATAGRAM)                 # the IKE event
        for data in requests[n]:
            ctl.send(data)
        while True:                            # the worker's pipe reader (worker.serve's on_pipe)
            try:
                data = chan.recv(MAX_DATAGRAM)
            except BlockingIOError:
                break
            for answer in worker.handle_datagram(data):
                writer.send(answer)
        for _ in requests[n]:
            ctl.recv(MAX_DATAGRAM)             # the answers
        sink.recv(MAX_DATAGRAM)                # the IKE answer
    worker.timers.cancel_all()
    dp.flush()
    loop.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--made", type=int, default=0, help="requests made for this many clients (default: --clients)")
    ap.add_argument("--callgrind", action="store_true", help="instructions per client (N minus 0 clients)")
    args = ap.parse_args()
    made = args.made or args.clients
    if args.callgrind:
        def refs(n: int) -> int:
            return instructions([__file__, "--clients", str(n), "--made", str(made)])
        print(f"worker, real path: {(refs(args.clients) - refs(0)) // args.clients} instructions per client")
        return 0
    run(args.clients, made)
    return 0


if __name__ == "__main__":
    sys.exit(main())
