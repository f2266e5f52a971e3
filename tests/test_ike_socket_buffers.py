"""The IKE sockets get a big receive buffer, as the ESP sockets do (services/ike/sockets.py open):
a burst of IKE_SA_INITs overflowed the default one, and every datagram the kernel dropped cost a
client a 4 s retransmission.  Read back from the real sockets the service opened on loopback."""

from __future__ import annotations

import asyncio
import socket

from test_ikeservice_peers import InProcessWorker, run
from test_ikeservice_ports import LO, conf, free_ports

from tunsec.conf.config import parse_config
from tunsec.policy.ids import IdSpace
from tunsec.services.base import SOCKET_BUFFER
from tunsec.services.ike import IkeService


def test_ike_sockets_have_a_big_receive_buffer() -> None:
    async def body() -> dict[tuple[int, str, int], int]:
        cfg = parse_config(conf(dict(zip(("one", "two"), free_ports(2), strict=True))), "buffers.conf")
        worker = InProcessWorker(asyncio.get_running_loop(), lambda msg: None)
        svc = IkeService(cfg.connections, lambda: worker, {4: LO}, IdSpace())  # type: ignore[arg-type,return-value]
        svc.open_sockets()
        try:
            return {key: s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) for key, s in svc.sockets.by_key.items()}
        finally:
            svc.close()

    sizes = run(body())
    assert len(sizes) == 2
    # Linux reads back twice what was set (socket(7)); as root SO_RCVBUFFORCE is not capped by
    # net.core.rmem_max, whose default (208 KiB) is what every IKE socket had before
    assert set(sizes.values()) == {2 * SOCKET_BUFFER}, sizes
