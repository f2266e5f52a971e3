"""Review revlate3 (remark): IkeService.start read its IKE sockets and installed its traps before the
first listing of the host's addresses returned, so a REDIRECT answering a trap's first initiation
was checked against none of them and followed to an address of the host itself.

Two real IkeServices with the in-process worker (test_ikeservice_rekey.Pair): A's child is a trap,
a packet hits it as soon as its policy is in; B redirects every client (``redirect_on = init``) to
OWN, which A's listing of its host's addresses names, a listing slowed down (held until B's answer
has had its chance to arrive).  The REDIRECT must be refused, not followed to OWN.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import threading
from dataclasses import dataclass

import pytest
from test_ikeservice_expiry import ExpiryPair
from test_ikeservice_rekey import A_IP, B_IP, Pair, RecordingWorker, Wire

from tunsec.conf.connections import Action, Connection
from tunsec.ike.config import IkeConfig
from tunsec.policy.ids import IdSpace
from tunsec.services.addrwatch import InterfaceAddress
from tunsec.services.ike import IkeService
from tunsec.services.ike.host_addresses import HostAddresses

OWN = "192.0.2.200"   # an address of A's host (on one of its interfaces), in no connection's local_addrs


class RedirectTrapPair(ExpiryPair):
    """A: child "net" is a trap; B: redirects every client to OWN in IKE_SA_INIT."""

    def ike_config(self, side: str) -> IkeConfig:
        cfg = Pair.ike_config(self, side)
        return dataclasses.replace(cfg, redirect_to=OWN, redirect_on="init") if side == "b" else cfg

    def connection(self, side: str, close_action: Action) -> Connection:
        conn = super().connection(side, close_action)
        if side == "b":
            return conn
        return dataclasses.replace(conn, children=(dataclasses.replace(conn.children[0], start_action="trap"),))


@dataclass
class Addressed(Wire):
    """The wire, with where each datagram was addressed to."""

    to: list[str] = dataclasses.field(default_factory=list)

    def sendto(self, data: bytes, addr: tuple[str, int]) -> int:
        self.to.append(addr[0])
        return super().sendto(data, addr)


class SlowListing:
    """A's host addresses (OWN among them), listed once the test lets the listing return."""

    def __init__(self) -> None:
        self.called = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> frozenset[InterfaceAddress]:
        self.called.set()
        self.release.wait(10)
        return frozenset({InterfaceAddress(1, ipaddress.ip_address(OWN), 32)})


def test_a_redirect_answering_a_traps_first_initiation_during_the_start_is_refused(
        caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> Addressed:
        pair = RedirectTrapPair()
        listing = SlowListing()
        for side in ("b", "a"):
            worker = pair.workers[side] = RecordingWorker(side, pair)
            pair.svc[side] = IkeService([pair.connection(side, "none")], lambda w=worker: w,  # type: ignore[misc]
                                        {4: pair.ip(side)}, IdSpace())
        a, b = pair.svc["a"], pair.svc["b"]
        b.host_addresses = HostAddresses(b.endpoint, source=frozenset)
        a.host_addresses = HostAddresses(a.endpoint, source=listing)
        await b.start()
        b.sockets.by_key = {(4, B_IP, 500): Wire("b", pair)}  # type: ignore[dict-item]
        wire = Addressed("a", pair)
        install = a.install_traps

        async def traps_hit_at_once(**kw: object) -> None:
            await install(**kw)  # type: ignore[arg-type]
            a.sockets.by_key = {(4, A_IP, 500): wire}  # type: ignore[dict-item]
            for pid in list(a.trap_policies):
                a.acquire(pid)   # a packet for B's network, the moment the trap is in
        a.install_traps = traps_hit_at_once  # type: ignore[method-assign]
        starting = asyncio.ensure_future(a.start())
        while not listing.called.is_set():
            await asyncio.sleep(0.01)
        await pair.settle()   # whatever A sent meanwhile is answered (B's REDIRECT), and taken in
        listing.release.set()
        await starting
        await pair.settle()
        for svc in (a, b):
            svc.host_addresses.close()
            if svc._addr_watch is not None:
                svc._addr_watch.close()
        return wire

    with caplog.at_level(logging.INFO, "tunsec"):
        wire = asyncio.run(body())
    lines = [r.getMessage() for r in caplog.records]
    assert not any(f"redirected us to {OWN}" in line for line in lines), lines
    assert OWN not in wire.to, "A followed the REDIRECT to an address of its own host"
    assert any(f"REDIRECT not followed: {OWN} is an address of this host" in line for line in lines), lines


