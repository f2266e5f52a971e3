"""IKE_AUTH's Child SA whose install fails at the responder while its answer is held by the barrier is
refused in that IKE_AUTH answer, the IKE SA kept (fixauthchild; ike/child_refusal.py,
services/ike/install_failed.py).  Before, the answer carried SA/TSi/TSr and a DELETE followed: the
client saw its Child SA come up and go.

Two real IkeServices with the in-process worker (test_ikeservice_rekey.Pair); B's worker refuses one
request of the IKE_AUTH Child SA's install once: its UPDATE or ADD (NO_PROPOSAL_CHOSEN, as strongSwan's
child_create for a failed SAD install) or an SPDADD (TS_UNACCEPTABLE, its failed SPD install)."""

from __future__ import annotations

import logging

import pytest
from test_ikeservice_install_failed import ike_up, refuse_next
from test_ikeservice_peers import run
from test_ikeservice_rekey import Pair

from tunsec.dataplane.pipe import Direction
from tunsec.ike.constants import ExchangeType
from tunsec.ike.message import decode_header


def _sent(pair: Pair, side: str) -> list[tuple[int, bool]]:
    """(exchange, is_response) of each IKE message ``side`` sent."""
    return [(decode_header(m).exchange, decode_header(m).is_response)
            for kind, s, m in pair.timeline if kind == "send" and s == side]


@pytest.mark.parametrize(("refused", "error"), [("update", "NO_PROPOSAL_CHOSEN"), ("add", "NO_PROPOSAL_CHOSEN"),
                                                ("spd_add", "TS_UNACCEPTABLE")])
def test_an_ike_auth_child_sa_whose_install_fails_is_refused_in_the_answer_and_the_ike_sa_stays(
        refused: str, error: str, caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        pair = Pair()
        await pair.start()
        refuse_next(pair.workers["b"].dp, refused)
        with caplog.at_level(logging.INFO, logger="tunsec"):
            pair.svc["a"].initiate("tun", "net")
            await pair.settle()
        # B answered IKE_SA_INIT and IKE_AUTH, and sent nothing else: no DELETE of the Child SA
        assert _sent(pair, "b") == [(ExchangeType.IKE_SA_INIT, True), (ExchangeType.IKE_AUTH, True)]
        assert not [t for t in _sent(pair, "a") if t[0] == ExchangeType.INFORMATIONAL]
        for side in ("a", "b"):
            assert ike_up(pair, side).children == []          # the IKE SA up, without the Child SA
            assert pair.svc[side].children == {}
            assert pair.sa_spis(side, Direction.IN) == set() and pair.sa_spis(side, Direction.OUT) == set()
        assert list(pair.workers["b"].dp.policies()) == []
        assert pair.svc["b"].events.install_failed == {("tun", "net"): 1}
        assert f"refused in our answer ({error})" in caplog.text
        assert f"tun child net: {error}" in caplog.text      # A's: the Child SA refused in IKE_AUTH
        assert "established" in {sa.state.value for sa in pair.svc["a"].endpoint.sas}
        # asked for again, with B's worker taking it now: up in the same IKE SA
        pair.svc["a"].initiate("tun", "net")
        await pair.settle()
        for side in ("a", "b"):
            assert [c.name for c in ike_up(pair, side).children] == ["net"]
        assert pair.traffic("a", 3) == 3 and pair.traffic("b", 3) == 3
    run(body())


def test_an_ike_auth_child_sa_the_worker_took_leaves_nothing_kept_for_a_refusal() -> None:
    """What the engine keeps to rebuild the IKE_AUTH answer goes once the install said OK (a gateway
    holds thousands of IKE SAs whose clients may send nothing for long)."""
    async def body() -> None:
        pair = Pair()
        await pair.start()
        pair.svc["a"].initiate("tun", "net")
        await pair.settle()
        sa_b = ike_up(pair, "b")
        (child,) = sa_b.children
        assert sa_b._st.auth_answer is None and not child.unconfirmed
        assert sa_b.answer_of(child.unique_id) is None
    run(body())
