"""``tunsec reload`` and the IKE SAs being set up when it runs: none of them may come up under
configuration the reload removed or replaced, nor with credentials it rotated (a leaked PSK).

A peer's half-open IKE SA follows the new connections (IkeEndpoint.set_configs): its peer then
proves itself to those, or is refused; ours are started anew with the new credentials; an ACQUIRE
read while the reload waits for the worker initiates nothing of a removed connection.  The gateway
of test_reload_ike: a real IkeService fed from the file through the daemon's reload command."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import ipaddress
import itertools
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from test_ikeservice_peers import GW, run, site_ip
from test_reload_ike import SECRET, ConfiguredGateway, down_events
from test_reload_ike import conn as site_conn

from tunsec.dataplane import pipe
from tunsec.dataplane.fastpath import Drop
from tunsec.dataplane.pipe import Selector
from tunsec.ike.events import AuthFailed
from tunsec.ike.sa import State

ROTATED = "0s" + base64.b64encode(b"a new secret after a leak, long").decode()


def open_conn(name: str, site: int) -> str:
    """A connection open to any address (every peer's IKE_SA_INIT has it among its candidates)."""
    return site_conn(name, site).replace(f"remote_addrs = {site_ip(site)}", "remote_addrs = %any")


def conf(*conns: str, secret: str = SECRET) -> str:
    return ("tunsec { control_socket = /nonexistent/tunsec.sock }\nconnections {\n" + "".join(conns) + "}\n"
            f"secrets {{ ike {{ secret = {secret} }} }}\n")


async def gateway(tmp_path: Path, text: str) -> ConfiguredGateway:
    gw = ConfiguredGateway(2)
    gw.path = tmp_path / "swanctl.conf"
    gw.path.write_text(text)
    await gw.start()
    return gw


def hold_after_first(gw: ConfiguredGateway, *sites: int) -> dict[int, list[bytes]]:
    """Hold back what each of ``sites`` sends after its first datagram (its IKE_SA_INIT, or its
    answer to ours): the IKE_AUTH in flight across the reload."""
    held: dict[int, list[bytes]] = {i: [] for i in sites}
    sent = {i: itertools.count() for i in sites}

    def drop(i: int, data: bytes) -> bool:
        if i not in held or not next(sent[i]):
            return False
        held[i].append(data)
        return True
    gw.drop = drop
    return held


async def release(gw: ConfiguredGateway, site: int, held: list[bytes]) -> None:
    gw.drop = None
    gw.wire += [((site_ip(site), 4500), (GW, 4500), data) for data in held]
    await gw.settle()


def assert_nothing_for(gw: ConfiguredGateway, site: int) -> None:
    """No IKE SA of the gateway with the site is up, no Child SA or policy for its network is left."""
    assert not [sa for sa in gw.service.endpoint.sas if sa.remote_addr[0] == site_ip(site)
                and sa.state is State.ESTABLISHED]
    assert gw.children_of(site) == [] and gw.service.ike_up == {}
    assert gw.send_to_site(site)[2] is Drop.NO_POLICY


def site_up(gw: ConfiguredGateway, site: int) -> bool:
    return any(sa.state is State.ESTABLISHED for sa in gw.sites[site].sas)


def refused(gw: ConfiguredGateway, site: int) -> bool:
    return any(isinstance(e, AuthFailed) for e in gw.site_events[site])


@pytest.mark.parametrize("change", ["removed", "rotated psk"])
def test_a_peer_half_way_through_a_reload_proves_itself_to_the_new_connections(
        tmp_path: Path, change: str) -> None:
    async def body() -> None:
        gw = await gateway(tmp_path, conf(open_conn("alice", 0), open_conn("mallory", 1)))
        held = hold_after_first(gw, 1)[1]
        gw.connect(1)
        await gw.settle()
        assert held and gw.service.endpoint.half_open == 1
        if change == "removed":
            answer = await gw.reload(conf(open_conn("alice", 0)))
            assert answer == {"ok": True, "message": "IKE connections removed: mallory"}
        else:
            answer = await gw.reload(conf(open_conn("alice", 0), open_conn("mallory", 1), secret=ROTATED))
            assert answer["message"] == "IKE connections with new credentials (for new negotiations): alice, mallory"
        await release(gw, 1, held)   # its IKE_AUTH, with the old PSK
        assert refused(gw, 1) and not site_up(gw, 1)
        assert_nothing_for(gw, 1)
        # alice (site 0), still configured as before, is not affected
        if change == "removed":
            gw.connect(0)
            await gw.settle()
            assert gw.children_of(0) and gw.send_to_site(0)[2] is Drop.NONE

    run(body())


def test_ike_sas_being_set_up_for_connections_the_reload_left_alone_come_up(tmp_path: Path) -> None:
    async def body() -> None:
        gw = ConfiguredGateway(3)
        gw.path = tmp_path / "swanctl.conf"
        ours, theirs, other = site_conn("ours", 0, "start"), open_conn("theirs", 1), site_conn("other", 2)
        gw.path.write_text(conf(theirs, other))
        await gw.start()
        held = hold_after_first(gw, 0, 1)
        assert (await gw.reload(conf(ours, theirs, other)))["ok"]   # ours initiates to site 0
        gw.connect(1)
        await gw.settle()
        assert all(held.values()) and gw.service.endpoint.half_open == 1
        assert await gw.reload(conf(ours, theirs)) == {"ok": True, "message": "IKE connections removed: other"}
        for i in (0, 1):
            await release(gw, i, held[i])
        for i in (0, 1):
            assert site_up(gw, i) and gw.children_of(i) and gw.send_to_site(i)[2] is Drop.NONE

    run(body())


def test_a_half_open_sa_whose_connections_are_all_gone_is_dropped(tmp_path: Path) -> None:
    async def body() -> None:
        gw = await gateway(tmp_path, conf(site_conn("alice", 0), site_conn("mallory", 1)))
        held = hold_after_first(gw, 1)[1]
        gw.connect(1)
        await gw.settle()
        assert gw.service.endpoint.half_open == 1
        assert (await gw.reload(conf(site_conn("alice", 0))))["ok"]
        assert gw.service.endpoint.half_open == 0 and gw.service.endpoint.sas == []
        await release(gw, 1, held)
        assert_nothing_for(gw, 1)
        assert not site_up(gw, 1)

    run(body())


def test_our_initiation_half_way_through_a_psk_rotation_starts_again_with_the_new_psk(tmp_path: Path) -> None:
    async def body() -> None:
        gw = await gateway(tmp_path, conf(site_conn("keep", 0)))
        held = hold_after_first(gw, 1)[1]   # site 1's answer to our IKE_AUTH (its AUTH made with the old PSK)
        assert (await gw.reload(conf(site_conn("keep", 0), site_conn("out", 1, "start"))))["ok"]
        assert held and [sa.state for sa in gw.service.endpoint.sas] == [State.CONNECTING]
        answer = await gw.reload(conf(site_conn("keep", 0), site_conn("out", 1, "start"), secret=ROTATED))
        assert answer["message"] == "IKE connections with new credentials (for new negotiations): keep, out"
        await release(gw, 1, held)
        # the old answer finds no SA (site 1 holds its half until its DPD: nothing could be sent to it
        # before our IKE_AUTH was answered); the new attempt's AUTH (new PSK) is refused by site 1 (old PSK)
        assert refused(gw, 1)
        assert_nothing_for(gw, 1)

    run(body())


def test_an_acquire_read_while_the_reload_waits_for_the_worker_initiates_nothing_removed(tmp_path: Path) -> None:
    async def body() -> None:
        two = "remote_ts = 10.2.2.0/25, 10.2.2.128/25"   # two trap policies: an ACQUIRE between SPDDELETEs
        gw = await gateway(tmp_path, conf(site_conn("keep", 0),
                                          site_conn("trapped", 1, "trap").replace("remote_ts = 10.2.2.0/24", two)))
        svc = gw.service
        pids = sorted(p for p, (c, _) in svc.trap_policies.items() if c == "trapped")
        assert len(pids) == 2
        send = gw.worker.send
        acquired: list[int] = []

        def acquire_on_spddelete(build: Callable[[int], pipe.Message],
                                 then: Callable[[list[pipe.Reply]], None] | None = None) -> object:
            msg, fut = send(build, then)
            if isinstance(msg, pipe.SpdDelete) and not acquired:
                acquired.append(pids[-1])   # the worker's ACQUIRE for the other trap, read meanwhile
                packet = Selector.from_networks(ipaddress.ip_network("10.1.0.5/32"),
                                                ipaddress.ip_network("10.2.2.200/32"))
                asyncio.get_running_loop().call_soon(svc.on_event, pipe.Acquire(policy_id=pids[-1], selector=packet))
            return msg, fut
        gw.worker.send = acquire_on_spddelete  # type: ignore[method-assign]
        answer = await gw.reload(conf(site_conn("keep", 0)))
        assert answer == {"ok": True, "message": "IKE connections removed: trapped"}
        assert acquired and svc.endpoint.sas == [] and svc.trap_policies == {}
        assert [p for p in gw.worker.dp.policies() if "10.2.2." in repr(p)] == []
        assert_nothing_for(gw, 1)

    run(body())


def test_an_ike_rekey_of_ours_in_flight_when_its_connection_is_removed_leaves_nothing(tmp_path: Path) -> None:
    async def body() -> None:
        gw = await gateway(tmp_path, conf(site_conn("keep", 0), site_conn("gone", 1)))
        gw.connect(1)
        await gw.settle()
        sa = next(s for s in gw.service.endpoint.sas if s.name == "gone")
        sa.rekey()
        gw.service._pump()   # the CREATE_CHILD_SA is out, its answer not read yet
        assert await gw.reload(conf(site_conn("keep", 0))) == {"ok": True, "message": "IKE connections removed: gone"}
        assert gw.service.endpoint.sas == [] and down_events(gw, 1)
        assert_nothing_for(gw, 1)

    run(body())


def test_an_ike_sa_up_under_a_connection_the_service_no_longer_has_is_deleted(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The backstop for a bug that would let one through: IkeSaUp under a config that is not the
    connection's (here the service's connection is swapped behind the engine's back)."""
    async def body() -> None:
        gw = await gateway(tmp_path, conf(site_conn("site", 1)))
        c = gw.service.connections["site"]
        gw.service.connections["site"] = dataclasses.replace(c, ike=dataclasses.replace(c.ike))
        gw.connect(1)
        await gw.settle()
        assert "came up under a connection a reload changed: deleting it" in caplog.text
        assert_nothing_for(gw, 1)

    with caplog.at_level(logging.ERROR, "tunsec.ike"):
        run(body())
