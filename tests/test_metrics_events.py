"""Rekeys are counted where the IKE service sees them (the counters `tunsec_*_rekeys_total` read).

Two real IkeServices with in-process workers, wired in memory (tests/test_ikeservice_rekey.py)."""

from __future__ import annotations

import asyncio

from test_ikeservice_rekey import established


def test_child_and_ike_rekeys_are_counted_on_both_sides() -> None:
    async def body() -> None:
        pair = await established()
        for side in "ab":
            assert pair.svc[side].events.child_rekeys == {} and pair.svc[side].events.ike_rekeys == {}
        pair.rekey("a")          # a Child SA rekey started by A
        await pair.settle()
        pair.rekey("b")          # and one started by B
        await pair.settle()
        pair.ike("b").rekey()    # an IKE SA rekey
        pair.svc["b"]._pump()
        await pair.settle()
        for side in "ab":
            events = pair.svc[side].events
            assert events.child_rekeys == {("tun", "net"): 2}, side
            assert events.ike_rekeys == {"tun": 1}, side
            assert events.dpd_failures == {}

    asyncio.run(body())
