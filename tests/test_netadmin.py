"""When the control process gives up the CAP_NET_ADMIN it kept for its blocks alone (netadmin.BlocksHold):
not while a block is held, nor one blockwatch lost and would put back, nor with a route of its own on a TUN
that outlives it, nor while a connection has virtual IPs.  The capability calls are recorded, not made
(this is the test process); tests/test_prohibit_capdrop_netns.py drops it in a real control process."""

from __future__ import annotations

import asyncio
from ipaddress import ip_network

import pytest

from tunsec import netadmin
from tunsec.dataplane import tun as tunmod
from tunsec.dataplane.blockwatch import Keeper

NET = ip_network("10.3.0.0/24")


def hold(created: bool = True, vips: bool = False) -> netadmin.BlocksHold:
    t = tunmod.Tun(name="tsx0", created=created, device=None)
    return netadmin.BlocksHold(Keeper(t), lambda: vips)


def test_a_held_block_keeps_it_until_it_is_lifted() -> None:
    h = hold()
    h.keeper.tun.unrouted[NET] = tunmod.Unrouted("refused", blocked=True)
    assert not h.unneeded()
    del h.keeper.tun.unrouted[NET]   # a reload lifted it
    assert h.unneeded()


def test_a_lost_block_blockwatch_would_put_back_keeps_it() -> None:
    h = hold()
    h.keeper.tun.unrouted[NET] = tunmod.Unrouted("refused; removed by someone else", blocked=False)
    h.keeper.lost[NET] = "refused"
    assert not h.unneeded()
    del h.keeper.tun.unrouted[NET]   # a reload took the network out: nothing to put back
    assert h.unneeded()


def test_own_routes_on_a_kept_tun_or_virtual_ips_keep_it() -> None:
    kept = hold(created=False)
    kept.keeper.tun.routes.append((NET, None))   # added while the capability was held: removed at exit
    assert not kept.unneeded()
    made = hold(created=True)
    made.keeper.tun.routes.append((NET, None))   # goes with the TUN
    assert made.unneeded()
    assert not hold(vips=True).unneeded()


def test_release_drops_it_once_and_replaces_the_thread_pools(monkeypatch: pytest.MonkeyPatch) -> None:
    released: list[int] = []
    monkeypatch.setattr(netadmin.privilege, "release", released.append)
    monkeypatch.setattr(netadmin.privilege, "threads_holding", lambda caps: [])
    renewed: list[str] = []

    async def run() -> None:
        h = netadmin.BlocksHold.start(Keeper(tunmod.Tun(name="tsx0", created=True, device=None)), lambda: False,
                                      [lambda: renewed.append("resolver")])
        first = h.executor
        h.keeper.tun.unrouted[NET] = tunmod.Unrouted("refused", blocked=True)
        assert not await h.release_if_unneeded() and released == []
        h.keeper.tun.unrouted.clear()
        assert await h.release_if_unneeded()
        assert released == [netadmin.NET_ADMIN] and renewed == ["resolver"]
        assert first is not None and first._shutdown and h.executor is not first
        assert not await h.release_if_unneeded() and released == [netadmin.NET_ADMIN]   # once
        assert await asyncio.to_thread(lambda: 1) == 1   # the new default executor works
    asyncio.run(run())
