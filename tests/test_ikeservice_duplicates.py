"""Two Child SAs of one child config with the same selectors in one IKE SA (both peers asked for it
at once, or ``tunsec initiate`` ran twice): one reqid, one set of policies, as strongSwan has it.

With a lineage (reqid, PROTECT policies) each, the worker matched the older one's policies first
(same priority, added first), so the older carried our traffic; deleting it stopped the traffic
until both peers had removed it (our outbound SA went before its policies, the peer's inbound SA
before our DELETE was answered).  Now the duplicate joins the older one's lineage: the policies send
on the reqid's newest outbound SA, the duplicate takes over the traffic as a rekey does (its
responder waits for the first packet on it), and when either one goes the other carries on.

Two real IkeServices with the in-process worker and C fast path (test_ikeservice_rekey.Pair); every
datagram is followed by a packet each way through both dataplanes (Pair.probe).
"""

from __future__ import annotations

import asyncio

import pytest
from test_ikeservice_peers import ipv4_udp
from test_ikeservice_rekey import Pair, established

from tunsec.dataplane.fastpath import Drop


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def sent_on(pair: Pair, side: str) -> int:
    """The outbound SPI a packet from ``side``'s network leaves on."""
    src, dst = ("10.1.0.5", "10.2.0.7") if side == "a" else ("10.2.0.7", "10.1.0.5")
    esp, _, drop, _ = pair.workers[side].dp.outbound(ipv4_udp(src, dst))
    assert drop is Drop.NONE
    return int.from_bytes(esp[:4], "big")


@pytest.mark.parametrize("gone", ["older", "newer"])
def test_a_duplicate_child_sa_shares_the_reqid_and_traffic_survives_deleting_either(gone: str) -> None:
    async def body() -> None:
        pair = await established()
        pair.first_use = True              # the daemon hands FIRST_USE to the service
        a, b = pair.svc["a"], pair.svc["b"]
        (older,) = a.children.values()
        a.initiate("tun", "net")           # a second "net" with the same selectors, in the same IKE SA
        await pair.settle()
        assert pair.failures == []         # no packet lost on the way
        newer = next(c for c in a.children.values() if c is not older)
        assert (newer.local_ts, newer.remote_ts) == (older.local_ts, older.remote_ts)
        for side in (a, b):
            assert len({c.reqid for c in side.children.values()}) == 1
        assert [p.reqid for p in pair.workers["a"].dp.policies()] == [older.reqid]    # one set of policies
        assert sent_on(pair, "a") == newer.spi_out and sent_on(pair, "b") == newer.spi_in
        victim, survivor = (older, newer) if gone == "older" else (newer, older)
        pair.ike("a").delete_child(victim.unique_id)
        a._pump()
        await pair.settle()
        assert pair.failures == []         # the traffic went on all along
        assert list(a.children.values()) == [survivor] and len(b.children) == 1
        assert [p.reqid for p in pair.workers["a"].dp.policies()] == [survivor.reqid]
        assert sent_on(pair, "a") == survivor.spi_out
        a.terminate_child("tun", "net")    # the last one takes the policies with it
        pair.probing = False
        await pair.settle()
        assert not pair.workers["a"].dp.policies() and not pair.workers["b"].dp.policies()

    run(body())
