"""``unique`` (strongSwan's uniqueness policy) through the IKE service.

Two road warriors with the same identity connect from different addresses to a
gateway (a real IkeService over the in-process worker, see test_ikeservice_peers).
They send no INITIAL_CONTACT, so the connection's ``unique`` alone decides what
happens to the first IKE SA when the second one comes up.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools

import pytest
from test_ikeservice_peers import GW, SHARED_SPI, Gateway, psk_ike, run, site_ip, site_net

from tunsec.dataplane import pipe
from tunsec.ike.config import RemoteAuth
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import AuthFailed, ChildSaUp, DownReason, IkeSaDown, IkeSaUp
from tunsec.ike.identity import Identity
from tunsec.ike.sa import State


async def two_roadwarriors(unique: str) -> tuple[Gateway, int]:
    """The gateway after both connected, and how many worker requests it had made before the second."""
    gw = Gateway(2)
    await gw.start()
    gw.service.connections["gw"] = dataclasses.replace(gw.service.connections["gw"], unique=unique)
    for i in range(2):
        cfg = psk_ike(f"site{i}", "road.example", RemoteAuth("psk", Identity.parse("gw.example")),
                      site_ip(i), GW, site_net(i), "10.1.0.0/16")
        cfg = dataclasses.replace(cfg, initial_contact=False)
        gw.sites[i] = IkeEndpoint([cfg], spi_allocator=functools.partial(next, itertools.count(SHARED_SPI + 16 * i)))
    gw.connect(0)
    await gw.settle()
    before = len(gw.worker.log)
    gw.connect(1)
    await gw.settle()
    return gw, before


def gateway_peers(gw: Gateway) -> list[str]:
    """The addresses of the gateway's established IKE SAs."""
    return sorted(sa.remote_addr[0] for sa in gw.service.endpoint.sas if sa.state is State.ESTABLISHED)


def downs(gw: Gateway, i: int) -> list[DownReason]:
    return [e.reason for e in gw.site_events[i] if isinstance(e, IkeSaDown)]


@pytest.mark.parametrize("unique", ["no", "never"])
def test_duplicates_allowed(unique: str) -> None:
    async def go() -> None:
        gw, _ = await two_roadwarriors(unique)
        assert gateway_peers(gw) == [site_ip(0), site_ip(1)]
        assert len(gw.children_of(0)) == 1 and len(gw.children_of(1)) == 1
        assert downs(gw, 0) == downs(gw, 1) == []
    run(go())


def test_replace_deletes_the_old_ike_sa() -> None:
    async def go() -> None:
        gw, _ = await two_roadwarriors("replace")
        assert gateway_peers(gw) == [site_ip(1)]
        assert downs(gw, 0) == [DownReason.DELETED_BY_PEER] and downs(gw, 1) == []
        assert not gw.children_of(0) and len(gw.children_of(1)) == 1   # the old SA's child left the worker
    run(go())


def test_keep_refuses_the_new_ike_sa_in_ike_auth() -> None:
    """As strongSwan: the second road warrior gets AUTHENTICATION_FAILED in IKE_AUTH; nothing of
    its IKE SA reaches the worker (no SA installed and then deleted, no policy)."""
    async def go() -> None:
        gw, before = await two_roadwarriors("keep")
        assert gateway_peers(gw) == [site_ip(0)]
        refused = [e for e in gw.site_events[1] if isinstance(e, AuthFailed)]
        assert len(refused) == 1 and refused[0].by_peer
        assert not any(isinstance(e, (IkeSaUp, ChildSaUp)) for e in gw.site_events[1])
        # only IKE datagrams go out (the AUTHENTICATION_FAILED answer) and the SPI pool is refilled
        changes = [m for m in gw.worker.log[before:] if not isinstance(m, (pipe.GetSpi, pipe.SendIke))]
        assert changes == []
        assert downs(gw, 0) == [] and len(gw.children_of(0)) == 1 and not gw.children_of(1)
    run(go())


def test_keep_refuses_a_second_ike_sa_from_the_same_address() -> None:
    """strongSwan lets a duplicate from the same address through only for IKEv1 (a reauthentication
    there); for IKEv2 ``keep`` refuses it like any other: AUTHENTICATION_FAILED in IKE_AUTH, the
    first IKE SA and its Child SA stay."""
    async def go() -> None:
        gw = Gateway(1)
        await gw.start()
        gw.service.connections["gw"] = dataclasses.replace(gw.service.connections["gw"], unique="keep")
        gw.connect(0)
        await gw.settle()
        first = gw.site_sa(0)
        before = len(gw.worker.log)
        gw.connect(0)     # the same peer, address and port: a second IKE SA (no INITIAL_CONTACT, it has one)
        await gw.settle()
        assert gateway_peers(gw) == [site_ip(0)]
        refused = [e for e in gw.site_events[0] if isinstance(e, AuthFailed)]
        assert len(refused) == 1 and refused[0].by_peer
        assert sum(isinstance(e, IkeSaUp) for e in gw.site_events[0]) == 1
        assert [sa for sa in gw.sites[0].sas if sa.state is State.ESTABLISHED] == [first]
        changes = [m for m in gw.worker.log[before:] if not isinstance(m, (pipe.GetSpi, pipe.SendIke))]
        assert changes == [] and downs(gw, 0) == [] and len(gw.children_of(0)) == 1
    run(go())
