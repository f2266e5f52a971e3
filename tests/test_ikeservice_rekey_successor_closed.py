"""Review revspis F2 (fixed): IkeService._ike_rekeyed (services/ike/ikesas.py) carried the old IKE SA's ike_up record
to the successor only ``if ... not new.is_closed`` (h/fixspis, for IkeEndpoint._succeed's dropped successor).
But a successor also closes before the service handles IkeSaRekeyed when the peer's DELETE of the new IKE
SA comes in the same pump as the rekey's answer (two datagrams of one socket read: _readable pumps once
per batch).  The old SA's record is popped and dropped, so the successor's IkeSaDown(DELETED_BY_PEER)
finds no record and close_action is not run: with close_action = start the tunnel stays down.  Before
h/fixspis the record was carried (only ``trusted`` was guarded) and close_action ran.

A (close_action = start) rekeys its IKE SA; B answers and deletes the new IKE SA at once.  "apart": A
pumps between the two datagrams (passes on main); "one_read": both go in before A pumps (fails on main)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from test_ikeservice_rekey import A_IP, B_IP, CCSA, INFO, established, run_tasks

from tunsec.ike.message import decode_header


def _take(pair: Any, side: str, exchange: int, response: bool) -> bytes:
    for i, (src, data, _port) in enumerate(pair.wire):
        hdr = decode_header(data)
        if src == side and hdr.exchange == exchange and hdr.is_response == response:
            del pair.wire[i]
            return data
    raise AssertionError(f"nothing from {side} of exchange {exchange} (response {response}) on the wire")


@pytest.mark.parametrize("delivery", ["apart", "one_read"])
def test_peer_deleting_the_new_ike_sa_at_once_still_runs_close_action(delivery: str) -> None:
    async def body() -> None:
        pair = await established(close_action="start")
        pair.probing = False
        a, b = pair.svc["a"], pair.svc["b"]
        a_old = pair.ike("a")
        a_old.rekey()
        a._pump()
        await run_tasks(pair)
        pair.deliver("a", _take(pair, "a", CCSA, False), 4500)   # B answers A's rekey
        await run_tasks(pair)
        b_old = next(sa for sa in b.endpoint.sas if sa.heir is not None)
        b_new = b_old.heir
        assert b_new is not None
        b_new.delete()          # B deletes the new IKE SA at once (its admin terminates it, say)
        b._pump()
        await run_tasks(pair)
        answer, delete = _take(pair, "b", CCSA, True), _take(pair, "b", INFO, False)

        loop = asyncio.get_running_loop()
        later: list[Any] = []
        real = loop.call_later

        def recording(delay: float, callback: Any, *args: Any) -> asyncio.TimerHandle:
            later.append((callback, args))
            return real(delay, callback, *args)

        loop.call_later = recording  # type: ignore[method-assign]
        try:
            a.receive(answer, (B_IP, 4500), (A_IP, 4500))
            if delivery == "apart":
                a._pump()
            a.receive(delete, (B_IP, 4500), (A_IP, 4500))
            a._pump()
            await run_tasks(pair)
        finally:
            loop.call_later = real  # type: ignore[method-assign]
        a_new = a_old.heir
        assert a_new is not None and a_new.is_closed   # the peer deleted A's successor
        restarts = [(t.conn, t.child) for cb, args in later if getattr(cb, "__name__", "") == "_due" for t in args[1:]]
        assert restarts == [("tun", "net")], "close_action = start did not run for the IKE SA the peer deleted"
        assert a.ike_up == {}

    asyncio.run(body())
