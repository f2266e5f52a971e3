"""Review revdelete F3: a port a reload removed stays open for as long as any established IKE SA
came in there, not only while DELETEs are under way: an authenticated peer of another connection
keeps it open for good.

A responder's connection is chosen by the peer's address and identity, not by the port the
IKE_SA_INIT came to, so the peer of connection ``one`` (port P1) may run its IKE SA on connection
``two``'s port P2.  A reload that removes ``two`` deletes ``two``'s IKE SAs, and since h/fixreload
keeps P2 open until they are gone (``draining``, reload.close_unused_ports).  But that set counts every
authenticated IKE SA on the port (ESTABLISHED too, reload._AUTHENTICATED), and ``one``'s is not deleted:
P2 stays bound, with an IKE socket that answers that peer's requests (its rekeys make the successor
on the same port), for as long as the peer keeps its IKE SA up, which it can do forever.  The operator
removed P2 (to free it, or because it should no longer be reachable): only a restart closes it.

Real UDP on loopback, as test_ikeservice_ports_draining (the IkeService's own sockets, a site's
engine on a socket of its own, the worker's logic in process)."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest
from test_ikeservice_peers import InProcessWorker, run
from test_ikeservice_ports import LO, can_bind, conf, free_ports
from test_ikeservice_ports_draining import site_engine
from test_reload_port_closed_after_deletes import pump

from tunsec.conf.config import parse_config
from tunsec.ike.sa import State
from tunsec.policy.ids import IdSpace
from tunsec.services.ike import IkeService


def _reload_removing_the_port_of_a_peer_of_another_connection() -> tuple[bool, set[int], State, int]:
    """Connection one's peer up on connection two's port, then a reload removes two: whether that port
    can be bound again, the ports kept draining, the IKE SA's state, and the port."""
    async def body() -> tuple[bool, set[int], State, int]:
        ports = dict(zip(("one", "two"), free_ports(2), strict=True))
        worker = InProcessWorker(asyncio.get_running_loop(), lambda msg: None)
        svc = IkeService(parse_config(conf(ports), "ports.conf").connections, lambda: worker, {4: LO},  # type: ignore[arg-type]
                         IdSpace())
        svc.open_sockets()
        await svc.start()
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((LO, 0))
            s.setblocking(False)
            # connection one's peer, on connection two's port
            site = site_engine("one", s.getsockname()[1], ports["two"])
            events: list[object] = []
            try:
                site.initiate("one", "net", loop.time())
                await pump(site, s, ports["two"], events)
                (sa,) = svc.endpoint.sas
                assert sa.name == "one" and sa.local_port == ports["two"] and sa.state is State.ESTABLISHED
                await svc.reload(parse_config(conf({"one": ports["one"]}), "ports.conf"))
                await pump(site, s, ports["two"], events, rounds=3)
                return can_bind(ports["two"]), set(svc.sockets.draining), sa.state, ports["two"]
            finally:
                svc.close()

    return run(body())


def test_a_removed_port_is_not_kept_open_by_an_established_ike_sa_of_another_connection() -> None:
    closed, draining, state, _ = _reload_removing_the_port_of_a_peer_of_another_connection()
    assert state is State.ESTABLISHED   # its connection is still there: nothing to delete
    assert (closed, draining) == (True, set()), "a port no connection uses is held open by a live IKE SA"


def test_the_reload_says_which_established_ike_sas_lose_the_port(caplog: pytest.LogCaptureFixture) -> None:
    """The IKE SA that stays without its port is not left silently: the reload warns, naming the port
    and the connection (docs/operations.md)."""
    with caplog.at_level(logging.WARNING, logger="tunsec.ike"):
        _, _, state, port = _reload_removing_the_port_of_a_peer_of_another_connection()
    assert state is State.ESTABLISHED
    said = [r.getMessage() for r in caplog.records if "no longer configured" in r.getMessage()]
    assert said == [f"reload: IKE port {port} is no longer configured: closed; established IKE SAs of one ran on "
                    "it and have no IKE path until their peers reconnect to a configured port"]
