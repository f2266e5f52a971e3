"""A lost IKE SA's children come back towards that SA's own peer (services/ike/reestablish.py;
review revvanish F1, F2; the proofs: test_review_revvanish_dpd_action_other_peer.py).

On a ``remote_addrs = %any`` connection (whose dpd_action/close_action = start|trap the load
refuses, so set on the Connection directly here, as a backstop) the gateway sets a new IKE SA up
towards the lost peer's address, as strongSwan's reestablish, and keeps only one that proves the lost
identity; its keyingtries go there too; a trap for the whole remote_ts (every peer's) is not
installed; nothing is initiated where we leased the peer a virtual IP (it reconnects by itself).  The
gateway is the real IkeService with the in-process worker (test_ikeservice_peers.Gateway, two
site-to-site peers, or test_ikeservice_lease_fence.PoolGateway), DPD and the hard lifetime on
clocks moved by hand.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from typing import Any

import pytest
from test_ikeservice_peers import Gateway, _now, psk_ike, run, site_ip, site_net
from test_ikeservice_reconnect import Unreachable, dpd_gives_up, pool_gateway
from test_review_revvanish_dpd_action_other_peer import Tap, _sa_with, _settle_retries, _two_sites

from tunsec.conf.connections import Connection
from tunsec.dataplane.pipe import Direction
from tunsec.ike.config import RemoteAuth
from tunsec.ike.constants import ExchangeType
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.identity import Identity
from tunsec.ike.message import decode_message
from tunsec.ike.sa import IkeSa, State
from tunsec.services.ike import ikesas


@pytest.fixture(autouse=True)
def short_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ikesas, "RETRY_DELAY", 0.01)


def _established_with(gw: Gateway, ident: str) -> list[IkeSa]:
    return [sa for sa in gw.service.endpoint.sas
            if sa.state is State.ESTABLISHED and str(sa.peer_id) == ident]


def _init_requests(held: list[tuple[bytes, Any, Any]]) -> int:
    return sum(1 for data, _, _ in held
               if (m := decode_message(data)).exchange == ExchangeType.IKE_SA_INIT and not m.is_response)


def test_a_peer_that_said_goodbye_is_set_up_again_towards_its_own_address() -> None:
    async def body() -> None:
        gw = await _two_sites("close_action")
        lost, other = _sa_with(gw, 0), _sa_with(gw, 1)
        tap1 = Tap(gw, 1)
        gw.site_sa(0).delete(_now())   # site 0 deletes its IKE SA, and stays where it was
        await gw.settle()
        assert lost.is_closed
        await _settle_retries(gw)
        back = _established_with(gw, "site0.example")
        assert back and back[0] is not lost and back[0].is_initiator, "the gateway did not set site 0's IKE SA up again"
        assert back[0].remote_addr[0] == site_ip(0)
        assert [c.name for c in back[0].children] == ["net"]
        assert [str(t) for t in gw.children_of(0)[0].remote_ts] == [site_net(0)]   # narrowed by site 0
        assert tap1.requests == [] and len(other.children) == 1

    run(body())


def test_the_lost_address_answered_by_another_identity_gets_no_child(caplog: pytest.LogCaptureFixture) -> None:
    """The connection is %any: the engine takes any identity it allows at that address; the service
    keeps only the lost one (reestablish.wrong_peer), before a Child SA is installed."""
    async def body() -> None:
        gw = await _two_sites("close_action")
        gw.site_sa(0).delete(_now())
        await gw.settle()
        # another host has site 0's address now (the same group key)
        cfg = psk_ike("other", "other.example", RemoteAuth("psk", Identity.parse("gw.example")), site_ip(0), None,
                      site_net(0), "10.1.0.0/16")
        gw.sites[0] = IkeEndpoint([cfg], spi_allocator=lambda: next(spis))
        await _settle_retries(gw)
        assert "came up with other.example, not the lost peer site0.example: deleting it" in caplog.text
        assert _established_with(gw, "other.example") == []
        assert gw.children_of(0) == []
        outs = [sa.remote for sa in gw.worker.dp.sas() if sa.direction is Direction.OUT]
        assert [str(r.addr) for r in outs if r is not None] == [site_ip(1)], outs

    spis = itertools.count(0x7000)
    caplog.set_level(logging.INFO, "tunsec.ike")
    run(body())


def test_keyingtries_of_a_reestablish_go_to_the_lost_peer_again() -> None:
    async def body() -> None:
        gw = await _two_sites("dpd_action")
        conn = gw.service.connections["gw"]
        gw.service.connections["gw"] = dataclasses.replace(conn, keyingtries=3)
        tap1 = Tap(gw, 1)
        gone = Unreachable()
        gw.sites[0] = gone   # type: ignore[assignment]
        await dpd_gives_up(gw, _sa_with(gw, 0))
        at = time.monotonic()
        for _ in range(40):   # each new IKE SA towards site 0 retransmits, gives up; keyingtries again
            await _settle_retries(gw)
            at += 5.0
            gw.service.endpoint.handle_timer(at)
            gw.service._pump()
        assert _init_requests(gone.held) >= 2 * 3, "keyingtries did not go to the lost peer"
        assert tap1.requests == [], f"a keying try went into site 1's IKE SA: {tap1.requests}"

    run(body())


def test_dpd_action_trap_of_a_connection_of_any_installs_no_trap(caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        gw = await _two_sites("dpd_action")
        conn = gw.service.connections["gw"]
        children = tuple(dataclasses.replace(c, dpd_action="trap") for c in conn.children)
        gw.service.connections["gw"] = dataclasses.replace(conn, children=children)
        gw.sites[0] = Unreachable()   # type: ignore[assignment]
        await dpd_gives_up(gw, _sa_with(gw, 0))
        await _settle_retries(gw)
        assert gw.service.trap_policies == {}, "a trap for every peer's remote_ts"
        assert "no trap after the loss of site0.example: remote_addrs is %any" in caplog.text

    caplog.set_level(logging.INFO, "tunsec.ike")
    run(body())


def test_an_expired_ike_sa_of_a_connection_of_any_is_set_up_again_towards_its_peer() -> None:
    """The hard lifetime (ikesas._after_expiry) with a start child: towards site 0, not site 1."""
    async def body() -> None:
        gw = Gateway(2, mobike=False)
        await gw.start()
        conn = gw.service.connections["gw"]
        ike = dataclasses.replace(conn.ike, rekey_time=7.0, over_time=1.0, rand_time=0.0)
        children = tuple(dataclasses.replace(c, start_action="start") for c in conn.children)
        gw.service.connections["gw"] = dataclasses.replace(conn, ike=ike, children=children)
        gw.service.endpoint.set_configs([ike])
        gw.connect(0)
        gw.connect(1)
        await gw.settle()
        lost = _sa_with(gw, 0)
        gone = Unreachable()
        gw.sites[0] = gone   # type: ignore[assignment]
        tap1 = Tap(gw, 1)
        _expire(gw, lost)
        await _settle_retries(gw)
        assert _init_requests(gone.held) >= 1, "the expired IKE SA was not set up again towards site 0"
        assert tap1.requests == [], f"site 0's expiry sent site 1 a CREATE_CHILD_SA: {tap1.requests}"
        assert len(_sa_with(gw, 1).children) == 1

    run(body())


def _expire(gw: Gateway, sa: IkeSa) -> None:
    """``sa``'s timers on a fake clock (its peer answers nothing) until its hard lifetime ends it."""
    for _ in range(50):
        when = sa.get_timer()
        assert when is not None
        sa.handle_timer(when)
        gw.service._pump()
        if sa.is_closed:
            return
    raise AssertionError("the IKE SA never expired")


def test_a_client_we_leased_a_virtual_ip_is_left_to_reconnect(caplog: pytest.LogCaptureFixture) -> None:
    """strongSwan's "asymmetric setup": we were its responder (a lease); nothing goes to its address,
    nor to the other client's IKE SA."""
    async def body() -> None:
        gw = await pool_gateway(2)
        conn: Connection = gw.service.connections["gw"]
        children = tuple(dataclasses.replace(c, dpd_action="start") for c in conn.children)
        gw.service.connections["gw"] = dataclasses.replace(conn, children=children)
        gw.connect(0)
        gw.connect(1)
        await gw.settle()
        sas = [sa for sa in gw.service.endpoint.sas if sa.state is State.ESTABLISHED]
        lost = next(sa for sa in sas if sa.remote_addr[0] == site_ip(0))
        tap1 = Tap(gw, 1)
        gone = Unreachable()
        gw.sites[0] = gone   # type: ignore[assignment]
        await dpd_gives_up(gw, lost)
        await _settle_retries(gw)
        assert _init_requests(gone.held) == 0 and tap1.requests == []
        assert "not re-initiating net towards" in caplog.text and "it reconnects by itself" in caplog.text

    caplog.set_level(logging.INFO, "tunsec.ike")
    run(body())


