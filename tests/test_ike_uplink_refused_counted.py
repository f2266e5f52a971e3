"""IKE sent by the uplink's interface (exclude_gate._uplink: an unauthenticated address a full tunnel's TUN
routes capture) that the kernel refuses is counted, not counted as sent, and has the host's paths listed
again, so that the retransmit leaves by the uplink's new interface (review revfull4 F1: a PPP redial or a
modem recreates the uplink with a new ifindex; the old one is ENODEV).  Port 500 by a real socket and a
real refusal (an ifindex no interface has); port 4500 by the worker's error answer to SEND_IKE."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable, Sequence
from ipaddress import ip_network
from typing import Any

from tunsec.dataplane.client import WorkerError
from tunsec.dataplane.exclude import IPAddress, IPNetwork, Path
from tunsec.dataplane.pipe import Endpoint, Errno
from tunsec.ike.endpoint import Datagram
from tunsec.policy.selector import parse_ip
from tunsec.services.ike.exclude_gate import ExcludeGate
from tunsec.services.ike.sockets import IkeSockets

GONE_IFINDEX = 0x7FFF_FFF0   # the uplink's ifindex before it was recreated: no interface has it now
LOOPBACK = 1                 # the "new" uplink: lo, so that the datagram can be seen arriving
CAPTURED = [ip_network("127.0.0.0/8")]   # the TUN's routes, as a full tunnel's halves capture a peer


class Routes:
    """ExcludeRoutes' surface the gate uses: the host's default route by an interface that is gone, until
    refresh lists the paths again."""

    def __init__(self) -> None:
        self.held: dict[Any, Path] = {}
        self.refused = 0
        self.refreshed = 0
        self.paths = {socket.AF_INET: [Path(ip_network("0.0.0.0/0"), None, GONE_IFINDEX)]}

    def ensure(self, peers: Iterable[IPAddress], nets: Sequence[IPNetwork]) -> list[str]:
        raise AssertionError("an unauthenticated address gets no exclude route")

    def refresh(self) -> None:
        self.refreshed += 1
        self.paths = {socket.AF_INET: [Path(ip_network("0.0.0.0/0"), None, LOOPBACK)]}


def _gate(routes: Routes, tasks: list[Any]) -> ExcludeGate:
    def spawn(coro: Any) -> None:
        tasks.append(asyncio.ensure_future(coro))
    return ExcludeGate(routes, lambda: CAPTURED, lambda d: None, lambda: [], spawn,  # type: ignore[arg-type]
                       lambda ip, data: False)   # not authenticated


def test_ike_by_an_uplink_that_is_gone_is_counted_and_the_retransmit_leaves_by_the_new_one() -> None:
    async def run() -> None:
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(2)
        sender.bind(("0.0.0.0", 0))
        port = sender.getsockname()[1]
        sockets = IkeSockets([], {4: "0.0.0.0"}, lambda: None, lambda c: None)  # type: ignore[arg-type,return-value]
        sockets.by_key[(4, "0.0.0.0", port)] = sender   # keyed by IP version
        routes, tasks = Routes(), []
        sockets.gate = gate = _gate(routes, tasks)
        try:
            datagram = Datagram(b"ike", receiver.getsockname(), port, "127.0.0.1")
            sockets.send(datagram)   # by ifindex GONE_IFINDEX: refused
            assert (gate.stats.uplink, gate.stats.uplink_failed) == (0, 1), gate.stats
            await asyncio.gather(*tasks)
            assert routes.refreshed == 1, "the host's paths were not listed again after ENODEV"
            sockets.send(datagram)   # IKE's retransmit: by the new interface
            assert receiver.recv(64).endswith(b"ike")
            assert (gate.stats.uplink, gate.stats.uplink_failed) == (1, 1), gate.stats
        finally:
            receiver.close()
            sender.close()
    asyncio.run(run())


class RefusingWorker(IkeSockets):
    """IkeSockets whose worker answers every SEND_IKE with an error (its sendmsg by the OIF failed)."""

    def _send_natt(self, data: bytes, remote: Any, source: str | None = None, oif: int = 0,
                   unmarked: bool = False) -> None:
        sent: Any = asyncio.get_running_loop().create_future()
        self._natt_failed(remote, sent, WorkerError("SEND_IKE", Errno.EIO), oif)


def test_a_send_ike_by_the_uplink_the_worker_could_not_send_is_counted_as_failed_not_as_sent() -> None:
    async def run() -> None:
        sockets = RefusingWorker([], {4: "0.0.0.0"}, lambda: None, lambda c: None)  # type: ignore[arg-type,return-value]
        routes, tasks = Routes(), []
        sockets.gate = gate = _gate(routes, tasks)
        sockets.send(Datagram(b"ike", ("127.0.0.9", 4500), 4500, None))
        await asyncio.gather(*tasks)
        assert (gate.stats.uplink, gate.stats.uplink_failed, routes.refreshed) == (0, 1, 1), gate.stats
        sockets._natt_answered(Endpoint(parse_ip("127.0.0.9"), 4500), asyncio.get_running_loop().create_future(),
                               [], LOOPBACK)   # an OK answer: sent by the uplink
        assert gate.stats.uplink == 1
    asyncio.run(run())
