"""Review revchild F2: the new IKE SPI of an IKE SA rekey is checked against the endpoint's IKE SAs and
the SPIs other rekeys in flight reserved (ike/spi_book.py).

Before the fix, IkeEndpoint._new_sa redrew a clashing SPI but the successor of a rekey (its SPI drawn in
rekey_ike as responder or in RekeyIkeTask as initiator) was registered blindly: it replaced the other
IKE SA's entry, whose datagrams then went to the successor (ICV failure) until its peer declared it
dead.  Clients behind one public address share the tag half of the SPI (spi_tag.py), so a clash is one
in 2^32 per pair, and a peer chooses how often it rekeys.  The clash is forced here: new_ike_spi
returns the other IKE SA's SPI, as rng would one time in 2^32 (two IKE SAs of A with B standing for two
clients behind one address)."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from test_engine_more import A, B, cfg, only

from tunsec.ike.constants import ExchangeType
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaDown, IkeSaDown, IkeSaRekeyed
from tunsec.ike.exchanges import rekey_ike
from tunsec.ike.message import decode_header
from tunsec.ike.sa import IkeSa, State
from tunsec.ike.spi_book import IkeSpiBook
from tunsec.ike.state import IkeSaState
from tunsec.ike.testing import EPOCH, Network, Sent

PROPS = "aes256gcm16-prfsha256-curve25519"


def _two_sas() -> tuple[Network, IkeEndpoint, IkeEndpoint, IkeSa, IkeSa]:
    """A and B with two IKE SAs (A initiated both); A's two."""
    net = Network()
    a = net.add(A, IkeEndpoint([cfg(True, PROPS)], random.Random(1).randbytes, wall_clock=lambda: EPOCH))
    b = net.add(B, IkeEndpoint([cfg(False, PROPS)], random.Random(2).randbytes, wall_clock=lambda: EPOCH))
    first = a.initiate("conn", "net", net.now)
    net.run()
    second = a.initiate("conn", "web", net.now)
    net.run()
    return net, a, b, first, second


def _responder_sa(b: IkeEndpoint, a_sa: IkeSa) -> IkeSa:
    (sa,) = [s for s in b.sas if s.spi_i == a_sa.spi_i and s.state is State.ESTABLISHED]
    return sa


def _forced(first_draw: bytes, for_sa: IkeSa, drawn: list[bytes]) -> Callable[[IkeSaState], bytes]:
    """new_ike_spi, but B's first draw for ``for_sa``'s rekey is ``first_draw``; later ones are real."""
    real = rekey_ike.new_ike_spi

    def new_ike_spi(st: IkeSaState) -> bytes:
        ours = st.remote_addr[0] == A and for_sa.local_spi == (st.spi_i if st.is_initiator else st.spi_r)
        spi = first_draw if ours and not drawn else real(st)
        if ours:
            drawn.append(spi)
        return spi

    return new_ike_spi


@pytest.mark.parametrize("side", ["responder", "initiator"])
def test_an_ike_sa_rekey_never_takes_another_ike_sas_spi(side: str, monkeypatch: pytest.MonkeyPatch) -> None:
    net, a, b, first, second = _two_sas()
    victim, rekeyed = _responder_sa(b, first), _responder_sa(b, second)
    drawn: list[bytes] = []
    monkeypatch.setattr(rekey_ike, "new_ike_spi", _forced(victim.local_spi, rekeyed, drawn))
    if side == "responder":
        second.rekey()          # A rekeys: B answers with the clashing SPI
        a.collect(net.now)
    else:
        rekeyed.rekey()         # B rekeys: B proposes the clashing SPI
        b.collect(net.now)
    net.run()
    assert drawn[0] == victim.local_spi and len(drawn) == 2   # the clash was drawn, and drawn again
    assert b.sa_by_spi(victim.local_spi) is victim, "another IKE SA's rekey took over this IKE SA's SPI on B"
    assert victim.state is State.ESTABLISHED
    assert rekeyed.heir is not None and rekeyed.heir.local_spi == drawn[1]
    assert b.sa_by_spi(drawn[1]) is rekeyed.heir
    assert b.spi_book.redrawn == 1 and len(b.spi_book) == 0


def test_after_the_clash_the_other_ike_sa_still_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The consequence: the first IKE SA's peer (standing for another client) got no answer from B
    any more (its requests reached the successor, whose keys differ) and declared B dead."""
    net, a, b, first, second = _two_sas()
    victim, rekeyed = _responder_sa(b, first), _responder_sa(b, second)
    monkeypatch.setattr(rekey_ike, "new_ike_spi", _forced(victim.local_spi, rekeyed, []))
    second.rekey()
    a.collect(net.now)
    net.run(until=net.now + 1)
    first.send_liveness()
    a.collect(net.now)
    net.run(until=net.now + 300)   # A's retransmissions of the liveness check run out well within this
    assert first.state is State.ESTABLISHED, f"A's first IKE SA is {first.state} after B's SPI clash"


def test_an_spi_reserved_by_a_rekey_in_flight_is_not_offered_to_another(monkeypatch: pytest.MonkeyPatch) -> None:
    """B's own rekey of one IKE SA is out (its new SPI routed nowhere yet) when A rekeys the other
    one: B's answer must not offer the SPI its request holds, or one of the two successors would be
    left without its SPI."""
    net, a, b, first, second = _two_sas()
    mine, answering = _responder_sa(b, first), _responder_sa(b, second)
    held: list[Sent] = []

    def hold(sent: Sent) -> bool:   # B's rekey request waits: its SPI stays reserved, not routed
        if sent.src[0] == B and decode_header(sent.data).exchange == ExchangeType.CREATE_CHILD_SA:
            held.append(sent)
            return True
        return False

    net.drop = hold
    mine.rekey()
    b.collect(net.now)
    net.run(until=net.now + 0.1)
    assert held and len(b.spi_book) == 1
    net.drop = None
    reserved = mine._pending.task._spi   # type: ignore[union-attr]  # B's request holds it
    drawn: list[bytes] = []
    monkeypatch.setattr(rekey_ike, "new_ike_spi", _forced(reserved, answering, drawn))
    second.rekey()
    a.collect(net.now)
    net.run()
    assert drawn[0] == reserved and len(drawn) == 2, "B offered the SPI its own rekey in flight holds"
    assert answering.heir is not None and answering.heir.local_spi == drawn[1] != reserved
    assert mine.heir is not None and mine.heir.local_spi == reserved   # B's own rekey went through (retransmitted)
    assert b.sa_by_spi(reserved) is mine.heir and b.sa_by_spi(drawn[1]) is answering.heir
    assert len(b.spi_book) == 0


def test_a_successor_whose_spi_is_taken_is_dropped_not_routed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The last line (a draw is checked, so only a bug gets here): the endpoint finds the successor's
    SPI taken; the successor is dropped with its Child SAs (counted), the IKE SA that has the SPI stays."""
    net, a, b, first, second = _two_sas()
    victim, rekeyed = _responder_sa(b, first), _responder_sa(b, second)
    monkeypatch.setattr(IkeSpiBook, "taken", lambda self, spi: False)   # the check that should have redrawn
    monkeypatch.setattr(rekey_ike, "new_ike_spi", _forced(victim.local_spi, rekeyed, []))
    children = {c.spi_in for c in rekeyed.children}
    second.rekey()
    a.collect(net.now)
    net.run(until=net.now + 1)
    assert b.sa_by_spi(victim.local_spi) is victim and victim.state is State.ESTABLISHED
    assert rekeyed.heir is not None and rekeyed.heir.is_closed
    assert b.spi_book.refused == 1
    events = net.take(B)
    assert only(events, IkeSaRekeyed)
    assert only(events, IkeSaDown)
    assert {d.spi_in for d in only(events, ChildSaDown)} == children


def test_reservations_end_when_a_rekey_fails_or_its_sa_closes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reservation never outlives its rekey: refused by the peer, or the IKE SA closing with the
    request out, leaves nothing reserved (a peer that keeps refusing must not grow the book)."""
    net = Network()
    a = net.add(A, IkeEndpoint([cfg(True, PROPS)], random.Random(1).randbytes, wall_clock=lambda: EPOCH))
    net.add(B, IkeEndpoint([cfg(False, PROPS)], random.Random(2).randbytes, wall_clock=lambda: EPOCH))
    sa = a.initiate("conn", "net", net.now)
    net.run()
    assert sa.state is State.ESTABLISHED
    monkeypatch.setattr(rekey_ike, "select_proposal", lambda *_, **__: None)   # B: NO_PROPOSAL_CHOSEN
    for _ in range(3):
        sa.rekey()
        a.collect(net.now)
        assert len(a.spi_book) == 1
        net.run(until=net.now + 1)
        assert sa.state is State.ESTABLISHED and sa.heir is None
        assert len(a.spi_book) == 0, "a refused rekey left its SPI reserved"
    net.drop = lambda sent: True
    sa.rekey()
    a.collect(net.now)
    assert len(a.spi_book) == 1
    net.run(until=net.now + 600)   # no answer: the IKE SA gives up on the peer and closes
    assert sa.is_closed and len(a.spi_book) == 0


def test_an_ike_auth_redirect_draws_its_new_spi_through_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """The other SA handed to the endpoint as a successor: the new IKE SA an IKE_AUTH redirect starts.
    Its SPI is drawn like a rekey's (reserved, another if taken): here the first draw is the SPI of an
    IKE SA the client holds (with another gateway, standing for any), and it is drawn again."""
    from test_engine_redirect import CLIENT, GW_B, three

    from tunsec.ike import sa_redirect, spi_tag

    net, _, _ = three({"redirect_to": GW_B, "redirect_on": "auth"})
    client = net.nodes[CLIENT]
    other = client.initiate("rw", "net", 0.0)   # to A as well; its IKE SA's SPI is the clash below
    first = client.initiate("rw", "net", 0.0)
    real = spi_tag.make_ike_spi
    drawn: list[bytes] = []

    def make_ike_spi(*args: object) -> bytes:
        spi = other.local_spi if not drawn else real(*args)   # type: ignore[arg-type]
        drawn.append(spi)
        return spi

    monkeypatch.setattr(sa_redirect, "make_ike_spi", make_ike_spi)
    net.run(until=5.0)
    assert drawn[0] == other.local_spi and len(drawn) >= 2
    assert first.is_closed
    assert client.sa_by_spi(other.local_spi) is other or other.is_closed
    new = [s for s in client.sas if s.remote_addr[0] == GW_B]
    assert new and all(s.local_spi != other.local_spi for s in new) and client.spi_book.redrawn >= 1
