"""A gateway's `tunsec status` state with N road-warrior clients, made up but put through the real
code that builds the document (status.status_rows, services/ike/status.ike_sa_rows with real
Handles, the lease rows) and the metrics from it: each client an IKE SA, a Child SA (an inbound and
an outbound SA in the worker's DUMP, with the fast path's counters) and two policies, a lease.

Used by tests/test_metrics_text.py and bench/status_build.py (the build's cost at 1,000 to 5,000
clients, old against new)."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from tunsec.ctlsocket import Counts
from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Action, Alg, Direction, Endpoint, PolicyInfo, SaInfo, Selector
from tunsec.ike.sa import State
from tunsec.policy.pools import LeaseInfo
from tunsec.services.ike import status as ike_status
from tunsec.services.ike.handles import Handles

GW = Endpoint(ipaddress.ip_address("192.0.2.1"), 4500)


class FakeIkeSa(SimpleNamespace):
    """What the status reads of an IkeSa; hashed by identity, as IkeSa is."""

    __hash__ = object.__hash__


class _AsIs:
    """What lease_info reads of a pool (AddressPools.lease_snapshot's refs): here the offset is the address."""

    @staticmethod
    def address(offset: Any) -> Any:
        return offset


_AS_IS = _AsIs()


@dataclass
class Client:
    n: int
    sa: FakeIkeSa
    child: SimpleNamespace
    lease: LeaseInfo
    record: dict[str, Any]


def _addr(n: int) -> str:
    return f"198.51.{n // 250 % 250}.{n % 250 + 1}"


def client(n: int) -> Client:
    remote = Endpoint(ipaddress.ip_address(_addr(n)), 4500 + n // 62500)
    vip = ipaddress.ip_address(0x0A010000 + n)
    sa = FakeIkeSa(name="rw", state=State.ESTABLISHED, is_initiator=False, remote_addr=(str(remote.addr), remote.port),
                   local_ip="192.0.2.1", local_port=4500, mobike=True, spi_i=(n + 1).to_bytes(8, "big"),
                   spi_r=(n + 0x1000000).to_bytes(8, "big"), local_spi=(n + 0x1000000).to_bytes(8, "big"))
    child = SimpleNamespace(child="net", spi_in=0xC0000000 + n, spi_out=0x10000000 + n, alg="aes256gcm16", esn=False,
                            reqid=n + 1, remote=remote, local=GW, established=time.time() - 60,
                            local_ts=(ipaddress.ip_network("0.0.0.0/0"),),
                            remote_ts=(ipaddress.ip_network(f"{vip}/32"),), ike=n)
    record = {"proposal": "aes256gcm16-prfsha384-ecp384", "local_id": "gw.example", "remote_id": f"client{n}@example",
              "remote_id_proven": True, "remote_ike_id": f"client{n}@example", "remote_eap_id": None, "groups": [],
              "local_vips": [], "remote_vips": [str(vip)], "established": time.time() - 60}
    return Client(n, sa, child, LeaseInfo("pool", vip, f"client{n}@example", True), record)


@dataclass
class Gateway:
    """The live structures the status reads: a client may come or go between two turns of the loop."""

    clients: dict[int, Client] = field(default_factory=dict)   # by n: their IKE SAs
    children: dict[int, SimpleNamespace] = field(default_factory=dict)   # by inbound SPI
    handles: Handles = field(default_factory=Handles)
    dumped: list[Client] = field(default_factory=list)   # whose SAs the worker's DUMP shows

    def add(self, c: Client) -> None:
        self.clients[c.n] = c
        self.children[c.child.spi_in] = c.child
        self.handles[c.sa] = c.n   # type: ignore[index]

    def remove(self, n: int) -> None:
        c = self.clients.pop(n)
        self.children.pop(c.child.spi_in, None)
        del self.handles[c.sa]   # type: ignore[arg-type]

    def rekey(self, n: int, new: int) -> None:
        """Client n's IKE SA rekeyed: its successor (an IKE SA of its own, the next client's made-up
        one) takes the handle and the Child SA, the old one waits for its DELETE."""
        old = self.clients[n]
        successor = client(new)
        successor.child = old.child
        old.sa.state = State.REKEYED
        self.clients[new] = successor
        self.handles[successor.sa] = old.child.ike   # type: ignore[index]

    def ike_part(self) -> dict[str, Any]:
        """IkeService.status_rows's long lists (with its other keys, empty)."""
        live = list(self.clients.values())
        return {**ike_status.idle_status(),
                "ike_sas": ike_status.ike_sa_rows(
                    (c.sa for c in live), {c.sa.local_spi: c.record for c in live},  # type: ignore[misc]
                    self.children.values(), self.handles.get, self.handles.live),  # type: ignore[arg-type]
                "leases": ike_status.lease_rows(SimpleNamespace(  # type: ignore[arg-type]
                    lease_snapshot=lambda: [(c.lease.pool, _AS_IS, c.lease.address, c.lease.identity, c.lease.online,
                                             c.lease.proof) for c in live])),
                "ike_half_open": 1, "ike_drops": {"malformed": 3, "cookies_sent": 2}}

    def dump(self) -> pipe.Reply:
        """The worker's DUMP of every client's SAs and policies, and a few larval SAs."""
        sas: list[SaInfo] = []
        policies: list[PolicyInfo] = []
        for c in self.dumped:
            sas.extend(_sas(c))
            sel = Selector.from_networks(ipaddress.ip_network("0.0.0.0/0"), c.child.remote_ts[0])
            policies.append(PolicyInfo(2 * c.n + 1, 100, Action.PROTECT, c.n + 1, c.child.spi_out, c.n * 7, sel))
            policies.append(PolicyInfo(2 * c.n + 2, 100, Action.PROTECT, c.n + 1, 0, 0, sel))
        for i in range(4):
            sas.append(SaInfo(0xC8000000 + i, Direction.IN, "larval", None, False, 0, 0, None, None, 0, False, False,
                              0, dict.fromkeys(_COUNTERS, 0)))
        return pipe.Reply(1, pipe.MsgType.DUMP, pipe.Errno.OK, sas=tuple(sas), policies=tuple(policies),
                          drops=(("no_sa", 5), ("auth", 1)), gauges=(("live_sa_entries", len(sas)),))


_COUNTERS = ("packets", "bytes", "replay_drops", "auth_drops", "policy_drops")   # fastpath.SA_COUNTERS


def _sas(c: Client) -> Iterator[SaInfo]:
    n = c.n
    for spi, direction in ((c.child.spi_in, Direction.IN), (c.child.spi_out, Direction.OUT)):
        packets = n * 1009 % 100000 + (n % 3) * 10**7   # some past a million: Go's exponent form
        counters = {"packets": packets, "bytes": packets * 1300, "replay_drops": n % 5, "auth_drops": n % 2,
                    "policy_drops": 0}
        yield SaInfo(spi, direction, "mature", Alg.AES256GCM16, False, n + 1, 64 if direction is Direction.IN else 0,
                     GW, c.child.remote, n * 13, False, False, 60 + n % 7, counters)


def gateway(n: int) -> Gateway:
    gw = Gateway()
    for i in range(n):
        gw.add(client(i))
    gw.dumped = list(gw.clients.values())
    return gw


def daemon(gw: Gateway) -> Any:
    """What status.status_rows reads of the daemon (no TUN, no sockets), its IKE part gw's."""
    return SimpleNamespace(
        cfg=SimpleNamespace(tunsec=SimpleNamespace(tun="tun0")), mtu=1400, tun=None,
        sockets=SimpleNamespace(offloads=lambda: []),
        worker=SimpleNamespace(pid=None, malformed=0, late=0, dump_overflows=0, stderr_dropped=0),
        unowned=SimpleNamespace(count=0), services=[],
        calm=None, restarts=[], started=0.0, ctl_counts=Counts(), route_keeper=None,
        service_status=lambda dump: [{"tunnels": []}, gw.ike_part()])

