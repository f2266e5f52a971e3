"""Review revlan F1: LAN traffic to a trap policy whose peer refuses us starts a new IKE SA every second.

A trap child's ACQUIRE starts a negotiation unless one is under way (services/ike/traps.py
acquire, _under_way); once it has failed for good, the next ACQUIRE starts the next one at once.
The fast path raises one ACQUIRE per trap policy a second for as long as packets hit it (dp.c
acquire, rate_ok 1 s).  So a peer that refuses our IKE_SA_INIT (NO_PROPOSAL_CHOSEN here: a
changed proposal on its side; an AUTHENTICATION_FAILED or a refused child behaves alike) is sent a
fresh IKE_SA_INIT, with a fresh key exchange on our side and its, every second, for as long as any
host behind the gateway keeps sending towards it (one ping a second is enough), for ever: the
connection's keyingtries do not apply to trap initiations.  strongSwan on Linux XFRM asks at most
once per larval state's life (xfrm_acq_expires, which charon sets to 165 s) for one policy.

Two real IkeServices with the in-process worker and C fast path (test_ikeservice_traps.TrapPair);
the packets are A's LAN traffic through A's real fast path (its ACQUIREs drained as the daemon's
event fd does), the limiter's clock stepped one second per packet (ts_test_set_clock).
"""

from __future__ import annotations

import asyncio
import dataclasses

from test_ikeservice_traps import TrapPair, ccsa_requests

from tunsec.dataplane.fastpath import lib
from tunsec.ike.config import IkeConfig, child_config
from tunsec.ike.constants import ExchangeType
from tunsec.ike.message import decode_header
from tunsec.ike.proposals import parse_proposals

SECOND = 1_000_000_000
T0 = 1_000 * SECOND


class RefusingPair(TrapPair):
    """B accepts only another IKE proposal: it answers A's IKE_SA_INIT NO_PROPOSAL_CHOSEN."""

    def ike_config(self, side: str) -> IkeConfig:
        cfg = super().ike_config(side)
        if side == "b":
            cfg = dataclasses.replace(cfg, proposals=parse_proposals("aes256gcm16-prfsha384-ecp384"))
        return cfg


def ike_sa_init_requests(pair: TrapPair) -> int:
    """A's IKE_SA_INIT requests on the wire so far (as test_ikeservice_traps.ccsa_requests counts)."""
    sent = (data for kind, side, data in pair.timeline if kind == "send" and side == "a" and isinstance(data, bytes))
    headers = (decode_header(d[4:] if d[:4] == bytes(4) else d) for d in sent)
    return sum(h.exchange == ExchangeType.IKE_SA_INIT and not h.is_response for h in headers)


def test_lan_traffic_to_a_refusing_trap_peer_does_not_start_an_ike_sa_every_second() -> None:
    async def body() -> None:
        pair = RefusingPair()
        await pair.start()
        await pair.configure("a", "trap")          # keyingtries = 1
        dp = pair.workers["a"].dp
        for second in range(20):                   # one LAN packet a second, for 20 s
            lib.ts_test_set_clock(dp._dp, T0 + second * SECOND)
            assert pair.traffic("a", 1, drain_events=True) == 0
            await pair.settle()
        sent = ike_sa_init_requests(pair)
        assert not [sa for sa in pair.svc["a"].endpoint.sas if sa.state.value == "established"]
        # one negotiation, and at most one more after it failed, in 20 s (strongSwan: one per 165 s)
        assert sent <= 2, f"{sent} IKE_SA_INITs (each a new key exchange) in 20 s of LAN traffic"

    asyncio.run(body())


class ChildRefusingPair(TrapPair):
    """B's child is for another network: it refuses A's child (TS_UNACCEPTABLE); the IKE SA stays up."""

    def ike_config(self, side: str) -> IkeConfig:
        cfg = super().ike_config(side)
        if side == "b":
            cfg = dataclasses.replace(cfg, children=(child_config("net", "10.3.0.0/16", "10.1.0.0/16",
                                                                  "aes128gcm16"),))
        return cfg


def test_lan_traffic_to_a_trap_child_the_peer_refuses_does_not_ask_for_it_every_second() -> None:
    """The same with the IKE SA up and the child refused for good (session-09's "Left"): a
    CREATE_CHILD_SA a second, each refused, each logged, for as long as the LAN sends."""
    async def body() -> None:
        pair = ChildRefusingPair()
        await pair.start()
        await pair.configure("a", "trap")
        dp = pair.workers["a"].dp
        for second in range(20):
            lib.ts_test_set_clock(dp._dp, T0 + second * SECOND)
            assert pair.traffic("a", 1, drain_events=True) == 0
            await pair.settle()
        assert len([sa for sa in pair.svc["a"].endpoint.sas if sa.state.value == "established"]) == 1
        asked = ccsa_requests(pair)
        assert asked <= 1, f"{asked} CREATE_CHILD_SAs, each refused, in 20 s of LAN traffic"

    asyncio.run(body())
