"""``tunsec terminate`` of a connection whose IKE SA has a request of ours in flight (a DPD liveness
check, a Child SA rekey) to a peer that no longer answers, or whose DELETE crosses the peer's own,
starts nothing again (review AF F1, F1b: the request gave up first and was taken for a dead peer,
so dpd_action = start scheduled a new IKE SA after the terminate, for ever with keyingtries = 0;
a crossing DELETE closed the SA as deleted by the peer and close_action = start re-initiated it).
A terminated connection's SA going is neither a dead peer's loss nor the peer's deletion."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest
from test_ikeservice_peers import run
from test_ikeservice_rekey import Pair
from test_ikeservice_terminate_tries import ike_sa_inits

from tunsec.conf.connections import Action, Connection
from tunsec.services.ike import ikesas


@dataclasses.dataclass
class DpdStartPair(Pair):
    """A's child "net" has dpd_action = start, its connection keyingtries = 0 (tried for ever)."""

    def connection(self, side: str, close_action: Action) -> Connection:
        conn = super().connection(side, close_action)
        if side != "a":
            return conn
        kids = tuple(dataclasses.replace(c, dpd_action="start") for c in conn.children)
        return dataclasses.replace(conn, children=kids, keyingtries=0)


@pytest.mark.parametrize("in_flight", ["liveness", "child rekey"])
def test_terminate_with_a_request_in_flight_to_a_dead_peer_starts_nothing(
        monkeypatch: pytest.MonkeyPatch, in_flight: str) -> None:
    monkeypatch.setattr(ikesas, "RETRY_DELAY", 0.0)

    async def body() -> None:
        pair = DpdStartPair()
        await pair.start()
        a = pair.svc["a"]
        a.initiate("tun", "net")
        await pair.settle()
        sa = pair.ike("a")
        inits = ike_sa_inits(pair)
        assert inits == 1
        if in_flight == "liveness":
            sa.send_liveness()
        else:
            sa.rekey_child(next(iter(sa.children)).unique_id)
        a._pump()
        pair.wire.clear()          # B is gone from here on: nothing reaches it
        done = a.terminate("tun")  # the operator: tunnel down, stay down
        assert done.deleted == 1
        at = time.monotonic()
        while not sa.is_closed:    # A's retransmissions run out
            pair.wire.clear()
            at += 30.0
            a.endpoint.handle_timer(at)
            a._pump()
            assert at < time.monotonic() + 3600
        for _ in range(20):
            await asyncio.sleep(0)
        pair.wire.clear()
        assert len(a.tries) == 0, [t.describe() for s in a.tries._of.values() for t in s]
        assert ike_sa_inits(pair) == inits, "a new IKE SA of the terminated connection was started"
        assert a.events.dpd_failures.get("tun", 0) == 0
    run(body())


@dataclasses.dataclass
class CloseStartPair(Pair):
    """A's child "net" has close_action = start."""

    def connection(self, side: str, close_action: Action) -> Connection:
        return super().connection(side, "start" if side == "a" else "none")


def test_terminate_crossing_the_peers_delete_starts_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Review AF F1b: both ends delete the IKE SA at once (the operator's terminate at A, B's own delete):
    A, DELETING, answers B's DELETE and closes with DELETED_BY_PEER, so its close_action = start
    re-initiates the connection the operator just terminated."""
    monkeypatch.setattr(ikesas, "RETRY_DELAY", 0.0)

    async def body() -> None:
        pair = CloseStartPair()
        await pair.start()
        a = pair.svc["a"]
        a.initiate("tun", "net")
        await pair.settle()
        assert ike_sa_inits(pair) == 1
        pair.svc["b"].terminate("tun")   # B's DELETE is on the wire ...
        a.terminate("tun")               # ... when the operator terminates at A
        await pair.settle()
        for _ in range(20):
            await asyncio.sleep(0)
        await pair.settle()
        assert ike_sa_inits(pair) == 1, "a new IKE SA of the terminated connection was started"
    run(body())
