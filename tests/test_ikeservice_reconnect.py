"""A road warrior back in a new IKE SA while its old one is still at the gateway (issue 9).

A client that comes back with the same identity without INITIAL_CONTACT (it restarted with
unique = never, or came back from another device or address; or the gateway's unique = replace has
sent the old IKE SA its DELETE, which is not answered yet) is leased the same virtual IP: leases are
per identity, as strongSwan's mem pool.  Its new Child SA has the same selectors as the old one.
With a reqid and policies of its own, its policies sat behind the old one's (same priority, older
first) and the traffic to the address kept going to the old, dead SA until DPD removed it (~165 s
with unique = replace's unanswered DELETE, forever without DPD).  As strongSwan gives identical
policies one reqid so that the newest SA wins, the new Child SA joins the old one's lineage
(services/ike/installs.py ``_sibling``) and takes the traffic over at once; when the old IKE SA goes
(its DELETE, DPD, the DELETE of unique = replace answered late) the traffic stays on the new one and
nothing of the old IKE SA stays in the worker, not even an inbound SA lingering from a rekey.
Another identity's Child SA with the same selectors must not take a peer's traffic over.

The gateway is a real IkeService with the worker's request handling and the C fast path in
process (test_ikeservice_lease_fence.PoolGateway: a pool of ONE address; test_ikeservice_peers's
Gateway for the site-to-site case); the clients are IKE engines wired to it.  DPD runs on the
gateway's engine clock, advanced by hand (handle_timer), so no test waits for it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from test_ikeservice_lease_fence import (
    IDS,
    VIP,
    PoolGateway,
    assert_sealed_for,
    child_of,
    client_cfg,
    esp_seal,
    ike_sa_of,
)
from test_ikeservice_peers import GW, Gateway, _now, esp_open, ipv4_udp, psk_ike, run, site_ip, site_net

from tunsec.dataplane.fastpath import Drop
from tunsec.dataplane.pipe import Direction, Endpoint
from tunsec.ike.config import RemoteAuth, RetransmitConfig
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaUp, NegotiationFailed
from tunsec.ike.identity import Identity
from tunsec.ike.sa import IkeSa, State
from tunsec.services.ike.state import ChildState

A = 0   # the client: IDS[A] ("a.example"), first at site_ip(0)


class Unreachable:
    """A client host in Gateway.sites that is gone (crashed, out of coverage): what the gateway
    sends it is held (``held``), it sends nothing."""

    def __init__(self) -> None:
        self.held: list[tuple[bytes, tuple[str, int], tuple[str, int] | None]] = []

    def datagrams_to_send(self, now: float) -> list[object]:
        return []

    def next_event(self) -> None:
        return None

    def receive(self, data: bytes, src: tuple[str, int], now: float, dst: tuple[str, int] | None = None) -> None:
        self.held.append((data, src, dst))


@dataclass
class Reconnect:
    """The client's first instance (``old``, its IKE SA and Child SA at the gateway) and the site
    slot the instance that came back is in (``back``)."""

    gw: PoolGateway
    old: IkeEndpoint
    back: int
    old_ike: IkeSa
    old_child: ChildState
    old_in: set[int] = field(default_factory=set)   # every inbound SPI of the old IKE SA's Child SAs
    old_out: set[tuple[int, Endpoint]] = field(default_factory=set)


async def pool_gateway(n: int, unique: str = "no") -> PoolGateway:
    """PoolGateway with DPD on a clock the test advances: a 30 s delay (nothing fires on its own
    during a test), one retransmission a second later (see dpd_gives_up)."""
    gw = PoolGateway(n, mobike=False)
    await gw.start()
    conn = gw.service.connections["gw"]
    ike = dataclasses.replace(conn.ike, dpd_delay=30.0, retransmit=RetransmitConfig(timeout=1.0, base=1.0, tries=1))
    gw.service.connections["gw"] = dataclasses.replace(conn, ike=ike, unique=unique)  # type: ignore[arg-type]
    gw.service.endpoint.set_configs([ike])   # before any IKE SA: all are made with it
    return gw


def back_cfg(i: int) -> IkeEndpoint:
    """The client again (its identity), at site_ip(i), sending no INITIAL_CONTACT."""
    return IkeEndpoint([dataclasses.replace(client_cfg(i, IDS[A]), initial_contact=False)])


def established(site: IkeEndpoint) -> IkeSa:
    return next(sa for sa in site.sas if sa.state is State.ESTABLISHED)


async def connect_then_back(where: str, unique: str = "no", rekeyed: str = "") -> Reconnect:
    """The client connects; (its Child SA rekeyed); it comes back: at the same address as a new
    instance (the old one is gone with its state), or from another address (the old one still
    there, or not: see the tests)."""
    gw = await pool_gateway(1 if where == "same address" else 2, unique)
    gw.connect(A)
    await gw.settle()
    old_in: set[int] = set()
    if rekeyed == "old child rekeyed":   # the old Child SA's first inbound SA lingers, in the old IKE SA
        first = child_of(gw, IDS[A])
        assert first is not None
        old_in.add(first.spi_in)
        sa = gw.site_sa(A)
        sa.rekey_child(sa.children[0].unique_id)
        await gw.settle()
        assert first.spi_in in {s.spi for s in gw.worker.dp.sas() if s.direction is Direction.IN}
    old_child = child_of(gw, IDS[A])
    assert old_child is not None and old_child.remote_ts[0].start == ipaddress.ip_address(VIP)
    old_in.add(old_child.spi_in)
    old = gw.sites[A]
    old_ike = ike_sa_of(gw, IDS[A])
    back = 0 if where == "same address" else 1
    gw.sites[back] = back_cfg(back)
    gw.site_events[back] = []
    if unique == "replace":   # the old client does not answer the gateway's DELETE (yet)
        gw.sites[A] = Unreachable()   # type: ignore[assignment]
    gw.connect(back)
    await gw.settle()
    return Reconnect(gw, old, back, old_ike, old_child, old_in, {(old_child.spi_out, old_child.remote)})


def newest(r: Reconnect) -> ChildState:
    """The gateway's newest Child SA with the client, which must be of its new IKE SA."""
    state = child_of(r.gw, IDS[A])
    assert state is not None and state.ike != r.old_child.ike
    return state


def left_of_old(r: Reconnect) -> list[str]:
    """What the worker still holds of the old IKE SA's Child SAs."""
    out = [f"IN SA {s.spi:08x}" for s in r.gw.worker.dp.sas() if s.direction is Direction.IN and s.spi in r.old_in]
    out += [f"OUT SA {s.spi:08x}" for s in r.gw.worker.dp.sas()
            if s.direction is Direction.OUT and (s.spi, s.remote) in r.old_out]
    return out


def vip_policies(gw: Gateway) -> list[tuple[int, int | None]]:
    """(reqid, outbound SPI) of the worker's policies for traffic to the address."""
    return [(p.reqid, p.out_spi) for p in gw.worker.dp.policies() if p.selector.dst_lo == ipaddress.ip_address(VIP)]


def assert_opens_from(gw: Gateway, i: int, child: ChildState, seq: int) -> None:
    """A packet the client at site i sends on its newest Child SA (sequence number ``seq``), from the
    address, is let in."""
    up = [e for e in gw.site_events[i] if isinstance(e, ChildSaUp)][-1]
    packet = ipv4_udp(VIP, "10.1.0.5")
    esp = esp_seal(child.spi_in, seq, up.key_out.reveal(), packet)
    inner, drop = gw.worker.dp.inbound(esp, Endpoint(ipaddress.ip_address(site_ip(i)), 4500),
                                       Endpoint(ipaddress.ip_address(GW), 4500))
    assert (inner, drop) == (packet, Drop.NONE)


async def dpd_gives_up(gw: PoolGateway, sa: IkeSa) -> None:
    """The gateway's DPD of ``sa``, whose peer does not answer, on an engine clock moved on by hand:
    past the DPD delay (30 s) and then past each retransmission.  The other clients answer theirs
    (settle) before the clock moves again."""
    at = time.monotonic() + 31.0
    for _ in range(10):
        gw.service.endpoint.handle_timer(at)
        gw.service._pump()
        await gw.settle()
        if sa.is_closed:
            return
        at += 5.0
    raise AssertionError("DPD never gave up")


async def old_goes(r: Reconnect, how: str) -> None:
    """The old IKE SA goes: its client's DELETE; DPD (the old client gone: nothing reaches it or
    comes from it); or, under unique = replace, the old client answers the gateway's DELETE late."""
    gw = r.gw
    if how == "delete":
        assert r.back != A   # the old client, still at its address, says goodbye
        established(r.old).delete(_now())
        await gw.settle()
    elif how == "dpd":
        if r.back != A:
            gw.sites[A] = Unreachable()   # type: ignore[assignment]
        await dpd_gives_up(gw, r.old_ike)
    else:
        held = gw.sites[A]
        assert isinstance(held, Unreachable) and held.held   # the gateway's DELETE of the old IKE SA
        gw.sites[A] = r.old
        for data, src, dst in held.held:
            r.old.receive(data, src, _now(), dst)
        await gw.settle()
    assert r.old_ike.is_closed


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize(("where", "how"), [("same address", "dpd"), ("new address", "delete"),
                                            ("new address", "dpd"), ("new address", "replace")])
@pytest.mark.parametrize("rekeyed", ["", "old child rekeyed", "new child rekeyed"])
def test_a_client_back_without_initial_contact_takes_its_address_traffic_over(
        where: str, how: str, rekeyed: str) -> None:
    async def body() -> None:
        r = await connect_then_back(where, "replace" if how == "replace" else "no", rekeyed)
        gw = r.gw
        # both IKE SAs of the client are up (replace: the old one's DELETE is unanswered), one lease
        assert r.old_ike.state is (State.DELETING if how == "replace" else State.ESTABLISHED)
        assert [(str(x.address), x.identity, x.online) for x in gw.service.pools.leases()] == [(VIP, IDS[A], True)]
        if rekeyed == "new child rekeyed":
            sa = gw.site_sa(r.back)
            sa.rekey_child(sa.children[0].unique_id)
            await gw.settle()
        new = newest(r)
        # (a) one reqid and one set of policies for the address, on the new Child SA: the traffic
        # to the address is sealed for the client where it is now, with its new keys
        assert new.reqid == r.old_child.reqid and vip_policies(gw) == [(new.reqid, new.spi_out)]
        assert_sealed_for(gw, r.back, new)
        assert_opens_from(gw, r.back, new, 1)
        # (b) the old IKE SA goes: the traffic stays, nothing of the old IKE SA stays in the worker
        await old_goes(r, how)
        assert left_of_old(r) == []
        assert [c.handle for c in gw.service.children.values()] == [new.handle]
        assert vip_policies(gw) == [(new.reqid, new.spi_out)]
        assert_sealed_for(gw, r.back, new)
        assert_opens_from(gw, r.back, new, 2)
        assert [(str(x.address), x.identity, x.online) for x in gw.service.pools.leases()] == [(VIP, IDS[A], True)]
        # (c) the client leaves: its policies and every SA of both its IKE SAs go with the last
        spis = {s.spi for s in gw.worker.dp.sas()}
        established(gw.sites[r.back]).delete(_now())
        await gw.settle()
        assert gw.service.children == {} and vip_policies(gw) == []
        assert {s.spi for s in gw.worker.dp.sas()} & (spis | r.old_in) <= set(gw.service.spi_pool.spis)
        assert [(str(x.address), x.online) for x in gw.service.pools.leases()] == [(VIP, False)]

    run(body())


def test_the_old_ike_sas_rekey_of_its_child_moves_the_traffic_back_as_the_newest() -> None:
    """Two live instances of one identity (unique = no): the newest Child SA of the lineage carries
    the traffic, whichever IKE SA made it, as in strongSwan (one reqid, newest SA).  Here the old
    instance rekeys its Child SA after the new one came; the gateway answered the rekey, so it moves
    over when the old instance sends on it or deletes the Child SA it rekeyed."""
    async def body() -> None:
        r = await connect_then_back("new address")
        gw = r.gw
        new = newest(r)
        assert_sealed_for(gw, 1, new)
        sa = established(r.old)   # (still there, at its address)
        sa.rekey_child(sa.children[0].unique_id)
        await gw.settle()
        rekeyed = max((c for c in gw.service.children.values() if c.ike == r.old_child.ike), key=lambda c: c.handle)
        assert rekeyed.handle > new.handle and rekeyed.reqid == new.reqid
        assert vip_policies(gw) == [(new.reqid, rekeyed.spi_out)]
        assert_sealed_for(gw, A, rekeyed)

    run(body())


def test_the_newer_instance_leaving_first_hands_the_traffic_back_to_the_older_one() -> None:
    """Two live instances of one identity (unique = no): the newer one leaves first.  The lineage
    goes on in the older IKE SA, whose Child SA carries the address's traffic again; nothing of the
    newer IKE SA stays in the worker (its inbound SA does not linger: its IKE SA is gone)."""
    async def body() -> None:
        r = await connect_then_back("new address")
        gw = r.gw
        new = newest(r)
        assert_sealed_for(gw, 1, new)
        established(gw.sites[1]).delete(_now())
        await gw.settle()
        assert [c.handle for c in gw.service.children.values()] == [r.old_child.handle]
        assert not {new.spi_in, new.spi_out} & {s.spi for s in gw.worker.dp.sas()}
        assert vip_policies(gw) == [(r.old_child.reqid, r.old_child.spi_out)]
        assert_sealed_for(gw, A, r.old_child)
        assert_opens_from(gw, A, r.old_child, 1)

    run(body())


@pytest.fixture
def updown_log(tmp_path: Path) -> tuple[tuple[str, ...], Path]:
    """A real updown script (argv) that appends what it is told to a file (the Path)."""
    log = tmp_path / "updown.log"
    script = tmp_path / "updown.sh"
    script.write_text(f'#!/bin/sh\necho "$PLUTO_VERB $PLUTO_PEER_CLIENT $PLUTO_REQID $PLUTO_PEER $PLUTO_UNIQUEID" '
                      f'>> {log}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return (str(script),), log


def test_the_updown_script_hears_one_up_and_its_down_for_the_address(
        updown_log: tuple[tuple[str, ...], Path]) -> None:
    """The lineage's script events (installs._installed, _child_down): up-client when the address
    is first up, nothing when the client comes back and its old IKE SA goes (the address stays
    routed to it all along), down-client with what up-client said when the last one leaves (a
    script's firewall rules for the address are removed exactly once, and only then)."""
    argv, log = updown_log

    async def body() -> None:
        gw = await pool_gateway(2)
        conn = gw.service.connections["gw"]
        gw.service.connections["gw"] = dataclasses.replace(
            conn, children=(dataclasses.replace(conn.children[0], updown=argv),))
        gw.connect(A)
        await gw.settle()
        up = log.read_text().splitlines()
        assert len(up) == 1 and up[0].startswith(f"up-client {VIP}/32 ")
        old = gw.sites[A]
        gw.sites[1] = back_cfg(1)
        gw.site_events[1] = []
        gw.connect(1)
        await gw.settle()
        established(old).delete(_now())
        await gw.settle()
        assert log.read_text().splitlines() == up
        established(gw.sites[1]).delete(_now())
        await gw.settle()
        assert log.read_text().splitlines() == [*up, up[0].replace("up-client", "down-client", 1)]

    run(body())


def test_another_identity_with_the_same_selectors_does_not_take_the_traffic_over() -> None:
    """Site-to-site: site 1 (another identity) claims site 0's network.  Its Child SA is refused
    (TS_UNACCEPTABLE: policy/claims.py), as a lineage of its own behind site 0's would let it send
    as site 0; site 0's traffic stays sealed for site 0; only when site 0 is gone may site 1 hold
    the network, and the traffic goes to site 1, through site 1's own policies."""
    async def body() -> None:
        gw = Gateway(2, mobike=False)
        await gw.start()
        for i in range(2):
            gw.sites[i] = IkeEndpoint([psk_ike(f"site{i}", f"site{i}.example",
                                               RemoteAuth("psk", Identity.parse("gw.example")),
                                               site_ip(i), GW, site_net(0), "10.1.0.0/16")])
            gw.connect(i)
            await gw.settle()
        (mine,) = gw.children_of(0)
        assert gw.children_of(1) == []
        assert [e.reason for e in gw.site_events[1] if isinstance(e, NegotiationFailed)] == ["TS_UNACCEPTABLE"]

        def sealed_for() -> tuple[int, Endpoint | None]:
            esp, dst, drop = gw.send_to_site(0)
            assert drop is Drop.NONE
            return int.from_bytes(esp[:4], "big"), dst
        assert sealed_for() == (mine.spi_out, Endpoint(ipaddress.ip_address(site_ip(0)), 4500))
        esp_open(gw.site_key_in(0), gw.send_to_site(0)[0])   # site 0's key, not site 1's
        gw.site_sa(0).delete(_now())
        await gw.settle()
        gw.connect(1)
        await gw.settle()
        (theirs,) = gw.children_of(1)
        assert theirs.remote_ts == mine.remote_ts and theirs.reqid != mine.reqid
        assert sealed_for() == (theirs.spi_out, Endpoint(ipaddress.ip_address(site_ip(1)), 4500))
        assert {p.reqid for p in gw.worker.dp.policies() if p.reqid} == {theirs.reqid}

    run(body())
