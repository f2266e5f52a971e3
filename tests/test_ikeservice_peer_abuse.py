"""An authenticated peer abusing its IKE SA, at the gateway (IkeService, in-process worker).

Rekeys that never delete the old IKE SA: bounded by sa_successor.MAX_UNDELETED, handles with them;
such refusals are shown as an authenticated peer's, apart from strangers' drops (status, metrics).

RFC 7296 §2.23: without MOBIKE, an IKE SA and its Child SAs' ESP follow the source of
the peer's authenticated requests only if a NAT was seen in front of the peer (as strongSwan's
update_hosts with COND_NAT_THERE).  The sites here send genuine NAT detection hashes (a strongSwan
peer with encap = no); tunsec's own random one says "NAT" (test_ikeservice_peers.py's rebinding tests)."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence

from test_ikeservice_peers import Gateway, assert_reaches_only_its_site, run, site_ip

from tunsec import metrics
from tunsec.dataplane import pipe
from tunsec.dataplane.fastpath import Drop
from tunsec.dataplane.pipe import Endpoint
from tunsec.ike.constants import ExchangeType, ProtocolId
from tunsec.ike.exchanges.base import Outcome, Task
from tunsec.ike.exchanges.informational import SPARE_SPIS
from tunsec.ike.message import DeletePayload, Payload, decode_header
from tunsec.ike.sa_successor import MAX_UNDELETED
from tunsec.ike.state import IkeSaState
from tunsec.status import render

SPOOFED = Endpoint(ipaddress.ip_address("203.0.113.9"), 4500)   # a third party


async def _spoofed_request(gw: Gateway, i: int) -> None:
    """Site i's next authenticated request (a DPD) reaches the gateway from SPOOFED: the site's own
    doing, or an on-path attacker's copy sent ahead of the site's."""
    gw.site_sa(i).send_liveness()
    for d in gw.sites[i].datagrams_to_send(0):
        gw.service.receive_natt(pipe.Ike(data=d.data, remote=SPOOFED))
    for _ in range(20):
        await asyncio.sleep(0)
        if gw.service._tasks:
            await asyncio.wait([*gw.service._tasks])
    gw.wire.clear()


def test_a_spoofed_source_does_not_move_a_peer_seen_without_nat() -> None:
    async def body() -> None:
        gw = Gateway(2, mobike=False, encap=False)
        await gw.start()
        for i in range(2):
            gw.connect(i)
        await gw.settle()
        (child,) = gw.children_of(0)
        home = Endpoint(ipaddress.ip_address(site_ip(0)), 4500)
        assert child.remote == home
        await _spoofed_request(gw, 0)
        assert gw.service.children[child.handle].remote == home
        assert not [m for m in gw.worker.log if isinstance(m, pipe.Migrate)]
        _, dst, drop = gw.send_to_site(0)
        assert drop is Drop.NONE and dst == home
        # the site itself still gets through, from where it is
        gw.site_sa(0).send_liveness()
        await gw.settle()
        assert gw.send_to_site(0)[1] == home

    run(body())


def test_a_peer_behind_a_nat_still_follows_its_new_mapping() -> None:
    """The same site behind a NAT from the start (its hash is of its inside address): the gateway saw
    the NAT and follows the site's requests to a new mapping (rebinding), Child SA included."""
    async def body() -> None:
        gw = Gateway(2, mobike=False, encap=False)
        await gw.start()
        gw.nat[0] = ("198.51.100.200", 30000)
        for i in range(2):
            gw.connect(i)
        await gw.settle()
        (child,) = [c for c in gw.service.children.values() if str(c.remote.addr) == "198.51.100.200"]
        gw.nat[0] = ("198.51.100.201", 40000)
        gw.site_sa(0).send_liveness()
        await gw.settle()
        moved = Endpoint(ipaddress.ip_address("198.51.100.201"), 40000)
        assert gw.service.children[child.handle].remote == moved
        _, dst, drop = gw.send_to_site(0)
        assert drop is Drop.NONE and dst == moved
        # the other site, seen without NAT, stayed
        assert gw.send_to_site(1)[1] == Endpoint(ipaddress.ip_address(site_ip(1)), 4500)

    run(body())


class _AuthNumbered1(Task):
    """An empty "IKE_AUTH" request: on an IKE SA a rekey made, the site's second request is numbered 1."""

    exchange = ExchangeType.IKE_AUTH

    def build(self, st: object) -> list[Payload]:
        return []

    def process(self, st: object, payloads: object) -> Outcome:
        return Outcome.DONE


def test_an_ike_auth_numbered_1_after_a_rekey_does_not_move_a_peer_seen_without_nat() -> None:
    """Site 0 (no NAT, no MOBIKE) rekeys its IKE SA, sends request 0 there, then request 1 as an
    "IKE_AUTH" from SPOOFED: no MIGRATE, and the gateway's ESP for site 0 still goes to site 0."""
    async def body() -> None:
        gw = Gateway(2, mobike=False, encap=False)
        await gw.start()
        for i in range(2):
            gw.connect(i)
        await gw.settle()
        home = Endpoint(ipaddress.ip_address(site_ip(0)), 4500)
        gw.site_sa(0).rekey()
        await gw.settle()
        gw.site_sa(0).send_liveness()   # message 0 of the new IKE SA
        await gw.settle()
        site = gw.site_sa(0)
        site._queue.append(_AuthNumbered1())   # message 1, from SPOOFED
        site._start_next()
        site._changed()
        gw.nat[0] = (str(SPOOFED.addr), SPOOFED.port)
        await gw.settle()
        assert not site._queue and site._pending is None   # sent, and answered (INVALID_SYNTAX)
        assert not [m for m in gw.worker.log if isinstance(m, pipe.Migrate)]
        _, dst, drop = gw.send_to_site(0)
        assert drop is Drop.NONE and dst == home
        up = sorted(sa.remote_addr for sa in gw.service.endpoint.sas if sa.state.value == "established")
        assert up == [(site_ip(0), 4500), (site_ip(1), 4500)]   # the IKE SAs stayed too

    run(body())


def _informational_request(site: int, data: bytes) -> bool:
    hdr = decode_header(data)
    return site == 0 and hdr.exchange == ExchangeType.INFORMATIONAL and not hdr.is_response


def test_a_peer_that_rekeys_without_deleting_holds_few_ike_sas_and_handles() -> None:
    """Site 0 rekeys its IKE SA again and again and never lets a DELETE through: the gateway keeps
    MAX_UNDELETED replaced IKE SAs of it (their handles with them) and refuses further rekeys; when
    the site's last IKE SA goes, every handle of its lineage goes too."""
    async def body() -> None:
        gw = Gateway(2, mobike=False)
        await gw.start()
        for i in range(2):
            gw.connect(i)
        await gw.settle()
        gw.drop = _informational_request
        for _ in range(6):
            gw.site_sa(0).rekey()
            await gw.settle()
        states = [sa.state for sa in gw.service.endpoint.sas if sa.remote_addr[0] == site_ip(0)]
        assert sorted(s.value for s in states) == ["established", *["rekeyed"] * MAX_UNDELETED]
        assert gw.service.endpoint.stats.ike_rekeys_refused >= 1
        site0 = [sa for sa in gw.service._ike_handles if sa.remote_addr[0] == site_ip(0)]
        assert len(site0) == MAX_UNDELETED + 1 and len(set(gw.service._ike_handles.values())) == 2
        assert_reaches_only_its_site(gw, 0)
        gw.drop = None
        gw.site_sa(0).delete()
        await gw.settle()
        assert not [sa for sa in gw.service._ike_handles if sa.remote_addr[0] == site_ip(0)]
        assert len(gw.service._replaced) == 0   # site 1 never rekeyed
        assert_reaches_only_its_site(gw, 1)

    run(body())


class _JunkDelete(Task):
    """An INFORMATIONAL whose Delete payload lists SPIs the gateway never gave out."""

    exchange = ExchangeType.INFORMATIONAL

    def __init__(self, n: int) -> None:
        self._spis = tuple((0x7000_0000 + i).to_bytes(4, "big") for i in range(n))

    def build(self, st: IkeSaState) -> list[Payload]:
        return [DeletePayload(ProtocolId.ESP, 4, self._spis)]

    def process(self, st: IkeSaState, payloads: Sequence[Payload]) -> Outcome:
        return Outcome.DONE


def test_an_authenticated_peers_refusals_are_shown_apart_from_unauthenticated_drops() -> None:
    """Site 0 lists 100 junk SPIs in a DELETE, then rekeys its IKE SA without deleting: `tunsec
    status` (JSON and text) and the metrics show both counts (and the CREATE_CHILD_SAs refused for
    now) as refusals of an authenticated peer, not among the drops anyone can cause before
    authenticating."""
    async def body() -> None:
        gw = Gateway(1, mobike=False)
        await gw.start()
        gw.connect(0)
        await gw.settle()
        sa = gw.site_sa(0)
        sa._queue.append(_JunkDelete(100))   # the site's request, as its engine sends any
        sa._start_next()
        gw.sites[0]._touch(sa)
        await gw.settle()
        gw.drop = _informational_request
        for _ in range(MAX_UNDELETED + 2):
            gw.site_sa(0).rekey()
            await gw.settle()
        # CREATE_CHILD_SAs refused for now, as the engine counts them (ike/test_refused_for_now_counted.py)
        gw.service.endpoint.stats.child_sas_refused_for_now += 3
        doc = gw.service.status(pipe.Reply(1, pipe.MsgType.DUMP, pipe.Errno.OK))
        ignored = 100 - (1 + SPARE_SPIS)   # one Child SA
        assert doc["ike_refused"] == {"ike_rekeys_refused": 2, "delete_spis_ignored": ignored,
                                      "mobike_checks_failed": 0, "floats_refused": 0, "ike_sa_limit": 0,
                                      "child_sas_refused_for_now": 3}
        assert not {"ike_rekeys_refused", "delete_spis_ignored", "child_sas_refused_for_now"} & set(doc["ike_drops"])

        base = {"tun": {"name": "tunsec0", "mtu": 1400, "offloads": []}, "worker": {"pid": 1, "restarts": 0},
                "uptime_seconds": 1, "udp_offloads": [], "sas": [], "tunnels": [], "policies": [], "drops": {}}
        text = render({**base, **doc}).splitlines()
        (unauthenticated,) = [x for x in text if x.startswith("IKE: ")]
        assert "malformed 0" in unauthenticated and "ike_rekeys_refused" not in unauthenticated \
            and "delete_spis_ignored" not in unauthenticated
        assert f"IKE requests refused from authenticated peers: ike_rekeys_refused 2, " \
               f"delete_spis_ignored {ignored}, mobike_checks_failed 0, floats_refused 0, ike_sa_limit 0, " \
               f"child_sas_refused_for_now 3" in text

        families = {f.name: f for f in metrics.state_families(doc, True)}
        refused = {s.labels["reason"]: s.value for s in families["tunsec_ike_authenticated_refused"].samples}
        assert refused == {"ike_rekeys_refused": 2, "delete_spis_ignored": ignored, "mobike_checks_failed": 0,
                           "floats_refused": 0, "ike_sa_limit": 0, "child_sas_refused_for_now": 3}
        dropped = {s.labels["reason"] for s in families["tunsec_ike_requests_dropped"].samples}
        assert "malformed" in dropped and not dropped & set(refused)
        assert "before anything in them was authenticated" in families["tunsec_ike_requests_dropped"].documentation

    run(body())
