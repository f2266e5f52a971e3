"""Review revops (fifteenth session) of h/opcmd: "net" waits for its re-creation's first try (timer armed, no try
out). The operator initiates "net": it joins the re-creation by sending its own CREATE_CHILD_SA in that IKE SA
(commands._initiate: under_way() is False while the re-creation only waits, so up.initiate(child)). The
operator then runs terminate --child "net": stop() sees sa.creating("net") and only marks the re-creation
stopped, leaving its timer armed. The timer fires before the request's answer is read (_due -> _initiate ->
stopped -> _schedule -> _end): the re-creation ends and with it the only thing that would delete what the
request brings up. The answer comes: "net" is up again, after terminate."""

from __future__ import annotations

from test_ikeservice_install_failed import TwoChildPair, our_rekey_fails
from test_ikeservice_peers import run
from test_ikeservice_rekey import fire_timers

from tunsec.ike.sa import State


def nets(pair: TwoChildPair, side: str) -> int:
    return sum(c.name == "net" for sa in pair.svc[side].endpoint.sas if sa.state is State.ESTABLISHED
               for c in sa.children)


def test_terminate_child_after_a_joined_initiate_whose_request_is_out_keeps_net_down() -> None:
    async def body() -> None:
        pair = TwoChildPair()
        await our_rekey_fails(pair)
        a = pair.svc["a"]
        (pending,) = a._recreating.values()
        assert not pending.trying and pending.timer is not None   # waiting for its first try
        joined = a.initiate("tun", "net")   # its CREATE_CHILD_SA goes out now; not delivered yet
        assert joined is not None
        done = a.terminate_child("tun", "net")
        assert done and "re-creation of CHILD_SA net" in done.message()
        assert joined.done() and joined.result() == "terminated by the operator"
        fire_timers(a)        # the re-creation's first try comes due before the peer's answer is read
        await pair.settle()   # the answer: the operator's request's Child SA comes up
        fire_timers(a)
        await pair.settle()
        assert a._recreating == {}
        assert nets(pair, "a") == 0 and nets(pair, "b") == 0, (
            f"after terminate --child: {nets(pair, 'a')} net on A, {nets(pair, 'b')} on B")
    run(body())
