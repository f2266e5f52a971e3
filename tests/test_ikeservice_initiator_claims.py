"""Child SAs we initiate are held to the claims rule too (policy/claims.py).

A hub initiates site-to-site connections to several spokes, each named in a connection of its
own; a spoke's connection may give it a wide remote_ts (10.2.0.0/16) to choose its subnet from.
The spoke is the responder: it chooses the TSr of its answer, within what we proposed.  One that
answers with another spoke's subnet would, installed, put its policies beside that spoke's (the
older of equal ones wins, so only part of the theft shows) and have its inbound SA admit that
subnet's addresses as source.  So an answer to our IKE_AUTH or CREATE_CHILD_SA whose selectors
overlap another identity's is refused: the Child SA the spoke installed is deleted with an
INFORMATIONAL DELETE, the log line names both peers, the refusal is counted.  Two answers read in
one batch (neither booked yet) meet the service's backstop, which now covers our requests too.
What stays up: a spoke's own rekeys (also after an IKE SA rekey moved its Child SA), and a
primary and a backup whose connections name them and give both the same remote_ts as written.

The hub is a real IkeService with the worker's request handling and the C fast path in process
(test_ikeservice_peers.InProcessWorker); the spokes are IKE engines wired to it in memory."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
from dataclasses import dataclass

import pytest
from status_stub import stub_daemon
from test_ikeservice_peers import GW, PSK, FakeSocket, Gateway, InProcessWorker, _now, esp_open, ipv4_udp, run, site_ip

from tunsec.conf.connections import Connection
from tunsec.dataplane import pipe
from tunsec.dataplane.fastpath import Drop
from tunsec.dataplane.pipe import Endpoint
from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaUp, NegotiationFailed
from tunsec.ike.identity import Identity
from tunsec.ike.message import header_fields
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.sa import IkeSa, State
from tunsec.ike.ts import Ts
from tunsec.metrics import event_families
from tunsec.policy.ids import IdSpace
from tunsec.services.ike import IkeService
from tunsec.services.ike.state import ChildState
from tunsec.status import render, status_document

HUB_NET = "10.1.0.0/16"
PROPOSALS = parse_proposals("aes128gcm16-prfsha256-curve25519")
IKE_AUTH = 35


@dataclass(frozen=True)
class Net:
    """A child of a spoke: the hub's remote_ts for it, and the spoke's local_ts (what it answers)."""

    name: str
    hub_remote: str
    spoke_local: str


@dataclass(frozen=True)
class Spoke:
    ident: str
    nets: tuple[Net, ...]
    start: str = ""   # the child the hub initiates first ("": the first of nets)


@dataclass
class Hub(Gateway):
    """An IkeService on GW with one connection per spoke (named by its identity, remote_addrs its
    address), initiated by the hub; the spokes answer."""

    spokes: tuple[Spoke, ...] = ()

    async def start(self) -> None:
        conns = []
        for i, s in enumerate(self.spokes):
            children = tuple(child_config(n.name, HUB_NET, n.hub_remote, "aes128gcm16") for n in s.nets)
            named = RemoteAuth("psk", Identity.parse(s.ident))
            conns.append(Connection(f"spoke{i}", IkeConfig(
                f"spoke{i}", LocalAuth("psk", Identity.parse("hub.example")), named, PROPOSALS, children, psk=PSK,
                local_addr=GW, remote_addr=site_ip(i), mobike=False)))
        self.worker = InProcessWorker(asyncio.get_running_loop(), self._natt_out)
        self.service = IkeService(conns, lambda: self.worker, {4: GW}, IdSpace())  # type: ignore[arg-type,return-value]
        await self.service.start()
        self.service.sockets.by_key = {(4, GW, 500): FakeSocket(self.wire)}  # type: ignore[dict-item]
        for i, s in enumerate(self.spokes):
            # the last first: a request the spoke's children fit equally lands in the last (the
            # subnet a thief answers a wide second child with), the first still finds its own
            children = tuple(child_config(n.name, n.spoke_local, HUB_NET, "aes128gcm16") for n in reversed(s.nets))
            cfg = IkeConfig("hub", LocalAuth("psk", Identity.parse(s.ident)),
                            RemoteAuth("psk", Identity.parse("hub.example")), PROPOSALS, children, psk=PSK,
                            local_addr=site_ip(i), remote_addr=GW, mobike=False)
            self.sites.append(IkeEndpoint([cfg]))
            self.site_events.append([])

    def hub_sa(self, i: int) -> IkeSa:
        return next(sa for sa in self.service.endpoint.sas if sa.name == f"spoke{i}" and sa.state is State.ESTABLISHED)

    def children_of(self, i: int) -> list[ChildState]:
        return [c for c in self.service.children.values() if c.conn == f"spoke{i}"]

    def refused(self, i: int, child: str = "net") -> int:
        return self.service.events.ts_claims_refused[(f"spoke{i}", child)]


async def hub(*spokes: Spoke) -> Hub:
    """The hub initiates each spoke's first child, one spoke after the other."""
    h = Hub(len(spokes), mobike=False, spokes=spokes)
    await h.start()
    for i, s in enumerate(spokes):
        h.service.initiate(f"spoke{i}", s.start or s.nets[0].name)
        await h.settle()
    return h


def reaches(h: Hub, dst: str) -> int | None:
    """Which spoke a packet from the hub's side to ``dst`` is sealed for (None: not sent)."""
    esp, to, drop, _ = h.worker.dp.outbound(ipv4_udp("10.1.0.5", dst))
    if drop is not Drop.NONE or to is None:
        return None
    (i,) = [i for i in range(h.n) if to == Endpoint(ipaddress.ip_address(site_ip(i)), 4500)]
    spi = int.from_bytes(esp[:4], "big")
    (key,) = [e.key_in.reveal() for e in h.site_events[i] if isinstance(e, ChildSaUp) and e.spi_in == spi]
    _, inner = esp_open(key, esp)   # only that spoke's Child SA's key opens it
    assert inner == ipv4_udp("10.1.0.5", dst)
    return i


async def status_text(h: Hub) -> str:
    """``tunsec status`` as the CLI prints it, the daemon's own part stubbed (no TUN, no sockets)."""
    dump = pipe.join_dump_replies(await h.worker.request(lambda r: pipe.Dump(r)))
    daemon = stub_daemon(h.service.status)
    return render(status_document(daemon, dump))  # type: ignore[arg-type]


def claims_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "TS_UNACCEPTABLE" in r.getMessage()
            or "not installed" in r.getMessage()]


WIDE = "10.2.0.0/16"
OWN, THIEF = 0, 1


def test_a_spoke_answering_ike_auth_with_another_spokes_subnet_gets_no_child_sa(
        caplog: pytest.LogCaptureFixture) -> None:
    """Spoke 0 holds 10.2.1.0/24; spoke 1's connection allows 10.2.0.0/16 and its IKE_AUTH answer
    narrows our TSr to 10.2.1.0/24: refused, the spoke's half deleted (its IKE SA stays up), the
    log names both spokes and the overlap, counted; spoke 0's subnet stays spoke 0's.  Spoke 0 is
    given 10.2.1.0/24 as written, and our proposal to spoke 1 (10.2.0.0/16 as written) keeps it:
    two peers named with selectors as written may share (a primary and a backup), so only the
    answer tells (a spoke 0 that chose its part of 10.2.0.0/16: the test after this one)."""
    caplog.set_level(logging.INFO, logger="tunsec")

    async def body() -> None:
        h = await hub(Spoke("spoke0.example", (Net("net", "10.2.1.0/24", "10.2.1.0/24"),)),
                      Spoke("spoke1.example", (Net("net", WIDE, "10.2.1.0/24"),)))
        assert len(h.children_of(OWN)) == 1 and h.children_of(THIEF) == []
        assert h.hub_sa(THIEF).children == []
        assert h.site_sa(THIEF).children == []   # the DELETE reached it
        assert any(isinstance(e, ChildSaUp) for e in h.site_events[THIEF])   # it had installed its half
        assert h.refused(THIEF) == 1 and h.refused(OWN) == 0
        assert reaches(h, "10.2.1.7") == OWN
        assert {p.reqid for p in h.worker.dp.policies() if p.reqid} == {h.children_of(OWN)[0].reqid}
        (metric,) = [f for f in event_families(h.service.events, 0) if f.name == "tunsec_child_sa_ts_claims_refused"]
        assert [(s.labels, s.value) for s in metric.samples] == [({"connection": "spoke1", "child": "net"}, 1.0)]
        assert "Child SAs refused, their selectors another peer's: spoke1/net 1" in (await status_text(h)).splitlines()
    run(body())
    (line,) = claims_lines(caplog)
    assert "spoke1.example" in line and "spoke0.example" in line and "10.2.1.0/24" in line


def test_another_spokes_chosen_subnet_is_not_offered_to_a_spoke(caplog: pytest.LogCaptureFixture) -> None:
    """Spoke 0 chose 10.2.1.0/24 of 10.2.0.0/16; our IKE_AUTH request to spoke 1 (10.2.0.0/16)
    leaves it out (exchanges/child.py outside_others_claims: spoke 1 is not spoke 0, whoever answers
    on its PSK connection), so spoke 1, which has only that subnet, refuses: nothing installed on
    either side, nothing of ours refused; spoke 0's subnet stays spoke 0's.  On main the proposal
    held it, spoke 1 installed its half, and our answer's check refused and deleted it."""
    caplog.set_level(logging.INFO, logger="tunsec")

    async def body() -> None:
        h = await hub(Spoke("spoke0.example", (Net("net", WIDE, "10.2.1.0/24"),)),
                      Spoke("spoke1.example", (Net("net", WIDE, "10.2.1.0/24"),)))
        assert len(h.children_of(OWN)) == 1 and h.children_of(THIEF) == []
        assert h.site_sa(THIEF).children == [] and h.hub_sa(THIEF).children == []
        assert not any(isinstance(e, ChildSaUp) for e in h.site_events[THIEF])   # never installed
        assert h.refused(THIEF) == 0 and h.refused(OWN) == 0
        assert reaches(h, "10.2.1.7") == OWN
    run(body())
    (line,) = [r.getMessage() for r in caplog.records if "proposing TSr" in r.getMessage()]
    assert "spoke1" in line and "10.2.0.0/24, 10.2.2.0-10.2.255.255" in line and "spoke0.example" in line


def test_a_spoke_answering_create_child_sa_with_another_spokes_subnet_gets_no_child_sa(
        caplog: pytest.LogCaptureFixture) -> None:
    """Spoke 1 is up with a subnet of its own (10.2.2.0/24); a second child we ask it for with
    CREATE_CHILD_SA (remote_ts 10.2.0.0/16) is answered with 10.2.1.0/24, spoke 0's: refused, its
    half deleted, counted; spoke 1's first child and spoke 0's traffic are untouched."""
    caplog.set_level(logging.INFO, logger="tunsec")

    async def body() -> None:
        h = await hub(Spoke("spoke0.example", (Net("net", "10.2.1.0/24", "10.2.1.0/24"),)),
                      Spoke("spoke1.example", (Net("net", "10.2.2.0/24", "10.2.2.0/24"),
                                               Net("more", WIDE, "10.2.1.0/24"))))
        (first,) = h.children_of(THIEF)
        h.service.initiate("spoke1", "more")
        await h.settle()
        assert h.children_of(THIEF) == [first]
        assert [c.name for c in h.hub_sa(THIEF).children] == ["net"]
        assert [c.name for c in h.site_sa(THIEF).children] == ["net"]   # "more" deleted there
        assert h.refused(THIEF, "more") == 1
        assert [reaches(h, d) for d in ("10.2.1.7", "10.2.2.7")] == [OWN, THIEF]
    run(body())
    (line,) = claims_lines(caplog)
    assert "spoke1.example" in line and "spoke0.example" in line and "more" in line


def test_two_answers_read_in_one_batch_leave_one_child_sa_installed(caplog: pytest.LogCaptureFixture) -> None:
    """Both spokes' IKE_AUTH answers with 10.2.1.0/24 are read in one batch: the engine accepts
    both (neither is booked yet); the service installs the first, deletes the second with an
    INFORMATIONAL DELETE, logs and counts it."""
    caplog.set_level(logging.INFO, logger="tunsec")

    async def body() -> None:
        h = Hub(2, mobike=False, spokes=(Spoke("spoke0.example", (Net("net", WIDE, "10.2.1.0/24"),)),
                                         Spoke("spoke1.example", (Net("net", WIDE, "10.2.1.0/24"),))))
        await h.start()
        answers = await held_auth_answers(h)
        for i in (OWN, THIEF):
            h.service.receive(answers[i], (site_ip(i), 4500), (GW, 4500))
        h.service._pump()
        await h.settle()
        assert len(h.children_of(OWN)) == 1 and h.children_of(THIEF) == []
        assert h.site_sa(THIEF).children == [] and len(h.site_sa(OWN).children) == 1
        assert h.refused(THIEF) == 1 and reaches(h, "10.2.1.7") == OWN
    run(body())
    (line,) = claims_lines(caplog)
    assert "not installed" in line and "spoke1.example" in line and "spoke0.example" in line


async def held_auth_answers(h: Hub) -> dict[int, bytes]:
    """The hub initiates every spoke; their IKE_AUTH answers are held back, by spoke."""
    for i in range(h.n):
        h.service.initiate(f"spoke{i}", "net")
    held: dict[int, bytes] = {}
    for _ in range(200):
        for i, site in enumerate(h.sites):
            for d in site.datagrams_to_send(_now()):
                _, exchange, flags, _ = header_fields(d.data)
                if exchange == IKE_AUTH and flags & 0x20:
                    held[i] = d.data
                elif d.addr[1] == 4500:
                    h.service.receive_natt(pipe_ike(d.data, site_ip(i), d.local_port))
                else:
                    h.service.receive(d.data, (site_ip(i), d.local_port), d.addr)
                    h.service._pump()
        while h.wire:
            src, dst, data = h.wire.pop(0)
            i = next(k for k in range(h.n) if site_ip(k) == dst[0])
            h.sites[i].receive(data, src, _now(), dst)
        if len(held) == h.n:
            return held
        await asyncio.sleep(0)
    raise AssertionError(f"IKE_AUTH answers held: {sorted(held)}")


def pipe_ike(data: bytes, src: str, port: int) -> pipe.Ike:
    return pipe.Ike(data=data, remote=Endpoint(ipaddress.ip_address(src), port))


def test_primary_and_backup_named_with_the_same_remote_ts_are_both_up() -> None:
    """Two spokes whose connections name them and give both 10.2.1.0/24 as written (a primary and a
    backup of one site): both Child SAs up, the primary's carries the traffic, nothing refused."""
    async def body() -> None:
        site = "10.2.1.0/24"
        h = await hub(Spoke("primary.example", (Net("net", site, site),)),
                      Spoke("backup.example", (Net("net", site, site),)))
        assert len(h.children_of(0)) == 1 and len(h.children_of(1)) == 1
        assert h.refused(0) == h.refused(1) == 0
        assert reaches(h, "10.2.1.7") == 0
    run(body())


def test_a_spokes_own_rekeys_pass_also_after_an_ike_rekey() -> None:
    """Spoke 0's Child SA, rekeyed by the hub, then moved to a new IKE SA by an IKE SA rekey and
    rekeyed again there: each rekey overlaps only the spoke's own claims, and is installed; spoke
    1 (another subnet) is untouched and nothing is refused."""
    async def body() -> None:
        h = await hub(Spoke("spoke0.example", (Net("net", WIDE, "10.2.1.0/24"),)),
                      Spoke("spoke1.example", (Net("net", WIDE, "10.2.2.0/24"),)))
        for rekey_ike in (False, True):
            if rekey_ike:
                old = h.hub_sa(0)
                old.rekey()
                h.service._pump()
                await h.settle()
                assert h.hub_sa(0) is not old and h.hub_sa(0).children
            sa = h.hub_sa(0)
            (child,) = sa.children
            h.service.spi_pool.with_spi(functools.partial(sa.rekey_child, child.unique_id))
            h.service._pump()
            await h.settle()
            (new,) = h.hub_sa(0).children
            assert new.spi_in != child.spi_in and new.remote_ts == (Ts.parse("10.2.1.0/24"),)
        assert [len(h.children_of(i)) for i in (0, 1)] == [1, 1]
        assert not any(isinstance(e, NegotiationFailed) for events in h.site_events for e in events)
        assert h.refused(0) == h.refused(1) == 0
        assert [reaches(h, d) for d in ("10.2.1.7", "10.2.2.7")] == [0, 1]
        assert h.service.events.child_rekeys[("spoke0", "net")] == 2
    run(body())


def test_a_named_spokes_second_child_may_overlap_its_first_whichever_side_asks() -> None:
    """Spoke 0's connection gives it 10.2.2.0/24 as written ("net") and lets it choose from
    10.2.0.0/16 ("more"): a second child overlapping its first is still the spoke's own, whether the
    spoke asks for it (10.2.2.0/23, the hub answers) or the hub does (the spoke answers 10.2.2.0/24).
    Neither is refused: the same identity, named by its connection, overlaps nothing of another's."""
    async def body() -> None:
        h = await hub(Spoke("spoke0.example", (Net("more", WIDE, "10.2.2.0/23"),
                                               Net("net", "10.2.2.0/24", "10.2.2.0/24")), start="net"),
                      Spoke("spoke1.example", (Net("net", WIDE, "10.2.9.0/24"),)))
        h.site_sa(0).initiate("more")
        h.service.initiate("spoke0", "more")
        await h.settle()
        assert sorted((c.child, str(c.remote_ts[0])) for c in h.children_of(0)) == \
            [("more", "10.2.2.0/23"), ("more", "10.2.2.0/24"), ("net", "10.2.2.0/24")]
        assert not any(isinstance(e, NegotiationFailed) for events in h.site_events for e in events)
        assert h.refused(0, "more") == 0 and len(h.children_of(1)) == 1
    run(body())
