"""Review revmobfix F2: the fast path's ESP-loop guard (csrc/dp.c own_esp) only knows the SA the
packet is about to enter; two SAs whose peers are routed into each other's tunnel loop unchecked.

own_esp drops a packet read from the TUN when it is UDP from the chosen SA's port to *that SA's*
remote address and port.  SA A's ESP to its peer PA, where the host routes PA into the TUN and PA
lies in SA B's selector, is sealed by B (its remote is PB, not PA) and sent to PB; when PB is in A's
selector in turn, B's ESP comes back from the TUN and is sealed by A, and so on: each round one ESP
(+UDP+IP) header larger, every round a cipher pass on a worker thread all peers share, until the MTU
stops it (or, without DF, the kernel fragments it and each fragment goes round again).  The peers
need not be the attacker's own: a peer address is "peer" in address_role (checked before "pool" and
"tunnel"), so any established peer's address is a move target that refused_address lets through,
and one Child SA (or a nested client's) holding it makes the pair.  docs/issue9-coverage.md "What
remains" lists one SA's ESP carried by another (one hop) as known; not that two such hops close a
loop the guard never stops, which is what it was added against.  Through cffi, packets built
with scapy, as tests/dataplane/test_esp_loop_guard.py does.
"""

from __future__ import annotations

import dataclasses
import ipaddress

from esp_ref import new_key, spec
from scapy.layers.inet import IP, UDP

from tunsec.dataplane.fastpath import Dataplane, Drop
from tunsec.dataplane.pipe import Action, Direction, Endpoint, Policy, Selector

GW = "192.0.2.1"
PA, PB = "10.3.0.1", "10.3.0.2"   # the two SAs' peer addresses, each inside the other's selector


def _pair() -> Dataplane:
    """SA A (SPI 0x1001) to PA, protecting PB; SA B (SPI 0x1002) to PB, protecting PA."""
    dp = Dataplane()
    for reqid, (spi, peer, protects) in enumerate(((0x1001, PA, PB), (0x1002, PB, PA)), start=1):
        sel = Selector.from_networks(ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network(f"{protects}/32"))
        dp.add(dataclasses.replace(spec(spi, Direction.OUT, new_key(), window=0, reqid=reqid), selectors=(sel,),
                                   local=Endpoint(ipaddress.ip_address(GW), 4500),
                                   remote=Endpoint(ipaddress.ip_address(peer), 4500)))
        dp.spd_add(Policy(id=reqid, priority=10, action=Action.PROTECT, reqid=reqid, selector=sel))
    return dp


def test_two_sas_sealing_each_others_esp_are_stopped() -> None:
    dp = _pair()
    packet = bytes(IP(src=GW, dst=PA) / UDP(sport=4500, dport=4500) / (b"\0" * 64))   # A's ESP, back from the TUN
    rounds = 0
    while rounds < 10:
        esp, to, drop, _ = dp.outbound(packet)
        if drop != Drop.NONE:
            break
        assert to is not None and esp
        rounds += 1
        # what the worker sends to `to` from our port; the host routes it into the TUN again
        packet = bytes(IP(src=GW, dst=str(to.addr)) / UDP(sport=4500, dport=to.port) / esp)
    assert dp.drops()["esp_loop"] >= 1, f"our own ESP was sealed {rounds} times over, never dropped as esp_loop"

