"""Review revipv6 F1 through the IKE service: an IKE_SA_INIT from a link-local IPv6 source is refused
on both of the service's paths (its own port-500 socket names the sender with its zone; the worker's
port-4500 IKE event carries 16 address bytes, no zone), counted where `tunsec status` and the metrics
read it (ike_drops.link_local), and nothing is kept of it.

The harness of test_ikeservice_peers.py: a real IkeService over the in-process worker; the IKE_SA_INIT
is a real initiator's (the site's), handed in as the socket and the worker would."""

from __future__ import annotations

import asyncio
import ipaddress

from test_ikeservice_peers import Gateway, _now, run

from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Errno


def test_a_link_local_ike_sa_init_is_refused_on_both_paths_and_shown_in_status() -> None:
    async def go() -> None:
        gw = Gateway(1)
        await gw.start()
        svc = gw.service
        gw.connect(0)
        init = gw.sites[0].datagrams_to_send(_now())[0].data
        gw.wire.clear()
        svc.receive(init, ("fe80::1%eth0", 500), ("fe80::9%eth0", 500))   # the control process's socket
        ike = pipe.decode(pipe.encode(pipe.Ike(data=init, remote=pipe.Endpoint(ipaddress.ip_address("fe80::1"), 4500))))
        assert isinstance(ike, pipe.Ike)
        svc.receive_natt(ike)   # the worker's event, through the pipe's encoding
        svc._pump()
        for _ in range(5):   # the SPI pool's and the service's tasks
            await asyncio.sleep(0)
        # on main: both answered, two half-open IKE SAs (whose IKE_AUTH on port 4500 never completes)
        assert svc.endpoint.half_open == 0 and not svc.endpoint.sas and not gw.wire, gw.wire
        assert svc.endpoint.stats.link_local == 2
        doc = svc.status(pipe.Reply(1, pipe.MsgType.DUMP, Errno.OK))
        assert doc["ike_drops"]["link_local"] == 2
        # a global address's IKE_SA_INIT on the same paths is served (the control)
        svc.receive(init, ("2001:db8::1", 500), ("2001:db8::9", 500))
        assert svc.endpoint.stats.link_local == 2 and svc.endpoint.half_open == 1

    run(go())
