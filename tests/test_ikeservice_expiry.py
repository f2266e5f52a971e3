"""An IKE SA whose rekey goes unanswered past its hard lifetime (rekey_time + over_time) is closed
when the rekey gives up, reason EXPIRED (sa_timers.expire); the tunnel must come back once the peer
answers again, as strongSwan reestablishes it (ike_sa.c: retransmit -> reestablish): a start_action
= start child is re-initiated, in either IKE role, and a start_action = trap child's next packet
initiates a new IKE SA.

Two real IkeServices with the in-process worker and C fast path, wired in memory
(test_ikeservice_rekey.Pair).  The expiring side's engine runs on a fake clock: each of its timers
fires in turn (the rekey, its retransmissions, the hard lifetime) while everything it sends is lost.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress

import pytest
from test_ikeservice_peers import ipv4_udp
from test_ikeservice_rekey import Pair, fire_timers

from tunsec.conf.connections import Action
from tunsec.dataplane import pipe
from tunsec.ike.config import IkeConfig
from tunsec.ike.events import DownReason, IkeSaDown
from tunsec.ike.sa import IkeSa
from tunsec.services.ike import ikesas

REKEY_TIME, OVER_TIME = 7.0, 1.0    # the soak's short lifetimes (bench/soak.py)


@dataclasses.dataclass
class ExpiryPair(Pair):
    """Pair whose connections have IKE lifetimes and the given child actions; hands the workers'
    ACQUIREs to the services, as the daemon does for trap policies the IKE service owns."""

    def ike_config(self, side: str) -> IkeConfig:
        """Pair's connection "tun", with IKE lifetimes (child "net" gets its actions from configure)."""
        return dataclasses.replace(super().ike_config(side), rekey_time=REKEY_TIME, over_time=OVER_TIME)

    async def configure(self, side: str, start_action: Action, keyingtries: int = 1) -> None:
        """``side``'s child gets ``start_action`` (as a reload would: a trap child gets its trap
        policies).  Set after the start, where start_action = start would initiate on both sides."""
        svc = self.svc[side]
        conn = svc.connections["tun"]
        svc.connections["tun"] = dataclasses.replace(
            conn, keyingtries=keyingtries,
            children=(dataclasses.replace(conn.children[0], start_action=start_action),))
        await svc.install_traps()

    def worker_event(self, side: str, data: bytes) -> None:
        super().worker_event(side, data)
        msg = pipe.decode(data)
        if isinstance(msg, pipe.Acquire) and self.svc[side].owns_policy(msg.policy_id):
            self.svc[side].acquire(msg.policy_id)


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def expire_unanswered(pair: Pair, side: str, sa: IkeSa | None = None,
                      reason: DownReason = DownReason.EXPIRED) -> IkeSa:
    """Fire ``side``'s IKE SA timers on a fake clock, losing all it sends, until the SA is closed."""
    svc = pair.svc[side]
    sa = sa or pair.ike(side)
    downs: list[DownReason] = []
    sa_watch = svc._event

    def watch(s: IkeSa, ev: object) -> None:     # why it closed: the hard lifetime (EXPIRED), not a dead peer
        if s is sa and isinstance(ev, IkeSaDown):
            downs.append(ev.reason)
        sa_watch(s, ev)
    svc._event = watch  # type: ignore[method-assign]
    for _ in range(50):
        when = sa.get_timer()
        assert when is not None, "an IKE SA with a rekey_time has timers"
        sa.handle_timer(when)
        svc._pump()
        pair.wire = [w for w in pair.wire if w[0] != side]   # lost on the way
        if sa.is_closed:
            break
    svc._event = sa_watch  # type: ignore[method-assign]
    assert sa.is_closed and sa.heir is None     # no rekey completed
    assert downs == ([reason] if reason is DownReason.EXPIRED else []), downs    # never up: no IkeSaDown
    return sa


async def recover(pair: Pair) -> None:
    """The peer answers again: the services' re-initiations run (no delay, see the fixture) and all
    datagrams arrive."""
    await pair.settle()
    for svc in pair.svc.values():
        fire_timers(svc)
    await pair.settle()


@pytest.fixture(autouse=True)
def no_reestablish_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ikesas, "RETRY_DELAY", 0.0)


def assert_tunnel(pair: Pair, expired: IkeSa, side: str) -> None:
    """A new IKE SA of ``side`` carries the child, and packets pass both ways on it."""
    fresh = [sa for sa in pair.svc[side].endpoint.sas if sa is not expired and sa.state.value == "established"]
    assert fresh and any(sa.children for sa in fresh), "the tunnel did not come back"
    pair.probing = True
    pair.probe("recovered")
    assert pair.failures == []


@pytest.mark.parametrize("side", ["a", "b"])     # a is the IKE initiator, b the responder
def test_a_start_child_comes_back_after_its_ike_sa_expired_unrekeyed(side: str) -> None:
    async def body() -> None:
        pair = ExpiryPair()
        await pair.start()
        await pair.configure(side, "start")     # on the side whose IKE SA expires
        pair.svc["a"].initiate("tun", "net")
        await pair.settle()
        pair.probing = True
        pair.probe("established")
        assert pair.failures == []
        assert pair.ike("a").is_initiator and not pair.ike("b").is_initiator
        pair.probing = False    # the peer is cut off meanwhile
        expired = expire_unanswered(pair, side)
        assert not pair.svc[side].children, "its child went with it"
        await recover(pair)
        assert_tunnel(pair, expired, side)

    run(body())


def test_a_trap_child_initiates_on_the_next_packet_after_its_ike_sa_expired() -> None:
    async def body() -> None:
        pair = ExpiryPair()
        await pair.start()
        await pair.configure("a", "trap")
        pair.svc["a"].initiate("tun", "net")
        await pair.settle()
        pair.probing = False
        expired = expire_unanswered(pair, "a")
        await recover(pair)
        assert not [sa for sa in pair.svc["a"].endpoint.sas if not sa.is_closed and sa is not expired]
        # the next packet from a's network hits the trap policy: its ACQUIRE starts a new IKE SA
        worker = pair.workers["a"]
        worker.dp.outbound(ipv4_udp("10.1.0.5", "10.2.0.7"))
        worker.worker.drain_events()
        await recover(pair)
        assert_tunnel(pair, expired, "a")

    run(body())


def test_the_reinitiation_after_expiry_keeps_trying_with_keyingtries() -> None:
    """The peer is still unreachable for the first new IKE SA: with keyingtries = 0 (strongSwan's
    "forever") the next try gets through once it answers."""
    async def body() -> None:
        pair = ExpiryPair()
        await pair.start()
        await pair.configure("a", "start", keyingtries=0)
        pair.svc["a"].initiate("tun", "net")
        await pair.settle()
        pair.probing = False
        expired = expire_unanswered(pair, "a")
        # the re-initiation runs (no delay here); its IKE_SA_INIT is lost until it gives up
        for _ in range(5):
            await asyncio.sleep(0)
        (first,) = [sa for sa in pair.svc["a"].endpoint.sas if sa is not expired and not sa.is_closed]
        assert first.is_initiator and first.state.value == "connecting"
        expire_unanswered(pair, "a", first, DownReason.PEER_UNREACHABLE)
        await recover(pair)
        assert pair.svc["a"].attempts.get("tun") is None   # a success resets the count
        assert_tunnel(pair, expired, "a")
        assert first not in [sa for sa in pair.svc["a"].endpoint.sas if sa.children]

    run(body())


def test_no_reinitiation_towards_a_peer_we_leased_a_virtual_ip() -> None:
    """A gateway cannot set up a road warrior's IKE SA (strongSwan: "unable to reestablish IKE_SA due
    to asymmetric setup"), even if it initiated the last IKE rekey: the client reconnects itself."""
    async def body() -> None:
        pair = ExpiryPair()
        await pair.start()
        await pair.configure("a", "start")
        pair.svc["a"].initiate("tun", "net")
        await pair.settle()
        pair.probing = False
        svc = pair.svc["a"]
        record = svc.ike_up[pair.ike("a").local_spi]     # as if a had leased b 10.3.0.1 from a pool
        record.ev = dataclasses.replace(record.ev, peer_vips=(ipaddress.ip_address("10.3.0.1"),))
        expired = expire_unanswered(pair, "a")
        await recover(pair)
        assert [sa for sa in svc.endpoint.sas if sa is not expired and not sa.is_closed] == []

    run(body())
