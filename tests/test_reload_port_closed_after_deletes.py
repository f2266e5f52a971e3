"""Review revreload F4: a reload that removes the last connection on a custom IKE port
(swanctl ``local_port``) closes that port's socket (IkeSockets.close_unused) before the DELETEs of
that connection's IKE SAs are sent (reload.py: close_unused, then _pump): the DELETE, and every
retransmission of it, finds no socket ("no IPv4 IKE socket on port N"), the peer is never told,
keeps its SAs until its DPD gives up, and our side keeps the removed connection's Child SAs in
the worker until the DELETE's retransmissions give up (review revreload F1).

Real UDP on loopback: the IkeService's own sockets (as test_ikeservice_ports), a site's IKE engine
on a socket of its own, the worker's logic in-process."""

from __future__ import annotations

import asyncio
import dataclasses
import socket

from test_ikeservice_peers import InProcessWorker, psk_ike, run
from test_ikeservice_ports import LO, conf, free_ports

from tunsec.conf.config import parse_config
from tunsec.ike.config import RemoteAuth
from tunsec.ike.constants import NON_ESP_MARKER
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import DownReason, IkeSaDown
from tunsec.ike.identity import Identity
from tunsec.ike.sa import State
from tunsec.policy.ids import IdSpace
from tunsec.services.ike import IkeService


async def pump(site: IkeEndpoint, s: socket.socket, gw_port: int, events: list[object], rounds: int = 20) -> None:
    """Carry the site's IKE to the gateway's port and its answers back, over real UDP (both ports
    custom: the non-ESP marker both ways)."""
    loop = asyncio.get_running_loop()
    for _ in range(rounds):
        for d in site.datagrams_to_send(loop.time()):
            s.sendto(NON_ESP_MARKER + d.data, (LO, gw_port))
        try:
            data, src = await asyncio.wait_for(loop.sock_recvfrom(s, 65535), 0.1)
        except TimeoutError:
            data = b""
        if data.startswith(NON_ESP_MARKER):
            site.receive(data[len(NON_ESP_MARKER):], (src[0], src[1]), loop.time(), s.getsockname())
        while (ev := site.next_event()) is not None:
            events.append(ev[1])


def test_a_reload_removing_the_last_connection_on_a_port_tells_its_peers_first() -> None:
    async def body() -> None:
        ports = dict(zip(("one", "two"), free_ports(2), strict=True))
        cfg = parse_config(conf(ports), "ports.conf")
        worker = InProcessWorker(asyncio.get_running_loop(), lambda msg: None)
        svc = IkeService(cfg.connections, lambda: worker, {4: LO}, IdSpace())  # type: ignore[arg-type,return-value]
        svc.open_sockets()
        await svc.start()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((LO, 0))
            s.setblocking(False)
            site_cfg = psk_ike("two", "two.example", RemoteAuth("psk", Identity.parse("gw.example")), LO, LO,
                               "10.2.0.0/24", "10.1.0.0/16")
            site_cfg = dataclasses.replace(site_cfg, local_port=s.getsockname()[1], remote_port=ports["two"])
            site = IkeEndpoint([site_cfg])
            events: list[object] = []
            try:
                site.initiate("two", "net", asyncio.get_running_loop().time())
                await pump(site, s, ports["two"], events)
                assert [sa.state for sa in site.sas] == [State.ESTABLISHED]
                assert [sa.name for sa in svc.endpoint.sas] == ["two"] and svc.children

                await svc.reload(parse_config(conf({"one": ports["one"]}), "ports.conf"))
                await pump(site, s, ports["two"], events)
                downs = [e for e in events if isinstance(e, IkeSaDown)]
                assert [e.reason for e in downs] == [DownReason.DELETED_BY_PEER], \
                    "the site of the removed connection was never sent the DELETE (its port's socket closed first)"
            finally:
                svc.close()

    run(body())
