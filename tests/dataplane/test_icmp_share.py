"""Review revpeerdos F2 (proof): one source takes every ICMP "too big" answer of the gateway.

The fast path answers a DF packet too big for the tunnel with ICMP "fragmentation needed" /
"packet too big" (csrc/icmp.c), the only signal that makes the sender's path MTU discovery
shrink its packets to what the tunnel carries.  The answers are limited by one token bucket for
the whole worker (csrc/dp.c ts_outbound_locked: ``dp->icmp_tat_ns``, a burst of 20, then 100 a
second), shared by every sender.  One source that sends oversized DF packets into any PROTECT
policy (an authenticated road warrior whose ``local_ts`` is 0.0.0.0/0, through its own tunnel to
another client's virtual IP or another site's LAN, which the kernel routes back into the TUN; or
any LAN host) at 100 a second takes every answer: the other senders' too-big packets are dropped
without an answer (``icmp_suppressed``), their TCP connections into the tunnels stall (a PMTUD
black hole).  The INVALID_SPI hints have a per-source limit before the shared one
(csrc/events.c, tests/dataplane/test_invalid_spi_limit.py); these answers do not.

The limiter's clock is stopped with ts_test_set_clock: no time passes during the test.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from esp_ref import c_addr, ipv4_udp, new_key, sender
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import ICMPv6PacketTooBig, IPv6
from scapy.packet import Raw
from tunsec.dataplane._fastpath import lib

from tunsec.dataplane.fastpath import Drop
from tunsec.dataplane.pipe import Action, Endpoint, Policy, Selector

MTU = 1400
T0 = 1 << 62   # far ahead of CLOCK_MONOTONIC, as a stopped clock may be
ANY4 = Selector.from_networks(ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("0.0.0.0/0"))
ANY6 = Selector.from_networks(ipaddress.ip_network("::/0"), ipaddress.ip_network("::/0"))
SOURCE_BURST = 10   # icmp_limit.c ICMP_SOURCE_BURST: one sender's answers at once
ALL_BURST = 50      # icmp_limit.c ICMP_BURST: all senders' answers at once


def _big(src: str) -> bytes:
    return ipv4_udp(src, "10.2.0.1", b"\xab" * 1500, df=True)


def test_one_flooding_source_leaves_another_sources_too_big_answered() -> None:
    dp = sender(new_key())
    dp.set_tunnel_mtu(MTU)
    dp.spd_add(Policy(id=3, priority=20, action=Action.PROTECT, reqid=1, selector=ANY4))
    lib.ts_test_set_clock(dp._dp, T0)
    flood = [dp.outbound(_big("10.3.0.66")) for _ in range(40)]   # the hostile peer's looped packets
    assert all(drop is Drop.TOO_BIG for _, _, drop, _ in flood)
    assert sum(1 for *_, answer in flood if answer) < len(flood)   # it is limited, rightly
    esp, _, drop, answer = dp.outbound(_big("10.1.0.1"))   # another sender, the same instant
    assert (esp, drop) == (b"", Drop.TOO_BIG)
    assert answer, "another sender's too-big packet went unanswered: one source took every ICMP answer"
    assert IP(answer)[ICMP].nexthopmtu == MTU and IP(answer).dst == "10.1.0.1"


def _stopped(policy: Selector = ANY4) -> Any:
    dp = sender(new_key())
    dp.set_tunnel_mtu(MTU)
    dp.spd_add(Policy(id=3, priority=20, action=Action.PROTECT, reqid=1, selector=policy))
    lib.ts_test_set_clock(dp._dp, T0)
    return dp


def test_many_senders_at_once_share_a_budget_larger_than_one_senders() -> None:
    """Fix of review revpeerdos F2: 60 senders at the same instant, one too-big packet each: the
    first ALL_BURST are answered (the old shared bucket answered 20), the rest are counted."""
    dp = _stopped()
    answers = [dp.outbound(_big(f"10.4.{i // 200}.{1 + i % 200}"))[3] for i in range(60)]
    assert sum(1 for a in answers if a) == ALL_BURST and all(answers[:ALL_BURST])
    assert dp.drops()["icmp_suppressed"] == 60 - ALL_BURST


def test_an_ipv6_sender_is_counted_by_its_whole_address() -> None:
    """Fix of review revcfg F3 (it was counted by its /64, fix of revpeerdos F2): the senders are the
    hosts whose packets enter the tunnel, a LAN's, all of one /64, so each address has its share:
    20 packets from one address get one share, its /64 neighbour and a sender of another /64 are
    still answered, and 60 addresses of one /64 (a host making them up) get no more than the budget
    of all."""
    dp = _stopped(ANY6)

    def big6(src: str) -> bytes:
        return bytes(IPv6(src=src, dst="fd02::1") / UDP(sport=1, dport=2) / Raw(b"\x5a" * 1500))

    def slot(address: str) -> int:
        return int(lib.ts_test_icmp_source_slot(dp._dp, c_addr(Endpoint(ipaddress.ip_address(address), 0))))

    answers = [dp.outbound(big6("fd01:0:0:1::1"))[3] for _ in range(20)]
    assert sum(1 for a in answers if a) == SOURCE_BURST
    # senders not in the flooder's slot (1 in 256 is, by the keyed hash: it shares the spent share)
    lan = [a for a in (f"fd01:0:0:1::{i:x}" for i in range(2, 200)) if slot(a) != slot("fd01:0:0:1::1")]
    other = next(a for a in (f"fd01:0:0:2::{i:x}" for i in range(1, 200)) if slot(a) != slot("fd01:0:0:1::1"))
    for address in (lan[0], other):   # a /64 neighbour, a sender of another /64
        answer = dp.outbound(big6(address))[3]
        assert answer and IPv6(answer)[ICMPv6PacketTooBig].mtu == MTU
    made_up = [dp.outbound(big6(a))[3] for a in lan[1:61]]
    assert sum(1 for a in made_up if a) == ALL_BURST - SOURCE_BURST - 2
