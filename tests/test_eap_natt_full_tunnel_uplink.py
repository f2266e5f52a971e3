"""Review revfull3 F1: a full-tunnel hub's EAP road warrior behind a NAT never gets its EAP rounds.

A client behind a NAT floats to port 4500 for IKE_AUTH (RFC 7296 2.23).  The hub's IKE_AUTH answers
before the client is authenticated (EAP Identity, the method's rounds, EAP-Success: every IKE_AUTH
answer but the last) are not trusted by services/ike/exclude_trust.py (no IkeSaUp yet), so the gate
(services/ike/exclude_gate.py) gives them the uplink's interface; on port 4500 the worker's SEND_IKE
takes no interface and IkeSockets.send sends them as routed: into the full tunnel's TUN (counted
``into_tun``).  The client never sees them and the connection never comes up.  Fixed: SEND_IKE
carries the uplink's interface (OIF) as pktinfo.sendto does on port 500.

Real engines (a client and a gateway IkeEndpoint, EAP-MSCHAPv2 as tests/ike/test_engine_eap.py),
the real trust function, the real ExcludeGate and IkeSockets.send; the gateway's IKE_AUTH answers
are handed to IkeSockets.send on port 4500 as the service sends them to a NAT'd client (the in-memory
network has no NAT to make the engine float), with the service's order: the events (IkeSaUp fills
``ike_up``) before the datagrams.  Only the worker's pipe is a recorder."""

from __future__ import annotations

import asyncio
import socket
from ipaddress import ip_network
from typing import Any

from ike.test_engine_eap import NOW, client, gateway

from tunsec.dataplane.exclude import Path
from tunsec.ike.constants import NATT_PORT, ExchangeType
from tunsec.ike.endpoint import Datagram, IkeEndpoint
from tunsec.ike.events import IkeSaUp
from tunsec.ike.message import decode_header
from tunsec.ike.testing import Network
from tunsec.services.ike.exclude_gate import ExcludeGate
from tunsec.services.ike.exclude_trust import authenticated_peer
from tunsec.services.ike.sockets import IkeSockets

A, B = "192.0.2.1", "192.0.2.2"   # the client (its NAT's public address) and the hub
HALVES = [ip_network("0.0.0.0/1"), ip_network("128.0.0.0/1")]   # the hub's full tunnel
UPLINK = 7


class Routes:
    """ExcludeRoutes' surface the gate uses: the host's default route by the uplink; records routes asked."""

    def __init__(self) -> None:
        self.held: dict[Any, Path] = {}
        self.refused = 0
        self.paths = {socket.AF_INET: [Path(ip_network("0.0.0.0/0"), "192.0.2.254", UPLINK)]}

    def ensure(self, peers: list[Any], nets: list[Any]) -> list[str]:
        for p in peers:
            self.held[p] = self.paths[socket.AF_INET][0]
        return []


class NattRecorder(IkeSockets):
    """IkeSockets whose SEND_IKE (the worker's port 4500) is recorded instead of piped, and answered OK."""

    natt: list[tuple[bytes, int]]   # (datagram, its SEND_IKE's OIF)

    def _send_natt(self, data: bytes, remote: Any, source: str | None = None, oif: int = 0,
                   unmarked: bool = False) -> None:
        self.natt.append((data, oif))
        sent: Any = asyncio.get_running_loop().create_future()
        self._natt_answered(remote, sent, [], oif)   # the worker's OK: the gate counts it (uplink)


def test_a_natd_eap_road_warriors_ike_auth_answers_do_not_go_into_the_full_tunnels_tun() -> None:
    async def run() -> None:
        net = Network()
        a = net.add(A, IkeEndpoint([client()], wall_clock=lambda: NOW))
        b = net.add(B, IkeEndpoint([gateway()], wall_clock=lambda: NOW))
        up: set[bytes] = set()
        sockets = NattRecorder([], {socket.AF_INET: B}, lambda: None, lambda c: None)  # type: ignore[arg-type,return-value]
        sockets.natt = []
        tasks: list[Any] = []

        def spawn(coro: Any) -> None:
            tasks.append(asyncio.ensure_future(coro))
        sockets.gate = ExcludeGate(Routes(), lambda: HALVES, sockets.send, lambda: [],  # type: ignore[arg-type]
                                   spawn, lambda ip, data: authenticated_peer(b, up, ip, data))
        a.initiate("rw", "net", net.now)
        answers = 0
        for _ in range(50):
            flight = [(A, d) for d in a.datagrams_to_send(net.now)]
            while (ev := b.next_event()) is not None:   # the service: events first (ike_up), then sends
                if isinstance(ev[1], IkeSaUp):
                    up.add(ev[0].local_spi)
            for d in b.datagrams_to_send(net.now):
                if decode_header(d.data).exchange == ExchangeType.IKE_AUTH:
                    answers += 1   # to the NAT'd client: on 4500, through the worker
                    sockets.send(Datagram(d.data, (A, NATT_PORT), NATT_PORT, None))
                flight.append((B, d))
            while a.next_event() is not None:
                pass
            if not flight:
                break
            for src, d in flight:
                dst = B if src == A else A
                net.nodes[dst].receive(d.data, (src, d.local_port), net.now, local_addr=(dst, d.local_port))
        await asyncio.gather(*tasks)
        assert up, "the EAP exchange did not complete"
        assert answers >= 4   # Identity, challenge, success, EAP-Success, AUTH
        stats = sockets.gate.stats
        assert stats.into_tun == 0, (
            f"{stats.into_tun} of the hub's {answers} IKE_AUTH answers to the NAT'd EAP client went into the "
            "full tunnel's TUN (port 4500 has no interface): the client never gets them")
        # the answers before IkeSaUp left by the uplink's interface (SEND_IKE's OIF), not as routed
        by_uplink = [d for d, oif in sockets.natt if oif == UPLINK]
        assert len(by_uplink) == stats.uplink == answers - 1, (sockets.natt, stats)
    asyncio.run(run())
