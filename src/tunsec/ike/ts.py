"""Traffic selectors in IKEv2 (RFC 7296 §3.13) and narrowing (§2.9).

The selector model and its swanctl.conf parser live in
:mod:`tunsec.policy.selector`, shared with manual tunnels; this module adds
what only IKE needs: the wire form and narrowing.

Narrowing is the intersection of what the initiator proposed with what the
responder's policy allows: every proposed selector is intersected with every
configured one, and the non-empty results are kept. An empty result on
either side is TS_UNACCEPTABLE.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence

from tunsec.policy.pad import narrow  # which selectors a peer may claim is the PAD's decision
from tunsec.policy.selector import IPAddress, Ts, TsError, parse_ts, parse_ts_list

from .constants import TsType
from .message import TrafficSelector

__all__ = [
    "Ts", "TsError", "any_of_family", "from_wire", "narrow", "parse_ts", "parse_ts_list", "resolve_all",
    "resolve_each", "to_wire",
]


def to_wire(ts: Ts) -> TrafficSelector:
    kind = TsType.IPV4_ADDR_RANGE if ts.version == 4 else TsType.IPV6_ADDR_RANGE
    return TrafficSelector(kind, ts.protocol, ts.start_port, ts.end_port, ts.start.packed, ts.end.packed)


# Clients propose the same selectors again and again (all of IPv4 until they have a virtual IP,
# the gateway's subnet): both are immutable and small (the codec checked the address lengths).
@functools.lru_cache(maxsize=64)
def from_wire(sel: TrafficSelector) -> Ts:
    start = ipaddress.ip_address(sel.start_addr)
    end = ipaddress.ip_address(sel.end_addr)
    return Ts(start, end, sel.ip_protocol, sel.start_port, sel.end_port)


def resolve_all(selectors: Iterable[Ts], addr: str | IPAddress | None) -> tuple[Ts, ...]:
    return tuple(r for r in (s.resolve(addr) for s in selectors) if r is not None)


def resolve_each(selectors: Iterable[Ts], addrs: Sequence[str | IPAddress]) -> tuple[Ts, ...]:
    """``dynamic`` becomes each of ``addrs`` (a client's virtual IPs, one per family)."""
    out: list[Ts] = []
    for sel in selectors:
        for resolved in ((sel.resolve(a) for a in addrs) if sel.dynamic else (sel,)):
            if resolved is not None and resolved not in out:
                out.append(resolved)
    return tuple(out)


def any_of_family(selectors: Iterable[Ts], families: Iterable[int]) -> tuple[Ts, ...]:
    """``dynamic`` becomes the whole address space of each family: what a client proposes as TSi
    before it knows its virtual IP (the gateway narrows it to the lease, RFC 7296 §2.19)."""
    out: list[Ts] = []
    for sel in selectors:
        if not sel.dynamic:
            out.append(sel)
            continue
        for family in families:
            net = ipaddress.ip_network("0.0.0.0/0" if family == 4 else "::/0")
            out.append(Ts(net.network_address, net.broadcast_address, sel.protocol, sel.start_port, sel.end_port))
    return tuple(out)

