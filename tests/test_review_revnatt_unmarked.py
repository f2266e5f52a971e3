"""Review revnatt's remark: whether an IKE_SA_INIT answer goes back without the non-ESP marker was
decided as it left (IkeSockets.send asked services/ike/unmarked.py's record of who had sent an
unmarked IKE_SA_INIT request from that address and port), not as its request came.  An answer that
waits -- behind the SPI pool's refill everything does (barrier.py) -- left by whatever the record
said then: a spoofed unmarked IKE_SA_INIT request with the client's address and port unmarked the
answer to its marked request (a strongSwan client that started from its 4500 drops it as ESP), and
1,024 spoofed requests from anywhere evicted a real unmarked client's entry (a marked answer it does
not read).  Now the engine marks the answer with its request's way (ike/unmarked.py).

A real IkeService over the in-process worker (test_ikeservice_peers); the client is an IKE engine,
its requests handed to the service as the worker's IKE events (port 4500, marked or not)."""

from __future__ import annotations

import asyncio
import ipaddress
import struct
import time

from test_ikeservice_peers import GW, Gateway, run, site_ip

from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Endpoint
from tunsec.ike.constants import IKE_VERSION, ExchangeType, HeaderFlag, is_ike_sa_init

CLIENT = (site_ip(0), 500)   # its port 500 as a NAT shows it (remote_port = 4500), or its 4500 so mapped


async def gateway() -> tuple[Gateway, list[pipe.SendIke], bytes]:
    """The gateway, the SEND_IKEs it asks its worker for, and its client's IKE_SA_INIT request."""
    gw = Gateway(1)
    await gw.start()
    sent: list[pipe.SendIke] = []
    gw.worker.send_ike = sent.append
    gw.connect(0)
    (request,) = gw.sites[0].datagrams_to_send(time.monotonic())
    assert request.addr == (GW, 500)   # sent to 4500 here, as a client with remote_port = 4500 does
    return gw, sent, request.data


def came(gw: Gateway, data: bytes, src: tuple[str, int], unmarked: bool) -> None:
    gw.service.receive_natt(pipe.Ike(data=data, remote=Endpoint(ipaddress.ip_address(src[0]), src[1]),
                                     unmarked=unmarked))


async def answers_after_the_refill(gw: Gateway, sent: list[pipe.SendIke]) -> dict[bytes, bool]:
    """The barrier goes down: the IKE_SA_INIT answers that waited leave; by their SPIi, unmarked or not."""
    assert not sent   # held so far
    gw.service.barrier.install_done()
    for _ in range(20):
        await asyncio.sleep(0)
    return {m.data[:8]: m.unmarked for m in sent if is_ike_sa_init(m.data, HeaderFlag.RESPONSE)}


def test_a_spoofed_unmarked_request_does_not_unmark_a_waiting_answer() -> None:
    async def main() -> None:
        gw, sent, request = await gateway()
        gw.service.barrier.install_started()   # the SPI pool refills: every datagram out waits
        came(gw, request, CLIENT, False)       # the client starts from its 4500, marked
        spoofed = struct.pack("!Q", 0x5B00F) + request[8:]
        came(gw, spoofed, CLIENT, True)        # anyone, with the client's address and port
        answers = await answers_after_the_refill(gw, sent)
        # the client's answer goes as its request came; the spoofer's own as its did
        assert answers == {request[:8]: False, spoofed[:8]: True}
    run(main())


def test_a_flood_of_unmarked_requests_does_not_mark_a_waiting_answer() -> None:
    async def main() -> None:
        gw, sent, request = await gateway()
        gw.service.barrier.install_started()
        came(gw, request, CLIENT, True)        # remote_port = 4500: from its 500, unmarked
        # 1,024 unmarked IKE_SA_INIT headers from as many ports (the engine drops them as malformed)
        bare = struct.pack("!8s8sBBBBII", b"\x5b" * 8, bytes(8), 0, IKE_VERSION, ExchangeType.IKE_SA_INIT,
                           HeaderFlag.INITIATOR, 0, 28)
        for port in range(1024):
            came(gw, bare, ("203.0.113.9", 10_000 + port), True)
        answers = await answers_after_the_refill(gw, sent)
        assert answers == {request[:8]: True}
    run(main())
