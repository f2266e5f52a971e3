"""A dataplane worker restart keeps the claims of the Child SAs it rekeys (services/ike/restart.py).

A hub of %any with remote_ts 10.2.0.0/16 and two spokes, each with its /24.  The restart rekeys every
Child SA; until the victim's rekey is recorded, its 10.2.1.0/24 stays its own: the other spoke's
request for it, read first, is refused.  A claim goes with its Child SA or IKE SA."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from test_ikeservice_lease_fence import WatchedWorker
from test_ikeservice_peers import GW, PSK, FakeSocket, _now, run, site_ip
from test_ikeservice_ts_claims import GW_NET, PROPOSALS, Client, TsGateway, reaches, refusals, sent_as

from tunsec.conf.connections import Connection
from tunsec.dataplane.fastpath import Drop
from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.identity import Identity
from tunsec.policy.ids import IdSpace
from tunsec.services.ike import IkeService

VICTIM, ATTACKER = 0, 1


@dataclass
class RestartableHub(TsGateway):
    """TsGateway whose worker can be replaced (the service asks for ``self.worker`` each time); the
    attacker's engine can also ask for the victim's subnet (child "steal")."""

    async def start(self) -> None:
        child = child_config("net", GW_NET, self.remote_ts, "aes128gcm16")
        conn = Connection("gw", IkeConfig("gw", LocalAuth("psk", Identity.parse("gw.example")), RemoteAuth("psk"),
                                          PROPOSALS, (child,), psk=PSK, local_addr=GW))
        self.worker = WatchedWorker(asyncio.get_running_loop(), self._natt_out)  # type: ignore[assignment]
        self.service = IkeService([conn], lambda: self.worker, {4: GW}, IdSpace())  # type: ignore[arg-type,return-value]
        await self.service.start()
        self.service.sockets.by_key = {(4, GW, 500): FakeSocket(self.wire)}  # type: ignore[dict-item]
        for i, c in enumerate(self.clients):
            children = [child_config("net", c.local_ts, GW_NET, "aes128gcm16")]
            if i == ATTACKER:
                children.append(child_config("steal", "10.2.1.0/24", GW_NET, "aes128gcm16"))
            cfg = IkeConfig(f"site{i}", LocalAuth("psk", Identity.parse(c.ident)),
                            RemoteAuth("psk", Identity.parse("gw.example")), PROPOSALS, tuple(children), psk=PSK,
                            local_addr=site_ip(i), remote_addr=GW, mobike=False)
            self.sites.append(IkeEndpoint([cfg]))
            self.site_events.append([])

    async def restart_worker(self) -> None:
        """The worker died; the daemon starts a new one and tells the service."""
        self.worker = WatchedWorker(asyncio.get_running_loop(), self._natt_out)  # type: ignore[assignment]
        await self.service.worker_restarted()


async def hub() -> RestartableHub:
    gw = RestartableHub(2, mobike=False, clients=(Client("victim.example", "10.2.1.0/24"),
                                                  Client("attacker.example", "10.2.2.0/24")), remote_ts="10.2.0.0/16")
    await gw.start()
    for i in range(2):
        gw.connect(i)
        await gw.settle()
    assert reaches(gw, "10.2.1.7") == VICTIM and reaches(gw, "10.2.2.7") == ATTACKER
    return gw


def test_a_spoke_cannot_take_another_spokes_subnet_across_a_worker_restart() -> None:
    async def body() -> None:
        gw = await hub()
        await gw.restart_worker()
        assert len(gw.service.ts_claims) == 2   # both spokes' Child SAs still hold theirs
        # the attacker's request is read before the victim's answer to the gateway's rekey
        gw.site_sa(ATTACKER).initiate("steal")
        await gw.settle()
        assert [e.reason for e in refusals(gw, ATTACKER)] == ["TS_UNACCEPTABLE"]
        assert refusals(gw, VICTIM) == []
        # the victim's rekeyed Child SA is installed in the new worker and holds its subnet again
        victim = gw.child_of(VICTIM)
        assert victim is not None and [str(t) for t in victim.remote_ts] == ["10.2.1.0/24"]
        assert gw.service.spi_pool.issued(victim.spi_in)
        assert reaches(gw, "10.2.1.7") == VICTIM and reaches(gw, "10.2.2.7") == ATTACKER
        assert sent_as(gw, VICTIM, "10.2.1.7") is Drop.NONE
        assert gw.service._held_claims == {}   # each rekey recorded took its predecessor's over
        assert len(gw.service.ts_claims) == 2
    run(body())


@pytest.mark.parametrize("goes", ["ike_sa", "child_sa"])
def test_a_claim_held_across_a_restart_goes_with_its_child_sa_or_ike_sa(goes: str) -> None:
    async def body() -> None:
        gw = await hub()
        await gw.restart_worker()
        # the victim deletes its IKE SA (or its Child SA) before it has seen the gateway's rekey
        victim = gw.site_sa(VICTIM)
        if goes == "ike_sa":
            victim.delete(_now())
        else:
            victim.delete_child(victim.children[0].unique_id)
        gw.wire[:] = [w for w in gw.wire if w[1][0] != site_ip(VICTIM)]   # the rekey request is lost
        await gw.settle()
        if goes == "child_sa":
            # the victim's DELETE came while the gateway's rekey of that Child SA is out: the victim may
            # have answered it and deleted the old one after (review revdel3 F1), so the old Child SA
            # ends with that rekey (CreateChildTask.takes_peer_delete), its claim held meanwhile.  The
            # rekey's retransmission, which the victim refuses (CHILD_SA_NOT_FOUND), ends it
            assert gw.service._held_claims != {}
            gw.service.endpoint.handle_timer(_now() + 30)
            gw.service._pump()
            await gw.settle()
        assert gw.child_of(VICTIM) is None
        assert gw.service._held_claims == {}
        assert len(gw.service.ts_claims) == 1   # the attacker's own Child SA's
        # 10.2.1.0/24 is nobody's now: the other spoke may have it
        gw.site_sa(ATTACKER).initiate("steal")
        await gw.settle()
        assert refusals(gw, ATTACKER) == []
        assert reaches(gw, "10.2.1.7") == ATTACKER
    run(body())
