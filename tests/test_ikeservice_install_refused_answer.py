"""A Child SA the peer asked for whose install fails here while our answer is still held (the barrier)
is refused in that answer (TEMPORARY_FAILURE), not answered and then deleted (review revrekey F1, the
responder's half: ike/child_refusal.py, services/ike/install_failed.py).

Two real IkeServices with the in-process worker (test_ikeservice_rekey.Pair); B's worker refuses one
request of the install once.  For a rekey, A used to delete the old Child SA on B's success and lose the
new one to B's DELETE: the child was gone on both sides.  Now both keep the old Child SA, no DELETE is
sent, and A's rekey (or new Child SA), tried again, succeeds once B's worker takes it."""

from __future__ import annotations

import pytest
from test_ikeservice_install_failed import TwoChildPair, ike_up, refuse_next
from test_ikeservice_install_failed_answer_lost import _refuse_next_update, retry_rekey
from test_ikeservice_peers import run
from test_ikeservice_rekey import Pair, established

from tunsec.dataplane.pipe import Direction
from tunsec.ike.constants import ExchangeType
from tunsec.ike.identity import Identity
from tunsec.ike.message import decode_header
from tunsec.ike.ts import Ts
from tunsec.policy.claims import Peer


def _b_sent(pair: Pair, mark: int) -> list[tuple[int, bool]]:
    """(exchange, is_response) of each IKE message B sent since timeline entry ``mark``."""
    return [(decode_header(m).exchange, decode_header(m).is_response)
            for kind, side, m in pair.timeline[mark:] if kind == "send" and side == "b"]


def test_a_rekey_whose_install_fails_at_the_responder_is_refused_and_both_keep_the_old_child_sa() -> None:
    async def body() -> None:
        pair = await established()
        before = {(c.spi_in, c.spi_out) for c in pair.svc["a"].children.values()}
        (old_in, old_out), = before
        _refuse_next_update(pair, "b")
        mark = len(pair.timeline)
        pair.rekey("a")
        await pair.settle()
        assert _b_sent(pair, mark) == [(ExchangeType.CREATE_CHILD_SA, True)]   # the refusal, and no DELETE
        a = {(c.spi_in, c.spi_out) for c in pair.svc["a"].children.values()}
        b = {(c.spi_out, c.spi_in) for c in pair.svc["b"].children.values()}
        assert a == b == before, (a, b, before)
        assert [(c.spi_in, c.spi_out) for c in ike_up(pair, "a").children] == [(old_in, old_out)]
        (old_b,) = ike_up(pair, "b").children
        assert not old_b.rekeyed_by_peer and not old_b.successor_deleted   # A may rekey it again
        assert pair.sa_spis("b", Direction.IN) == {old_out} and pair.sa_spis("b", Direction.OUT) == {old_in}
        assert pair.svc["b"].events.install_failed == {("tun", "net"): 1}
        assert pair.failures == []                          # traffic passed both ways all along
        retry_rekey(pair, "a")
        await pair.settle()
        a = {(c.spi_in, c.spi_out) for c in pair.svc["a"].children.values()}
        b = {(c.spi_out, c.spi_in) for c in pair.svc["b"].children.values()}
        assert a == b and len(a) == 1 and a != before, (a, b, before)
        assert pair.failures == []
    run(body())


@pytest.mark.parametrize("refused", ["update", "add", "spd_add"])
def test_a_new_child_sa_whose_install_fails_at_the_responder_is_refused_in_its_answer(refused: str) -> None:
    async def body() -> None:
        pair = TwoChildPair()
        await pair.start()
        pair.svc["a"].initiate("tun", "net")
        await pair.settle()
        policies = {p.id for p in pair.workers["b"].dp.policies()}
        refuse_next(pair.workers["b"].dp, refused)
        mark = len(pair.timeline)
        pair.svc["a"].initiate("tun", "more")
        await pair.settle()
        assert _b_sent(pair, mark) == [(ExchangeType.CREATE_CHILD_SA, True)]   # the refusal, and no DELETE
        for side in ("a", "b"):
            assert [c.name for c in ike_up(pair, side).children] == ["net"]
            assert [c.child for c in pair.svc[side].children.values()] == ["net"]
        net_b = pair.child("b")
        assert pair.sa_spis("b", Direction.IN) == {net_b.spi_in}
        assert {p.id for p in pair.workers["b"].dp.policies()} == policies
        assert pair.svc["b"].events.install_failed == {("tun", "more"): 1}
        retry_rekey(pair, "a")   # A asks for "more" again (a refusal for now: 2-10 s later)
        await pair.settle()
        for side in ("a", "b"):
            assert sorted(c.name for c in ike_up(pair, side).children) == ["more", "net"]
        assert pair.traffic("a", 3) == 3 and pair.traffic("b", 3) == 3
    run(body())



def test_a_child_sa_the_claims_backstop_refuses_is_refused_in_its_answer() -> None:
    """The claims backstop (installs._child_registered: another peer's Child SA booked the remote
    selectors in the same pump, after the engine's check) refuses the peer's new Child SA in the
    answer, which has not left yet (collected, not flushed), instead of answering and deleting it."""
    async def body() -> None:
        pair = await established()
        pair.probing = False
        gw = pair.svc["b"]
        before = {(c.spi_in, c.spi_out) for c in pair.svc["a"].children.values()}
        pair.ike("a").initiate("net")                      # a second Child SA of child "net"
        pair.svc["a"]._pump()
        (request,) = [d for s, d, _ in pair.wire if s == "a"]
        pair.wire.clear()
        mark = len(pair.timeline)
        gw.receive(request, (pair.ip("a"), 4500), (pair.ip("b"), 4500))   # answered: a ChildSaUp waits
        # another peer's Child SA over the same remote selectors, booked in this pump before it
        gw.ts_claims.add(10**6, "tun", Peer(Identity.parse("c.example"), "psk tun"), [Ts.parse("10.1.0.0/16")],
                         [Ts.parse("10.2.0.0/16")])
        gw._pump()
        await pair.settle()
        assert _b_sent(pair, mark) == [(ExchangeType.CREATE_CHILD_SA, True)]   # the refusal, and no DELETE
        assert gw.events.ts_claims_refused == {("tun", "net"): 1}
        a = {(c.spi_in, c.spi_out) for c in pair.svc["a"].children.values()}
        b = {(c.spi_out, c.spi_in) for c in gw.children.values()}
        assert a == b == before, (a, b, before)
        assert [(c.spi_in, c.spi_out) for c in pair.ike("a").children] == list(before)
    run(body())
