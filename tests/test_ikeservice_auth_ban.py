"""The failed-authentication ban's success wiring through the IKE service (ike/auth_ban.py,
AuthBan.succeeded; review revban2 F1): an IKE SA a peer opened and authenticated vouches for its wider
IPv6 prefixes (/56, /48), whose parts' failures then ban only the parts; an IKE SA we opened does not
(the peer never proved anything to us of its own will: any address we initiate to would vouch).

A real IkeService on an IPv6 address over the in-process worker (test_ikeservice_peers'), IKE engines
as peers wired to it in memory: whole IKE_SA_INIT and IKE_AUTH exchanges, the attackers' with a wrong
PSK, each from a /64 of its own (auth_failures = 1: each /64 banned at its first failure, a /56 at 4
failures of its /64s, a /48 at 16).  Also what `tunsec status` and the metrics show of the bans.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import time
from typing import Any

from test_ikeservice_peers import PSK, InProcessWorker, psk_ike, run

from tunsec import metrics
from tunsec.conf.connections import Connection
from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Endpoint
from tunsec.ike.auth_ban import AuthBanSettings
from tunsec.ike.config import RemoteAuth
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import AuthFailed, IkeSaUp
from tunsec.ike.identity import Identity
from tunsec.ike.secret import Secret
from tunsec.policy.ids import IdSpace
from tunsec.services.ike import IkeService

GW6 = "2001:db8::1"
WRONG = Secret(b"a guess at the shared secret")
Wire = list[tuple[tuple[str, int], tuple[str, int], bytes]]


@dataclasses.dataclass
class _Socket:
    """The gateway's port-500 socket: what it sends goes on the wire from its address."""

    wire: Wire

    def sendto(self, data: bytes, addr: tuple[str, int]) -> int:
        self.wire.append(((GW6, 500), addr, data))
        return len(data)


class Gateway6:
    """An IkeService on GW6: ``gw`` open to anyone (PSK), ``out`` initiated by it to OUT_PEER; peers
    added by address."""

    def __init__(self, out_peer: str) -> None:
        self.out_peer = out_peer
        self.wire: Wire = []
        self.peers: dict[str, IkeEndpoint] = {}
        self.events: dict[str, list[Any]] = {}

    async def start(self) -> None:
        gw = psk_ike("gw", "gw.example", RemoteAuth("psk"), GW6, None, "10.1.0.0/16", "10.2.0.0/16")
        out = psk_ike("out", "gw.example", RemoteAuth("psk", Identity.parse("out.example")), GW6, self.out_peer,
                      "10.1.0.0/16", "10.9.0.0/24")
        self.worker = InProcessWorker(asyncio.get_running_loop(), self._natt_out)
        self.service = IkeService([Connection("gw", gw), Connection("out", out)], lambda: self.worker,  # type: ignore[arg-type,return-value]
                                  {6: GW6}, IdSpace())
        await self.service.start()
        self.service.auth_ban.settings = AuthBanSettings(max=1, window=600.0, ban=600.0)
        self.service.sockets.by_key = {(6, GW6, 500): _Socket(self.wire)}  # type: ignore[dict-item]
        # the peer the gateway initiates to: it only answers
        cfg = psk_ike("gw", "out.example", RemoteAuth("psk", Identity.parse("gw.example")), self.out_peer, GW6,
                      "10.9.0.0/24", "10.1.0.0/16")
        self._add(self.out_peer, cfg)

    def _add(self, addr: str, cfg: Any) -> IkeEndpoint:
        self.peers[addr] = IkeEndpoint([cfg])
        self.events[addr] = []
        return self.peers[addr]

    def _natt_out(self, msg: pipe.SendIke) -> None:
        self.wire.append(((GW6, 4500), (str(msg.remote.addr), msg.remote.port), msg.data))

    async def client(self, addr: str, psk: Secret = PSK) -> list[Any]:
        """A road warrior at ``addr`` (a /64 of its own) opens an IKE SA to the gateway: its events."""
        cfg = psk_ike("c", f"{addr}.example", RemoteAuth("psk", Identity.parse("gw.example")), addr, GW6,
                      "10.2.0.0/24", "10.1.0.0/16")
        self._add(addr, dataclasses.replace(cfg, psk=psk)).initiate("c", "net", time.monotonic())
        await self.settle()
        return self.events[addr]

    async def settle(self) -> None:
        for _ in range(200):
            moved = False
            for addr, peer in self.peers.items():
                for d in peer.datagrams_to_send(time.monotonic()):
                    self.wire.append(((addr, d.local_port), d.addr, d.data))
                while (ev := peer.next_event()) is not None:
                    self.events[addr].append(ev[1])
            while self.wire:
                moved = True
                src, dst, data = self.wire.pop(0)
                if dst[0] == GW6 and dst[1] == 4500:
                    self.service.receive_natt(pipe.Ike(data=data, remote=Endpoint(ipaddress.ip_address(src[0]),
                                                                                  src[1])))
                elif dst[0] == GW6:
                    self.service.receive(data, src, dst)
                    self.service._pump()
                else:
                    self.peers[dst[0]].receive(data, src, time.monotonic(), dst)
            for _ in range(5):
                await asyncio.sleep(0)
            if self.service._tasks or self.service.sockets.natt_sends:
                await asyncio.wait([*self.service._tasks, *self.service.sockets.natt_sends])
                moved = True
            if not moved:
                return
        raise AssertionError("the wire never went quiet")

    async def attack(self, net48: str, vouched56: str) -> list[str]:
        """Wrong PSKs from 16 /64s of ``net48`` ("2001:db8:66"): four in the /56 ``vouched56`` (of
        the peer that authenticated, "2001:db8:66:100"), then twelve in twelve other /56s, enough to
        ban the /56 and the /48 unless vouched for; the /64s, each failed once."""
        addrs = [f"{vouched56[:-1]}{k}::1" for k in range(1, 5)] + [f"{net48}:{k:x}00::1" for k in range(2, 14)]
        for addr in addrs:
            failed = [e for e in await self.client(addr, WRONG) if isinstance(e, AuthFailed)]
            assert len(failed) == 1 and failed[0].by_peer, self.events[addr]   # the gateway refused its PSK
        return [f"{ipaddress.ip_network(f'{a}/64', strict=False)}" for a in addrs]

    def bans(self) -> dict[str, int]:
        """The bans in force as `tunsec status` and the metrics show them: {source: failures}, and
        tunsec_ike_auth_bans by prefix length."""
        doc = self.service.status(pipe.Reply(1, pipe.MsgType.DUMP, pipe.Errno.OK))
        (family,) = [f for f in metrics.state_families(doc, False) if getattr(f, "name", "") == "tunsec_ike_auth_bans"]
        by_length = {s.labels["prefix_length"]: s.value for s in family.samples if s.labels["family"] == "ipv6"}
        return {**{b["source"]: b["failures"] for b in doc["auth_bans"]},
                **{f"/{k}": int(v) for k, v in by_length.items()}}


def test_a_clients_success_vouches_for_its_56_and_48_against_an_attackers_64s() -> None:
    async def go() -> None:
        gw = Gateway6(out_peer="2001:db8:77:100::1")
        await gw.start()
        assert any(isinstance(e, IkeSaUp) for e in await gw.client("2001:db8:66:100::1"))   # a customer, PSK right
        attackers = await gw.attack("2001:db8:66", "2001:db8:66:100")
        # each /64 banned for its own failure; neither the /56 nor the /48 (review revban2 F1)
        assert gw.bans() == {**dict.fromkeys(attackers, 1), "/64": 16, "/56": 0, "/48": 0}
        # another customer of the /48 and of the /56 still comes up; the attackers' /64s do not
        assert any(isinstance(e, IkeSaUp) for e in await gw.client("2001:db8:66:ff00::1"))
        assert any(isinstance(e, IkeSaUp) for e in await gw.client("2001:db8:66:1ff::1"))
        before = gw.service.endpoint.stats.auth_banned
        assert not await gw.client("2001:db8:66:101::2")
        assert gw.service.endpoint.stats.auth_banned == before + 1
    run(go())


def test_an_ike_sa_we_opened_vouches_for_nothing() -> None:
    """The gateway initiates to a peer in 2001:db8:77::/48 and authenticates it: that prefix's /56 and
    /48 are banned all the same when its /64s fail (as with no one authenticated from it)."""
    async def go() -> None:
        gw = Gateway6(out_peer="2001:db8:77:100::1")
        await gw.start()
        gw.service.initiate("out", "net")
        await gw.settle()
        assert [e.name for e in gw.events["2001:db8:77:100::1"] if isinstance(e, IkeSaUp)] == ["gw"]
        ups = [sa for sa in gw.service.endpoint.sas if sa.is_initiator and sa.state.value == "established"]
        assert [sa.remote_addr[0] for sa in ups] == ["2001:db8:77:100::1"]
        attackers = await gw.attack("2001:db8:77", "2001:db8:77:100")
        # the /56 at its parts' 4th failure; the /48 at its 16th: those 4 (each counted into the /56
        # and the /48) and 12 of other /56s
        assert gw.bans() == {**dict.fromkeys(attackers, 1), "2001:db8:77:100::/56": 4, "2001:db8:77::/48": 16,
                             "/64": 16, "/56": 1, "/48": 1}
        # every ban started is counted once, the wider ones too (status and metrics)
        doc = gw.service.status(pipe.Reply(1, pipe.MsgType.DUMP, pipe.Errno.OK))
        assert doc["auth_bans_started"] == 18
        started = [f for f in metrics.state_families(doc, False) if f.name == "tunsec_ike_auth_bans_started"]
        assert [s.value for f in started for s in f.samples if s.name.endswith("_total")] == [18]
        assert not await gw.client("2001:db8:77:ff00::1", PSK)   # the /48's other customers refused
    run(go())
