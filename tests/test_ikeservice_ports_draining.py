"""A reload that removes the last connection on a custom IKE port keeps that port's socket while
IKE SAs still use it (review revreload F4): the DELETEs go out there and their answers come back
there; the socket is closed when the last of them is gone, and meanwhile the port takes no new
IKE SA (an IKE_SA_INIT there is not answered).

Real UDP on loopback: the IkeService's own sockets (as test_ikeservice_ports), a site's IKE engine
on a socket of its own (as the review's proof test), the worker's logic in-process."""

from __future__ import annotations

import asyncio
import dataclasses
import socket

from test_ikeservice_peers import InProcessWorker, psk_ike, run
from test_ikeservice_ports import LO, can_bind, conf, free_ports
from test_reload_port_closed_after_deletes import pump

from tunsec.conf.config import parse_config
from tunsec.ike.config import RemoteAuth
from tunsec.ike.constants import NON_ESP_MARKER
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import DownReason, IkeSaDown
from tunsec.ike.identity import Identity
from tunsec.ike.sa import State
from tunsec.policy.ids import IdSpace
from tunsec.services.ike import IkeService


def site_engine(name: str, local_port: int, gw_port: int) -> IkeEndpoint:
    cfg = psk_ike(name, f"{name}.example", RemoteAuth("psk", Identity.parse("gw.example")), LO, LO,
                  "10.2.0.0/24", "10.1.0.0/16")
    return IkeEndpoint([dataclasses.replace(cfg, local_port=local_port, remote_port=gw_port)])


def test_a_port_left_to_ike_sas_takes_no_new_one_and_closes_when_the_last_goes() -> None:
    async def body() -> None:
        ports = dict(zip(("one", "two"), free_ports(2), strict=True))
        worker = InProcessWorker(asyncio.get_running_loop(), lambda msg: None)
        svc = IkeService(parse_config(conf(ports), "ports.conf").connections, lambda: worker, {4: LO},  # type: ignore[arg-type]
                         IdSpace())
        svc.open_sockets()
        await svc.start()
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as newcomer:
            for sock in (s, newcomer):
                sock.bind((LO, 0))
                sock.setblocking(False)
            site = site_engine("two", s.getsockname()[1], ports["two"])
            events: list[object] = []
            try:
                site.initiate("two", "net", loop.time())
                await pump(site, s, ports["two"], events)
                (sa,) = svc.endpoint.sas

                # the site does not read its socket yet: our DELETE waits there, unanswered
                await svc.reload(parse_config(conf({"one": ports["one"]}), "ports.conf"))
                assert not can_bind(ports["two"]) and svc.sockets.draining == {ports["two"]}
                assert sa.state is State.DELETING and svc.children == {}

                # a new IKE SA on that port: its IKE_SA_INIT is read and dropped, never answered
                late = site_engine("two", newcomer.getsockname()[1], ports["two"])
                late.initiate("two", "net", loop.time())
                (init,) = late.datagrams_to_send(loop.time())
                newcomer.sendto(NON_ESP_MARKER + init.data, (LO, ports["two"]))
                key = next(k for k in svc.sockets.by_key if k[2] == ports["two"])
                svc._readable(svc.sockets.by_key[key], key)
                assert svc.endpoint.sas == [sa]
                try:
                    answer = newcomer.recv(65535)
                except BlockingIOError:
                    answer = b""
                assert answer == b""

                # the site answers the DELETE: the last IKE SA on the port is gone, and the port with it
                await pump(site, s, ports["two"], events)
                assert [e.reason for e in events if isinstance(e, IkeSaDown)] == [DownReason.DELETED_BY_PEER]
                assert sa.is_closed and svc.sockets.draining == set()
                assert can_bind(ports["two"]) and not can_bind(ports["one"])
                assert ports["two"] not in svc.sockets.ports   # a connection on it needs a restart again
            finally:
                svc.close()

    run(body())
