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

from esp_ref import ipv4_udp, new_key, sender
from scapy.layers.inet import ICMP, IP
from tunsec.dataplane._fastpath import lib

from tunsec.dataplane.fastpath import Drop
from tunsec.dataplane.pipe import Action, Policy, Selector

MTU = 1400
T0 = 1 << 62   # far ahead of CLOCK_MONOTONIC, as a stopped clock may be
ANY4 = Selector.from_networks(ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("0.0.0.0/0"))


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
