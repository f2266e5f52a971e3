"""A Child SA rekey keeps the Child SA's traffic selectors (RFC 7296 §2.8), whichever side asks.

The IKE service books a rekey on its predecessor's reqid and policies (its lineage), while the
claims (policy/claims.py) follow each Child SA: a rekey to other selectors moved the claim but left
the old policies in the SPD, bound to the new SA.  A spoke of a hub whose remote_ts is wide could
rekey 10.2.1.0/24 to 10.2.3.0/24 (or narrow it to 10.2.1.0/25); another spoke was then given
10.2.1.0/24 without a refusal, and the gateway's traffic to it still went to the first spoke (its
older policy first).  Now (exchanges/child.py):

- as responder, the proposal is narrowed to the old Child SA's selectors (as strongSwan's
  child_create reuse_ts) and anything but all of them is TS_UNACCEPTABLE (rekey_select);
- as initiator, we propose the old Child SA's selectors and refuse an answer with others, deleting
  the half the peer installed (rekey_answer);
- the service's backstop: a rekey whose selectors differ from its predecessor's does not join its
  lineage (installs._child_registered);

each counted (``rekey_ts_refused``).  What must stay: a road warrior's rekeys of its leased address
and of selectors narrowed at creation, from either side.

The gateway is a real IkeService with the worker's request handling and the C fast path in process;
the peers are IKE engines wired to it in memory."""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Sequence

import pytest
from test_ikeservice_initiator_claims import Hub, Net, Spoke, status_text
from test_ikeservice_initiator_claims import reaches as hub_reaches
from test_ikeservice_peers import Gateway, run
from test_ikeservice_ts_claims import Client, TsGateway, reaches, refusals

from tunsec.dataplane.pipe import Action
from tunsec.ike.events import NegotiationFailed
from tunsec.ike.sa import IkeSa
from tunsec.ike.ts import Ts
from tunsec.loglimit import PeerLogLimiter
from tunsec.metrics import event_families

WIDE = "10.2.0.0/16"
A, B = 0, 1


def uncovered(gw: Gateway) -> list[str]:
    """The PROTECT policies of Child SAs in the worker whose remote addresses the claims of their
    lineage's Child SAs do not all cover (the traffic they draw is nobody's to the claims)."""
    service, out = gw.service, []
    for pol in gw.worker.dp.policies():
        owner = service.child_policies.get(pol.id)
        if pol.action is not Action.PROTECT or owner is None:
            continue
        members = owner[2].members
        wanted = Ts(pol.selector.dst_lo, pol.selector.dst_hi)
        # everyone's claims over these addresses (an identity no claim has), then this lineage's
        found = service.ts_claims.overlaps(object(), [wanted], [])
        held = [common for claim, common in found if claim.handle in members]
        if not _covers(held, wanted):
            claimed = ", ".join(map(str, held))
            out.append(f"policy {pol.id} reqid {pol.reqid} to {wanted} beyond its claims {claimed}")
    return out


def _covers(parts: Sequence[Ts], whole: Ts) -> bool:
    at = int(whole.start)
    for part in sorted(parts, key=lambda t: int(t.start)):
        if int(part.start) > at:
            return False
        at = max(at, int(part.end) + 1)
    return at > int(whole.end)


def gateway_sa(gw: TsGateway, i: int) -> IkeSa:
    """The gateway's IKE SA with client i."""
    state = gw.child_of(i)
    assert state is not None
    sa = gw.service._ike_sa(state.ike)
    assert sa is not None
    return sa


@pytest.mark.parametrize("moved_to", ["10.2.3.0/24", "10.2.1.0/25"])
def test_a_peers_rekey_to_other_selectors_is_refused_and_its_subnet_stays_claimed(
        moved_to: str, caplog: pytest.LogCaptureFixture) -> None:
    """Client A holds 10.2.1.0/24 of a wide remote_ts and rekeys its Child SA proposing ``moved_to``
    (another subnet, or half of its own): TS_UNACCEPTABLE, counted, logged; A keeps its Child SA and
    claim, so B asking for 10.2.1.128/25 is refused, and the SPD holds nothing the claims do not cover."""
    caplog.set_level(logging.INFO, logger="tunsec")

    async def body() -> None:
        gw = TsGateway(2, mobike=False, clients=(Client("a.example", "10.2.1.0/24"),
                                                 Client("b.example", "10.2.1.128/25")), remote_ts=WIDE)
        await gw.start()
        gw.connect(A)
        await gw.settle()
        before = gw.child_of(A)
        a_sa = gw.site_sa(A)
        (child,) = a_sa.children
        child.local_ts = (Ts.parse(moved_to),)   # A's engine proposes these in its rekey
        a_sa.rekey_child(child.unique_id)
        await gw.settle()
        assert [e.reason for e in refusals(gw, A)] == ["TS_UNACCEPTABLE"]
        assert gw.child_of(A) is before and before is not None and before.remote_ts == (Ts.parse("10.2.1.0/24"),)
        assert [c.spi_in for c in gateway_sa(gw, A).children] == [before.spi_in]
        assert gw.service.events.rekey_ts_refused[("gw", "net")] == 1
        (metric,) = [f for f in event_families(gw.service.events, 0) if f.name == "tunsec_child_sa_rekey_ts_refused"]
        assert [(s.labels, s.value) for s in metric.samples] == [({"connection": "gw", "child": "net"}, 1.0)]
        assert uncovered(gw) == []
        gw.connect(B)
        await gw.settle()
        assert gw.child_of(B) is None and [e.reason for e in refusals(gw, B)] == ["TS_UNACCEPTABLE"]
        assert reaches(gw, "10.2.1.200") == A and reaches(gw, "10.2.3.7") is None
        assert uncovered(gw) == []
    run(body())
    (line,) = [r.getMessage() for r in caplog.records if "rekey of Child SA" in r.getMessage()]
    assert moved_to in line and "10.2.1.0/24" in line and "TS_UNACCEPTABLE" in line


def test_a_spokes_answer_narrowing_our_rekey_is_refused_and_its_half_deleted(
        caplog: pytest.LogCaptureFixture) -> None:
    """The hub rekeys spoke A's Child SA (10.2.1.0/24 of a wide remote_ts); A answers with
    10.2.1.0/25, within what we proposed: refused, the new Child SA A installed is deleted, counted
    and logged; the old one stays with its claim, so spoke B (10.2.1.128/25) gets no Child SA."""
    caplog.set_level(logging.INFO, logger="tunsec")

    async def body() -> None:
        h = Hub(2, mobike=False, spokes=(Spoke("a.example", (Net("net", WIDE, "10.2.1.0/24"),)),
                                         Spoke("b.example", (Net("net", WIDE, "10.2.1.128/25"),))))
        await h.start()
        h.service.initiate("spoke0", "net")
        await h.settle()
        (theirs,) = h.site_sa(A).children
        # A narrows its answer: its engine's record of the Child SA and its config say 10.2.1.0/25
        half = (Ts.parse("10.2.1.0/25"),)
        theirs.local_ts = half
        theirs.config = dataclasses.replace(theirs.config, local_ts=half)
        sa = h.hub_sa(A)
        (ours,) = sa.children
        h.service.spi_pool.with_spi(functools.partial(sa.rekey_child, ours.unique_id))
        h.service._pump()
        await h.settle()
        assert [c.spi_in for c in h.hub_sa(A).children] == [ours.spi_in]
        assert [c.spi_in for c in h.site_sa(A).children] == [theirs.spi_in]   # its new half deleted
        (state,) = h.children_of(A)
        assert state.remote_ts == (Ts.parse("10.2.1.0/24"),)
        assert h.service.events.rekey_ts_refused[("spoke0", "net")] == 1
        assert "Child SA rekeys refused, their selectors not the old Child SA's: spoke0/net 1" in \
            (await status_text(h)).splitlines()
        assert uncovered(h) == []
        h.service.initiate("spoke1", "net")
        await h.settle()
        # A's claim keeps 10.2.1.0/24 out of what we offer B (exchanges/child.py outside_others_claims),
        # which B, whose only subnet lies in it, refuses: nothing installed on either side
        assert h.children_of(B) == [] and h.site_sa(B).children == []
        assert hub_reaches(h, "10.2.1.200") == A
        assert uncovered(h) == []
    run(body())
    (line,) = [r.getMessage() for r in caplog.records if "our rekey of Child SA" in r.getMessage()]
    assert "10.2.1.0/25" in line and "10.2.1.0/24" in line and "spoke0" in line


def test_a_rekey_the_engine_let_through_with_other_selectors_gets_a_lineage_of_its_own(
        caplog: pytest.LogCaptureFixture) -> None:
    """The service's backstop: the gateway's engine holds a wrong record of A's Child SA (10.2.3.0/24,
    not the 10.2.1.0/24 the service booked) and so accepts A's rekey to 10.2.3.0/24.  The new Child SA
    does not join the old one's lineage: a reqid and policies of its own, counted, logged; once A
    deletes the old one its policies go with it, and nothing the claims do not cover is left."""
    caplog.set_level(logging.INFO, logger="tunsec")

    async def body() -> None:
        gw = TsGateway(1, mobike=False, clients=(Client("a.example", "10.2.1.0/24"),), remote_ts=WIDE)
        await gw.start()
        gw.connect(A)
        await gw.settle()
        before = gw.child_of(A)
        assert before is not None
        moved = (Ts.parse("10.2.3.0/24"),)
        (record,) = gateway_sa(gw, A).children
        record.remote_ts = moved
        a_sa = gw.site_sa(A)
        (child,) = a_sa.children
        child.local_ts = moved
        a_sa.rekey_child(child.unique_id)
        await gw.settle()
        after = gw.child_of(A)
        assert after is not None and after is not before and after.remote_ts == moved
        assert after.reqid != before.reqid and before.handle not in gw.service.children   # A deleted the old one
        assert {p.reqid for p in gw.worker.dp.policies() if p.reqid} == {after.reqid}
        assert gw.service.events.rekey_ts_refused[("gw", "net")] == 1
        assert not refusals(gw, A)
        assert uncovered(gw) == []
        assert reaches(gw, "10.2.3.7") == A and reaches(gw, "10.2.1.7") is None
    run(body())
    (line,) = [r.getMessage() for r in caplog.records if "rekeyed to other selectors" in r.getMessage()]
    assert "10.2.3.0/24" in line and "a.example" in line


@pytest.mark.parametrize(("client", "remote_ts"), [(Client("rw.example", "dynamic", vips=True), "dynamic"),
                                                   (Client("rw.example", "0.0.0.0/0"), "0.0.0.0/0")],
                         ids=["leased address", "narrowed at creation"])
def test_a_road_warriors_rekeys_keep_their_selectors_and_lineage_from_either_side(client: Client,
                                                                                 remote_ts: str) -> None:
    """On a pool connection: a client's Child SA for its leased address (both sides' selectors
    ``dynamic``), or for what its 0.0.0.0/0 was narrowed to at creation (0.0.0.0/0 without the pool),
    is rekeyed by the client and then by the gateway: both installed on the same reqid, with the
    same selectors, nothing refused or counted."""
    async def body() -> None:
        gw = TsGateway(1, mobike=False, clients=(client,), remote_ts=remote_ts, pools=True)
        await gw.start()
        gw.connect(0)
        await gw.settle()
        first = gw.child_of(0)
        assert first is not None
        prev = first
        for side in ("client", "gateway"):
            sa = gw.site_sa(0) if side == "client" else gateway_sa(gw, 0)
            (child,) = sa.children
            if side == "client":
                sa.rekey_child(child.unique_id)
            else:
                gw.service.spi_pool.with_spi(functools.partial(sa.rekey_child, child.unique_id))
                gw.service._pump()
            await gw.settle()
            now = gw.child_of(0)
            assert now is not None and now.spi_in != prev.spi_in and len(gw.children_of(0)) == 1, side
            prev = now
            assert (now.remote_ts, now.local_ts, now.reqid) == (first.remote_ts, first.local_ts, first.reqid), side
        assert not any(isinstance(e, NegotiationFailed) for e in gw.site_events[0])
        assert gw.service.events.child_rekeys[("gw", "net")] == 2
        assert not gw.service.events.rekey_ts_refused
        assert uncovered(gw) == []
    run(body())


def test_a_peer_that_keeps_asking_for_refused_rekeys_does_not_fill_the_log(
        caplog: pytest.LogCaptureFixture) -> None:
    """Client A asks 20 times to rekey its Child SA to another subnet: each refused (TS_UNACCEPTABLE)
    and counted, but 5 lines a minute are logged (the service's refusals.refused, a fake clock); the
    first line of the next minute says how many were held back (5 a minute of this peer's: the
    limit is per peer, refusal_log.py)."""
    caplog.set_level(logging.INFO, logger="tunsec")
    clock = [0.0]

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if "rekey of Child SA" in r.getMessage()]

    async def body() -> None:
        gw = TsGateway(1, mobike=False, clients=(Client("a.example", "10.2.1.0/24"),), remote_ts=WIDE)
        await gw.start()
        gw.service.refusals.refused = PeerLogLimiter(burst=5, period=60.0, clock=lambda: clock[0])
        gw.connect(A)
        await gw.settle()
        a_sa = gw.site_sa(A)
        (child,) = a_sa.children
        child.local_ts = (Ts.parse("10.2.3.0/24"),)
        for _ in range(20):
            a_sa.rekey_child(child.unique_id)
            await gw.settle()
        assert [e.reason for e in refusals(gw, A)] == ["TS_UNACCEPTABLE"] * 20
        assert gw.service.events.rekey_ts_refused[("gw", "net")] == 20
        assert len(lines()) == 5
        clock[0] += 60.0
        a_sa.rekey_child(child.unique_id)
        await gw.settle()
        assert gw.service.events.rekey_ts_refused[("gw", "net")] == 21
    run(body())
    assert len(lines()) == 6 and lines()[-1].endswith("(15 more like it suppressed)"), lines()[-1]
