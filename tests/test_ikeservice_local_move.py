"""Issue 9 item 4: when the peer reaches us at another of our addresses (MOBIKE, or a NAT
rebinding onto it), every Child SA moves both ends, and ESP from the worker's real packet loop on
a wildcard-bound UDP socket leaves from our new address afterwards (IP_PKTINFO from the SA's
local address), not from the old one, which still exists.

The gateway is an IkeService with the worker's request handling and C fast path in process; its
packet loop runs on a real UDP socket bound to 0.0.0.0 and a socketpair standing in for the TUN.
The site is an in-memory IkeEndpoint; the ESP it is sent arrives at real loopback sockets, whose
``recvfrom`` says which of the gateway's addresses each datagram left from."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
from collections.abc import Iterator

import pytest
from test_ikeservice_peers import PSK, InProcessWorker, _now, esp_open, ipv4_udp, run

from tunsec.conf.connections import Connection
from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Direction, Endpoint
from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaUp
from tunsec.ike.identity import Identity
from tunsec.ike.proposals import parse_proposals
from tunsec.policy.ids import IdSpace
from tunsec.services.ike import IkeService

GW1, GW2 = "127.0.0.1", "127.0.0.2"   # two of the gateway's addresses (all of 127/8 is ours)
SITE = "127.0.0.10"


def _config(name: str, local_id: str, remote: RemoteAuth, local: str | None, peer: str | None,
            local_ts: str, remote_ts: str, mobike: bool) -> IkeConfig:
    return IkeConfig(name, LocalAuth("psk", Identity.parse(local_id)), remote,
                     parse_proposals("aes128gcm16-prfsha256-curve25519"),
                     (child_config("net", local_ts, remote_ts, "aes128gcm16"),),
                     psk=PSK, local_addr=local, remote_addr=peer, mobike=mobike)


class _Port500:
    """The gateway's port-500 socket (IKE_SA_INIT only): its datagrams go on the in-memory wire."""

    def __init__(self, wire: list[tuple[tuple[str, int], tuple[str, int], bytes]]) -> None:
        self.wire = wire

    def sendto(self, data: bytes, addr: tuple[str, int]) -> int:
        self.wire.append(((GW1, 500), addr, data))
        return len(data)


@pytest.fixture
def esp_sockets() -> Iterator[list[socket.socket]]:
    """Two sockets on SITE: where the site's NAT mapping points before and after it moves."""
    socks = []
    for _ in range(2):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((SITE, 0))
        s.settimeout(5)
        socks.append(s)
    yield socks
    for s in socks:
        s.close()


@pytest.mark.parametrize("mobike", [True, False])
def test_a_child_sa_moves_to_our_new_address_and_esp_leaves_from_it(
        mobike: bool, esp_sockets: list[socket.socket]) -> None:
    async def body() -> None:
        wire: list[tuple[tuple[str, int], tuple[str, int], bytes]] = []
        sent_from: list[str | None] = []

        def natt_out(msg: pipe.SendIke) -> None:
            sent_from.append(str(msg.local.addr) if msg.local else None)
            wire.append(((str(msg.local.addr) if msg.local else GW1, 4500),
                         (str(msg.remote.addr), msg.remote.port), msg.data))

        worker = InProcessWorker(asyncio.get_running_loop(), natt_out)
        # the gateway has no local_addrs: its sockets are on the wildcard, its address is where
        # the peer talks to it
        gw = _config("gw", "gw.example", RemoteAuth("psk"), None, None, "10.1.0.0/16", "10.2.0.0/16", mobike)
        service = IkeService([Connection(gw.name, gw)], lambda: worker, {}, IdSpace())  # type: ignore[arg-type,return-value]
        await service.start()
        service.sockets.by_key = {(4, GW1, 500): _Port500(wire)}  # type: ignore[dict-item]
        site_cfg = _config("site", "site.example", RemoteAuth("psk", Identity.parse("gw.example")), SITE, GW1,
                           "10.2.1.0/24", "10.1.0.0/16", mobike)
        site = IkeEndpoint([site_cfg])
        events: list[object] = []
        # the site as the gateway sees it (its NAT's mapping), and which gateway address it talks to
        mapping = [(SITE, esp_sockets[0].getsockname()[1])]
        gw_addr = [GW1]

        async def settle() -> None:
            idle = 0
            while idle < 20:   # as test_ikeservice_peers' Gateway.settle
                for d in site.datagrams_to_send(_now()):
                    wire.append((mapping[0], (gw_addr[0], d.addr[1]), d.data))
                while (ev := site.next_event()) is not None:
                    events.append(ev[1])
                moved = bool(wire)
                while wire:
                    src, dst, data = wire.pop(0)
                    if dst[0] in (GW1, GW2):
                        if dst[1] == 4500:
                            service.receive_natt(pipe.Ike(data=data, remote=Endpoint(ipaddress.ip_address(src[0]),
                                                                                     src[1]),
                                                          local=Endpoint(ipaddress.ip_address(dst[0]), 4500)))
                        else:
                            service.receive(data, src, dst)
                            service._pump()
                    else:   # to the site, through its NAT
                        site.receive(data, (GW1, src[1]), _now(), (SITE, 4500))
                for _ in range(5):
                    await asyncio.sleep(0)
                if service._tasks or service.sockets.natt_sends:
                    await asyncio.wait([*service._tasks, *service.sockets.natt_sends])
                    moved = True
                idle = 0 if moved else idle + 1

        tun, tun_inside = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("0.0.0.0", 0))
        for s in (tun_inside, udp):
            s.setblocking(False)   # the loop reads each until EAGAIN, as the worker's own
        worker.dp.set_fds(tun_inside.fileno(), udp.fileno())
        loop_thread = threading.Thread(target=worker.dp.run, daemon=True)
        loop_thread.start()
        try:
            site.initiate("site", "net", _now())
            await settle()
            up = next(e for e in events if isinstance(e, ChildSaUp))
            key = up.key_in.reveal()
            packet = ipv4_udp("10.1.0.5", "10.2.1.7")

            def esp_arrives(at: socket.socket) -> str:
                tun.send(packet)   # into the gateway's TUN: the loop encrypts and sends it
                esp, sender = at.recvfrom(2048)
                assert esp_open(key, esp) == (up.spi_in, packet)
                assert sender[1] == udp.getsockname()[1]
                return str(sender[0])

            assert esp_arrives(esp_sockets[0]) == GW1
            # the site now reaches the gateway at its other address, from a new NAT mapping;
            # GW1 stays the gateway's
            gw_addr[0], mapping[0] = GW2, (SITE, esp_sockets[1].getsockname()[1])
            sa = next(iter(site.sas))
            if mobike:
                assert sa.update_addresses()
            else:
                sa.send_liveness()
            await settle()
            assert esp_arrives(esp_sockets[1]) == GW2   # the same SA and keys, from our new address
            [state] = service.children.values()
            assert (str(state.local.addr), state.remote) == (GW2, Endpoint(ipaddress.ip_address(SITE),
                                                                             esp_sockets[1].getsockname()[1]))
            # our end moved once for each SA (with MOBIKE at once, the peer's after its return
            # routability check: then a second MIGRATE moves the peer only)
            moves = [(m.direction, str(m.new_local.addr)) for m in worker.log
                     if isinstance(m, pipe.Migrate) and m.new_local is not None]
            assert sorted(moves) == [(Direction.IN, GW2), (Direction.OUT, GW2)]
            assert sent_from[-1] == GW2   # and IKE answers from there too
        finally:
            worker.dp.stop()
            loop_thread.join(5)
            for s in (tun, tun_inside, udp):
                s.close()

    run(body())
