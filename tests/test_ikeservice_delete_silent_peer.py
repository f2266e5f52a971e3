"""Every deletion the IKE service decides on takes the Child SAs out of the worker at once, not when
the peer answers the DELETE (review revreload F1; ike/sa_teardown.py): a peer that stays silent
kept the site's traffic, both ways, and its selector claims, until our DELETE's retransmissions gave
up (~165 s).  `tunsec terminate` (of the IKE SA, and --child), ``unique = replace``, the logout of a
PSK user a reload took out of the secrets, a RADIUS Disconnect-Request (DAE), and a worker restart
meanwhile.  The DELETE's answer that comes later ends the IKE SA quietly: nothing deleted twice in
the worker, no error.

The gateway of test_ikeservice_peers (a real IkeService, the worker's logic and C fast path
in-process, the sites' IKE engines wired to it in memory); the silent peer's datagrams are lost."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import itertools
import logging
from pathlib import Path

import pytest
from test_ikeservice_peers import (
    GW,
    SHARED_SPI,
    Gateway,
    InProcessWorker,
    assert_reaches_only_its_site,
    connected,
    psk_ike,
    run,
    site_ip,
    site_net,
)
from test_reload_ike import down_events
from test_reload_ike_psk_users import ROTATED, SECRET, psk_users
from test_reload_ike_psk_users import conf as psk_conf
from test_reload_ike_updown import conf as updown_conf
from test_reload_ike_updown import conn as updown_conn
from test_reload_ike_updown import gateway as updown_gateway
from test_reload_ike_updown import lines

from tunsec.dataplane import pipe
from tunsec.dataplane.fastpath import Drop
from tunsec.dataplane.pipe import Action, Direction
from tunsec.ike.config import RemoteAuth
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import DownReason
from tunsec.ike.identity import Identity
from tunsec.ike.sa import IkeSa, State
from tunsec.services.ike import radius_edge


def silence(gw: Gateway, site: int) -> list[bytes]:
    """Lose what ``site`` sends from now on (its answers to our DELETE); what was lost."""
    lost: list[bytes] = []

    def drop(i: int, data: bytes) -> bool:
        if i == site:
            lost.append(data)
            return True
        return False
    gw.drop = drop
    return lost


def gateway_sa(gw: Gateway, site: int) -> IkeSa:
    return next(sa for sa in gw.service.endpoint.sas if sa.remote_addr[0] == site_ip(site) and not sa.is_closed)


def site_spis(gw: Gateway, site: int) -> set[tuple[Direction, int]]:
    """The gateway's SAs of site's Child SAs: (IN, the site's outbound SPI), (OUT, its inbound SPI)."""
    return {pair for c in gw.site_sa(site).children for pair in ((Direction.IN, c.spi_out), (Direction.OUT, c.spi_in))}


def assert_out_of_the_worker(gw: Gateway, site: int, spis: set[tuple[Direction, int]]) -> None:
    """Nothing of site's Child SAs is left in the worker: no SA, no policy; its traffic is not sent."""
    assert gw.children_of(site) == [], "its Child SAs are still booked (their claims held)"
    held = {(sa.direction, sa.spi) for sa in gw.worker.dp.sas() if sa.state != "larval"
            and (sa.direction is Direction.IN or str(sa.remote.addr if sa.remote else "") == site_ip(site))}
    assert not held & spis, "its SAs are in the worker"
    net = f"10.2.{site + 1}.0"
    assert not [p for p in gw.worker.dp.policies() if p.action is Action.PROTECT and str(p.selector.dst_lo) == net]
    assert gw.send_to_site(site)[2] is not Drop.NONE, "the site's traffic is still sent to it"


async def answer_late(gw: Gateway, site: int, lost: list[bytes]) -> None:
    """The silent site's answer to our DELETE arrives after all."""
    gw.drop = None
    gw.wire += [((site_ip(site), 4500), (GW, 4500), data) for data in lost]
    await gw.settle()


def deleted_once(gw: Gateway) -> None:
    """No SA was DELETEd twice in the worker (each Child SA's SAs once, whichever way its IKE SA ended)."""
    deletes = collections.Counter((m.spi, m.direction, m.remote) for m in gw.worker.log if isinstance(m, pipe.Delete))
    assert [k for k, n in deletes.items() if n > 1] == []


def quiet(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_terminate_stops_a_silent_peers_traffic_at_once_and_its_late_answer_ends_the_ike_sa(
        caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        gw = await connected(2)
        spis = site_spis(gw, 1)
        lost = silence(gw, 1)
        sa = gateway_sa(gw, 1)
        assert gw.service.terminate("gw").deleted == 2    # both sites' (one connection): site 0 answers
        await gw.settle()
        assert sa.state is State.DELETING and lost, "site 1 heard the DELETE, its answer is lost"
        assert_out_of_the_worker(gw, 1, spis)
        assert_out_of_the_worker(gw, 0, set())
        await answer_late(gw, 1, lost)
        assert sa.is_closed and [e.reason for e in down_events(gw, 1)] == [DownReason.DELETED_BY_PEER]
        deleted_once(gw)
        assert quiet(caplog) == [] and gw.service.event_errors == 0
    caplog.set_level(logging.INFO)
    run(body())


def test_terminate_child_stops_a_silent_peers_traffic_at_once() -> None:
    async def body() -> None:
        gw = await connected(2)
        spis = site_spis(gw, 1)
        lost = silence(gw, 1)
        assert gw.service.terminate_child("gw", "net").deleted == 2
        await gw.settle()
        assert_out_of_the_worker(gw, 1, spis)
        assert gateway_sa(gw, 1).state is State.ESTABLISHED   # the IKE SA stays
        await answer_late(gw, 1, lost)
        assert gw.site_sa(1).children == [] and gateway_sa(gw, 1).state is State.ESTABLISHED
        deleted_once(gw)
        assert gw.service.event_errors == 0
    run(body())


def test_unique_replace_takes_a_silent_old_peers_child_sas_out_at_once() -> None:
    async def body() -> None:
        gw = Gateway(2)   # two road warriors of one identity (test_ikeservice_unique), no INITIAL_CONTACT
        await gw.start()
        gw.service.connections["gw"] = dataclasses.replace(gw.service.connections["gw"], unique="replace")
        for i in range(2):
            cfg = psk_ike(f"site{i}", "road.example", RemoteAuth("psk", Identity.parse("gw.example")),
                          site_ip(i), GW, site_net(i), "10.1.0.0/16")
            gw.sites[i] = IkeEndpoint([dataclasses.replace(cfg, initial_contact=False)],
                                      spi_allocator=functools.partial(next, itertools.count(SHARED_SPI + 16 * i)))
        gw.connect(0)
        await gw.settle()
        silence(gw, 0)    # the old one no longer answers
        gw.connect(1)     # the new one replaces it
        await gw.settle()
        old = next(sa for sa in gw.service.endpoint.sas if sa.remote_addr[0] == site_ip(0))
        assert old.state is State.DELETING
        assert gw.children_of(0) == [] and gw.send_to_site(0)[2] is not Drop.NONE
        assert_reaches_only_its_site(gw, 1)
        deleted_once(gw)
    run(body())


@pytest.mark.parametrize("restart", [False, True], ids=["", "worker-restart"])
def test_dae_disconnect_takes_a_silent_peers_child_sas_out_at_once(restart: bool) -> None:
    """And a worker restart that comes before the removal ran, or after, brings none of it back."""
    async def body() -> None:
        gw = await connected(2)
        spis = site_spis(gw, 1)
        silence(gw, 1)
        sa = gateway_sa(gw, 1)
        handle = gw.service._ike_handles[sa]
        radius_edge._dae_disconnect(gw.service, [handle])
        if restart:
            gw.worker = InProcessWorker(asyncio.get_running_loop(), gw._natt_out)
            await gw.service.worker_restarted()
        await gw.settle()
        assert sa.state is State.DELETING
        assert_out_of_the_worker(gw, 1, spis)
        assert handle not in gw.service._held_claims, "the restart held its claims (restart.hold_claim)"
        assert_reaches_only_its_site(gw, 0)   # (after a restart: rekeyed into the new worker)
    run(body())


def test_a_psk_user_logged_out_by_a_reload_stops_at_once_though_silent(tmp_path: Path) -> None:
    async def body() -> None:
        gw = await psk_users(tmp_path)
        spis = site_spis(gw, 1)
        lost = silence(gw, 1)
        answer = await gw.reload(psk_conf({0: ROTATED, 2: SECRET}))     # site1 revoked
        assert "PSK users whose key left the secrets, their IKE SAs deleted: site1.example (rw)" in answer["message"]
        assert gateway_sa(gw, 1).state is State.DELETING
        assert_out_of_the_worker(gw, 1, spis)
        assert gw.children_of(0) and gw.children_of(2)
        await answer_late(gw, 1, lost)
        assert [e.reason for e in down_events(gw, 1)] == [DownReason.DELETED_BY_PEER]
        deleted_once(gw)
    run(body())


def test_a_removed_connections_down_runs_once_at_the_reload_though_its_peer_is_silent(tmp_path: Path) -> None:
    log = tmp_path / "updown.log"
    script = tmp_path / "updown.sh"
    script.write_text(f'#!/bin/sh\necho "$PLUTO_VERB $PLUTO_CONNECTION $PLUTO_PEER" >> {log}\n')
    script.chmod(0o755)

    async def body() -> None:
        gw, loop_errors = await updown_gateway(tmp_path, updown_conf(updown_conn("a", 0, script),
                                                                     updown_conn("b", 1, script)))
        lost = silence(gw, 0)
        answer = await gw.reload(updown_conf(updown_conn("b", 1, script)))
        assert answer == {"ok": True, "message": "IKE connections removed: a"}
        assert lines(log)[2:] == [f"down-client net {site_ip(0)}"]   # now, not when the DELETE is answered
        await answer_late(gw, 0, lost)
        assert [e.reason for e in down_events(gw, 0)] == [DownReason.DELETED_BY_PEER]
        assert lines(log)[2:] == [f"down-client net {site_ip(0)}"]   # once
        assert loop_errors == [] and gw.service.event_errors == 0
        deleted_once(gw)

    run(body())
