"""IKE the worker hands up is answered from its port 4500 whatever local port the event names, and an
event naming another port is counted (review revpipe F3; services/ike/natt_local.py): the harness of
test_ikeservice_peers.py (a real IkeService, its port-500 socket a recorder, the in-process worker's
SEND_IKE recorded as from port 4500), a real initiator's IKE_SA_INIT handed in through the pipe's
encoding from three sources, naming local ports 4500, 500 and 12345."""

from __future__ import annotations

import asyncio
import ipaddress

from test_ikeservice_peers import GW, Gateway, _now, run

from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Endpoint
from tunsec.services.ike.status import idle_status


def test_each_answer_leaves_from_4500_and_another_named_port_is_counted() -> None:
    """Fails before the fix: the one naming 500 is answered from the control process's port-500 socket,
    the one naming 12345 not at all (a WARNING), and nothing is counted."""
    async def go() -> tuple[list[tuple[tuple[str, int], tuple[str, int]]], int, dict[str, object]]:
        gw = Gateway(1)
        await gw.start()
        gw.connect(0)
        init = gw.sites[0].datagrams_to_send(_now())[0].data
        gw.wire.clear()
        for i, port in enumerate((4500, 500, 12345)):
            source = Endpoint(ipaddress.ip_address(f"198.51.100.{i + 1}"), 4500)
            ike = pipe.decode(pipe.encode(pipe.Ike(data=init, remote=source,
                                                   local=Endpoint(ipaddress.ip_address(GW), port))))
            assert isinstance(ike, pipe.Ike)
            gw.service.receive_natt(ike)
        for _ in range(5):
            await asyncio.sleep(0)
        status = gw.service.status_rows(pipe.Reply(1, pipe.MsgType.DUMP, pipe.Errno.OK))
        return [(src, dst) for src, dst, _ in gw.wire], gw.service.sockets.natt_other_port, status

    wire, counted, status = run(go())
    assert sorted(wire) == [((GW, 4500), (f"198.51.100.{i}", 4500)) for i in (1, 2, 3)], wire
    assert counted == 2 and status["ike_natt_other_local_port"] == 2
    assert idle_status()["ike_natt_other_local_port"] == 0
