"""A session's Stop counts every packet its Child SAs took in or sent up to each SA's DELETE: the
worker's answer to the DELETE carries the SA's final counters, read as it leaves the SAD, so
packets the fast path processed after any DUMP and just before the DELETE are in the Stop.

Through the real IKE service (its delete path: installs._child_gone, _remove, _delete_sa, and the
accounting hooks of radius_edge) driving the worker's request handling and C fast path in process
(test_ikeservice_peers.Gateway), a site's IKE engine wired to it in memory, and an accounting
server on loopback (real UDP, a port the kernel picks)."""
from __future__ import annotations

import asyncio
import ipaddress
import itertools
from collections.abc import Callable

import pytest
from test_ikeservice_peers import GW, Gateway, _now, esp_seal, ipv4_udp, site_ip
from test_radius_accounting import serve, settings, until
from test_radius_messages import STATION

from tunsec.dataplane import pipe
from tunsec.dataplane.fastpath import Drop
from tunsec.dataplane.pipe import Endpoint
from tunsec.ike.events import ChildSaUp
from tunsec.radius.accounting import Accounting

SITE_TO_GW = ipv4_udp("10.2.1.7", "10.1.0.5", b"from the site")
GW_TO_SITE = ipv4_udp("10.1.0.5", "10.2.1.7")   # what Gateway.send_to_site sends


class Traffic:
    """Packets through the gateway's fast path on site 0's Child SA: in (sealed as the site seals
    them) and out (sealed for the site), counted as sent."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.seq = itertools.count(1)
        self.packets_in = self.packets_out = 0
        (child,) = gw.children_of(0)
        self.spi = child.spi_in
        self.key = [e for e in gw.site_events[0] if isinstance(e, ChildSaUp)][-1].key_out.reveal()

    def flow(self, n: int) -> None:
        for _ in range(n):
            esp = esp_seal(self.spi, next(self.seq), self.key, SITE_TO_GW)
            inner, drop = self.gw.worker.dp.inbound(esp, Endpoint(ipaddress.ip_address(site_ip(0)), 4500),
                                                    Endpoint(ipaddress.ip_address(GW), 4500))
            assert (inner, drop) == (SITE_TO_GW, Drop.NONE)
            assert self.gw.send_to_site(0)[2] is Drop.NONE
        self.packets_in += n
        self.packets_out += n


def before_first_delete(gw: Gateway, then: Callable[[], None]) -> None:
    """``then`` runs just before the worker applies the first DELETE: as packets the C loop thread
    processes between whatever read the SA last and its removal."""
    send = gw.worker.send
    done = [False]

    def build_then(build: Callable[[int], pipe.Message]) -> Callable[[int], pipe.Message]:
        def built(req_id: int) -> pipe.Message:
            msg = build(req_id)
            if isinstance(msg, pipe.Delete) and not done[0]:
                done[0] = True
                then()
            return msg
        return built

    gw.worker.send = lambda build, then=None: send(build_then(build), then)  # type: ignore[method-assign]


@pytest.mark.parametrize("who", ["site", "gateway", "gateway, the site silent"])
def test_the_stop_counts_the_packets_the_fast_path_took_just_before_the_deletes(who: str) -> None:
    """5 packets each way, a DUMP (a status query) reads them, 3 more each way come just before the
    Child SA's first DELETE (the site's IKE SA DELETE, or the gateway's terminate): the Stop has all 8,
    octets and packets, each way (on main it had 5: the final DUMP went before them).  A site that does
    not answer the gateway's DELETE: its Child SA leaves the worker at once (review revreload F1), with
    the same counters; the Stop goes then too, not when the IKE SA ends at the answer (here: late),
    and the answer sends no second one (review revdelete F1)."""
    async def main() -> tuple[list[dict[str, int]], Traffic]:
        server, port = await serve("answer")
        gw = Gateway(1)
        await gw.start()
        gw.connect(0)
        await gw.settle()
        svc = gw.service
        # accounting as eap-radius would have it (the site authenticates with a PSK here)
        svc.accounting = Accounting(settings(port), svc._acct_dump, svc._acct_children)
        (child,) = gw.children_of(0)
        svc.accounting.start(child.ike, "site0", STATION, [])
        traffic = Traffic(gw)
        traffic.flow(5)
        await until(lambda: server.of("Start"))
        svc.acct_observe(pipe.join_dump_replies(await gw.worker.request(lambda r: pipe.Dump(r))))
        seen = svc.accounting.usage(child.ike)
        assert seen is not None and (seen.packets_in, seen.packets_out) == (5, 5)
        before_first_delete(gw, lambda: traffic.flow(3))
        lost: list[bytes] = []
        if who == "site":
            gw.site_sa(0).delete(_now())
        else:
            if who != "gateway":
                def lose(i: int, data: bytes) -> bool:
                    lost.append(data)
                    return True
                gw.drop = lose
            next(sa for sa in svc.endpoint.sas if not sa.is_closed).delete(_now())
            svc._pump()
        await gw.settle()
        assert gw.children_of(0) == [] and [s for s in gw.worker.dp.sas() if s.state != "larval"] == []
        if lost:
            await until(lambda: server.of("Stop"))   # while the IKE SA is still being deleted
            gw.drop = None
            gw.wire += [((site_ip(0), 4500), (GW, 4500), data) for data in lost]
            await gw.settle()
        await until(lambda: server.of("Stop"))
        svc.accounting.close()
        server.transport.close()
        await asyncio.sleep(0.05)   # a second Stop (the IKE SA's end) would be out by now
        return server.of("Stop"), traffic

    stops, traffic = asyncio.run(main())
    assert len(stops) == 1
    stop = stops[0]
    assert (traffic.packets_in, traffic.packets_out) == (8, 8)
    assert (stop["Acct-Input-Packets"], stop["Acct-Output-Packets"]) == (8, 8), stop
    assert (stop["Acct-Input-Octets"], stop["Acct-Output-Octets"]) == (8 * len(SITE_TO_GW), 8 * len(GW_TO_SITE))
    assert stop["Acct-Terminate-Cause"] == (1 if who == "site" else 6)
