"""``unique`` (strongSwan's uniqueness policy) through the IKE service.

Two road warriors with the same identity connect from different addresses to a
gateway (a real IkeService over the in-process worker, see test_ikeservice_peers).
They send no INITIAL_CONTACT, so the connection's ``unique`` alone decides what
happens to the first IKE SA when the second one comes up.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import ipaddress
import itertools
import time

import pytest
from test_ikeservice_peers import GW, SHARED_SPI, Gateway, InProcessWorker, psk_ike, run, site_ip, site_net

from tunsec.conf.connections import Connection
from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Endpoint
from tunsec.ike.config import RemoteAuth
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import AuthFailed, ChildSaUp, DownReason, IkeSaDown, IkeSaUp
from tunsec.ike.identity import Identity
from tunsec.ike.sa import State
from tunsec.policy.ids import IdSpace
from tunsec.services.ike import IkeService


async def two_roadwarriors(unique: str) -> tuple[Gateway, int]:
    """The gateway after both connected, and how many worker requests it had made before the second."""
    gw = Gateway(2)
    await gw.start()
    gw.service.connections["gw"] = dataclasses.replace(gw.service.connections["gw"], unique=unique)
    for i in range(2):
        cfg = psk_ike(f"site{i}", "road.example", RemoteAuth("psk", Identity.parse("gw.example")),
                      site_ip(i), GW, site_net(i), "10.1.0.0/16")
        cfg = dataclasses.replace(cfg, initial_contact=False)
        gw.sites[i] = IkeEndpoint([cfg], spi_allocator=functools.partial(next, itertools.count(SHARED_SPI + 16 * i)))
    gw.connect(0)
    await gw.settle()
    before = len(gw.worker.log)
    gw.connect(1)
    await gw.settle()
    return gw, before


def gateway_peers(gw: Gateway) -> list[str]:
    """The addresses of the gateway's established IKE SAs."""
    return sorted(sa.remote_addr[0] for sa in gw.service.endpoint.sas if sa.state is State.ESTABLISHED)


def downs(gw: Gateway, i: int) -> list[DownReason]:
    return [e.reason for e in gw.site_events[i] if isinstance(e, IkeSaDown)]


@pytest.mark.parametrize("unique", ["no", "never"])
def test_duplicates_allowed(unique: str) -> None:
    async def go() -> None:
        gw, _ = await two_roadwarriors(unique)
        assert gateway_peers(gw) == [site_ip(0), site_ip(1)]
        assert len(gw.children_of(0)) == 1 and len(gw.children_of(1)) == 1
        assert downs(gw, 0) == downs(gw, 1) == []
    run(go())


def test_replace_deletes_the_old_ike_sa() -> None:
    async def go() -> None:
        gw, _ = await two_roadwarriors("replace")
        assert gateway_peers(gw) == [site_ip(1)]
        assert downs(gw, 0) == [DownReason.DELETED_BY_PEER] and downs(gw, 1) == []
        assert not gw.children_of(0) and len(gw.children_of(1)) == 1   # the old SA's child left the worker
    run(go())


def pool_changes(log: list[pipe.Message]) -> list[pipe.Message]:
    """The worker requests in ``log`` other than IKE datagrams and the SPI pool's own (GETSPI, and the
    DELETE of a larval SPI handed back: no UPDATE of it, so none of an SA that was installed)."""
    updated = {m.sa.spi for m in log if isinstance(m, pipe.Update)}
    return [m for m in log if not isinstance(m, (pipe.GetSpi, pipe.SendIke))
            and not (isinstance(m, pipe.Delete) and m.remote is None and m.spi not in updated)]


def test_keep_refuses_the_new_ike_sa_in_ike_auth() -> None:
    """As strongSwan: the second road warrior gets AUTHENTICATION_FAILED in IKE_AUTH; nothing of
    its IKE SA reaches the worker (no SA installed and then deleted, no policy)."""
    async def go() -> None:
        gw, before = await two_roadwarriors("keep")
        assert gateway_peers(gw) == [site_ip(0)]
        refused = [e for e in gw.site_events[1] if isinstance(e, AuthFailed)]
        assert len(refused) == 1 and refused[0].by_peer
        assert not any(isinstance(e, (IkeSaUp, ChildSaUp)) for e in gw.site_events[1])
        # only IKE datagrams go out (the AUTHENTICATION_FAILED answer) and the SPI pool is refilled,
        # and trimmed: the SPI asked ahead for the refused half-open SA goes back (see pool_changes)
        assert pool_changes(gw.worker.log[before:]) == []
        assert downs(gw, 0) == [] and len(gw.children_of(0)) == 1 and not gw.children_of(1)
    run(go())


def test_keep_refuses_a_second_ike_sa_from_the_same_address() -> None:
    """strongSwan lets a duplicate from the same address through only for IKEv1 (a reauthentication
    there); for IKEv2 ``keep`` refuses it like any other: AUTHENTICATION_FAILED in IKE_AUTH, the
    first IKE SA and its Child SA stay."""
    async def go() -> None:
        gw = Gateway(1)
        await gw.start()
        gw.service.connections["gw"] = dataclasses.replace(gw.service.connections["gw"], unique="keep")
        gw.connect(0)
        await gw.settle()
        first = gw.site_sa(0)
        before = len(gw.worker.log)
        gw.connect(0)     # the same peer, address and port: a second IKE SA (no INITIAL_CONTACT, it has one)
        await gw.settle()
        assert gateway_peers(gw) == [site_ip(0)]
        refused = [e for e in gw.site_events[0] if isinstance(e, AuthFailed)]
        assert len(refused) == 1 and refused[0].by_peer
        assert sum(isinstance(e, IkeSaUp) for e in gw.site_events[0]) == 1
        assert [sa for sa in gw.sites[0].sas if sa.state is State.ESTABLISHED] == [first]
        assert pool_changes(gw.worker.log[before:]) == [] and downs(gw, 0) == [] and len(gw.children_of(0)) == 1
    run(go())


# --- unique = replace is per address family, as strongSwan's ------------------------------------
# ike_sa_manager.c check_uniqueness looks for duplicates with create_id_enumerator(me, other,
# family of the new SA's peer): an IKE SA of the same identities over the other family is no
# duplicate, so a dual-stack client's IPv4 and IPv6 IKE SAs both stay.

GW6 = "2001:db8::1"
ROAD = {0: "198.51.100.1", 1: "2001:db8:1::1", 2: "2001:db8:1::2"}   # one identity, three addresses


@dataclasses.dataclass
class _Socket:
    """A gateway IKE socket: what it sends goes on the wire from its address."""

    wire: list[tuple[tuple[str, int], tuple[str, int], bytes]]
    addr: str

    def sendto(self, data: bytes, addr: tuple[str, int]) -> int:
        self.wire.append(((self.addr, 500), addr, data))
        return len(data)


class DualStackGateway(Gateway):
    """Gateway with an IPv4 and an IPv6 address (its connection bound to neither) and road
    warriors of one identity at ROAD's addresses."""

    async def start(self) -> None:
        gw = psk_ike("gw", "gw.example", RemoteAuth("psk"), "", None, "10.1.0.0/16", "10.2.0.0/16")
        gw = dataclasses.replace(gw, local_addr=None)
        self.worker = InProcessWorker(asyncio.get_running_loop(), self._natt_out)
        self.service = IkeService([Connection(gw.name, gw)], lambda: self.worker,  # type: ignore[arg-type,return-value]
                                  {4: GW, 6: GW6}, IdSpace())
        await self.service.start()
        self.service.connections["gw"] = dataclasses.replace(self.service.connections["gw"], unique="replace")
        self.service.sockets.by_key = {(4, GW, 500): _Socket(self.wire, GW),  # type: ignore[dict-item]
                                       (6, GW6, 500): _Socket(self.wire, GW6)}
        for i, ip in ROAD.items():
            cfg = psk_ike(f"road{i}", "road.example", RemoteAuth("psk", Identity.parse("gw.example")), ip,
                          GW if ":" not in ip else GW6, f"10.2.{i + 1}.0/24", "10.1.0.0/16")
            cfg = dataclasses.replace(cfg, initial_contact=False)
            self.sites.append(IkeEndpoint([cfg], spi_allocator=functools.partial(
                next, itertools.count(SHARED_SPI + 16 * i))))
            self.site_events.append([])

    def _natt_out(self, msg: pipe.SendIke) -> None:
        src = GW if msg.remote.addr.version == 4 else GW6
        self.wire.append(((src, 4500), (str(msg.remote.addr), msg.remote.port), msg.data))

    def connect(self, i: int) -> None:
        self.sites[i].initiate(f"road{i}", "net", time.monotonic())

    async def settle(self, wait_tasks: bool = True) -> None:
        for _ in range(200):
            moved = False
            for i, site in enumerate(self.sites):
                for d in site.datagrams_to_send(time.monotonic()):
                    self.wire.append(((ROAD[i], d.local_port), d.addr, d.data))
                while (ev := site.next_event()) is not None:
                    self.site_events[i].append(ev[1])
            while self.wire:
                moved = True
                src, dst, data = self.wire.pop(0)
                if dst[0] in (GW, GW6) and dst[1] == 4500:
                    self.service.receive_natt(pipe.Ike(data=data, remote=Endpoint(ipaddress.ip_address(src[0]),
                                                                                  src[1])))
                elif dst[0] in (GW, GW6):
                    self.service.receive(data, src, dst)
                    self.service._pump()
                else:
                    i = next(k for k, ip in ROAD.items() if ip == dst[0])
                    self.sites[i].receive(data, src, time.monotonic(), dst)
            for _ in range(5):
                await asyncio.sleep(0)
            if self.service._tasks or self.service.sockets.natt_sends:
                await asyncio.wait([*self.service._tasks, *self.service.sockets.natt_sends])
                moved = True
            if not moved:
                return
        raise AssertionError("the wire never went quiet")


def test_replace_keeps_the_duplicate_of_the_other_address_family() -> None:
    async def go() -> None:
        gw = DualStackGateway(0)
        await gw.start()
        gw.connect(0)      # over IPv4
        await gw.settle()
        gw.connect(1)      # the same identity over IPv6: no duplicate of the IPv4 one
        await gw.settle()
        assert gateway_peers(gw) == sorted([ROAD[0], ROAD[1]])
        assert downs(gw, 0) == [] and downs(gw, 1) == []
        gw.connect(2)      # and again over IPv6, from another address: replaces the IPv6 one only
        await gw.settle()
        assert gateway_peers(gw) == sorted([ROAD[0], ROAD[2]])
        assert downs(gw, 0) == [] and downs(gw, 1) == [DownReason.DELETED_BY_PEER] and downs(gw, 2) == []
        ips = {str(c.remote.addr) for c in gw.service.children.values()}
        assert ips == {ROAD[0], ROAD[2]}     # the replaced SA's child left the worker, the others stayed
    run(go())
