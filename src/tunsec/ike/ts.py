"""Traffic selectors (RFC 7296 §3.13) and narrowing (§2.9).

Written as strongSwan writes them in swanctl.conf: ``10.1.0.0/16``,
``10.1.0.1-10.1.0.9``, ``fec1::/64``, ``0.0.0.0/0[tcp/443]``, ``10.1.0.0/16[udp]``
and ``dynamic`` (the IKE address of that side, filled in per negotiation).

Narrowing is the intersection of what the initiator proposed with what the
responder's policy allows: every proposed selector is intersected with every
configured one, and the non-empty results are kept. An empty result on
either side is TS_UNACCEPTABLE.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .constants import TsType
from .message import TrafficSelector

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "icmp6": 58, "ipv6-icmp": 58, "sctp": 132, "gre": 47, "any": 0}
_SERVICES = {
    "http": 80,
    "https": 443,
    "domain": 53,
    "ssh": 22,
    "ntp": 123,
    "isakmp": 500,
    "ipsec-nat-t": 4500,
}
_TS_RE = re.compile(r"^(?P<addr>[^\[\]]*)(?:\[(?P<proto>[^/\]]*)(?:/(?P<port>[^\]]*))?\])?$")


class TsError(ValueError):
    """A traffic selector string that cannot be parsed."""


@dataclass(frozen=True)
class Ts:
    """An address range with a protocol (0 = any) and a port range.

    ``dynamic`` stands for the IKE address of its side until :meth:`resolve`.
    """

    start: IPAddress
    end: IPAddress
    protocol: int = 0
    start_port: int = 0
    end_port: int = 0xFFFF
    dynamic: bool = False

    @property
    def version(self) -> int:
        return self.start.version

    @classmethod
    def parse(cls, text: str) -> Ts:
        m = _TS_RE.match(text.strip())
        if m is None:
            raise TsError(f"invalid traffic selector {text!r}")
        protocol, sport, eport = _parse_proto_port(m.group("proto"), m.group("port"), text)
        addr = m.group("addr").strip()
        if addr == "dynamic" or (not addr and m.group("proto") is not None):
            zero = ipaddress.IPv4Address(0)
            return cls(zero, zero, protocol, sport, eport, dynamic=True)
        start, end = _parse_range(addr, text)
        return cls(start, end, protocol, sport, eport)

    @classmethod
    def host(cls, addr: str | IPAddress) -> Ts:
        ip = ipaddress.ip_address(addr)
        return cls(ip, ip)

    def resolve(self, addr: str | IPAddress | None) -> Ts | None:
        """A concrete selector: ``dynamic`` becomes ``addr``; None when that is unknown."""
        if not self.dynamic:
            return self
        if addr is None:
            return None
        ip = ipaddress.ip_address(addr)
        return Ts(ip, ip, self.protocol, self.start_port, self.end_port)

    def intersect(self, other: Ts) -> Ts | None:
        if self.version != other.version:
            return None
        if self.protocol and other.protocol and self.protocol != other.protocol:
            return None
        start, end = max(int(self.start), int(other.start)), min(int(self.end), int(other.end))
        sport, eport = max(self.start_port, other.start_port), min(self.end_port, other.end_port)
        if start > end or sport > eport:
            return None
        return Ts(_ip(self.version, start), _ip(self.version, end), self.protocol or other.protocol, sport, eport)

    def contains(self, other: Ts) -> bool:
        return self.intersect(other) == other

    def to_wire(self) -> TrafficSelector:
        kind = TsType.IPV4_ADDR_RANGE if self.version == 4 else TsType.IPV6_ADDR_RANGE
        return TrafficSelector(kind, self.protocol, self.start_port, self.end_port, self.start.packed, self.end.packed)

    @classmethod
    def from_wire(cls, sel: TrafficSelector) -> Ts:
        start = ipaddress.ip_address(sel.start_addr)
        end = ipaddress.ip_address(sel.end_addr)
        return cls(start, end, sel.ip_protocol, sel.start_port, sel.end_port)

    def __str__(self) -> str:
        if self.dynamic:
            addr = "dynamic"
        else:
            nets = (
                list(ipaddress.summarize_address_range(self.start, self.end))
                if int(self.start) <= int(self.end)
                else []
            )
            addr = str(nets[0]) if len(nets) == 1 else f"{self.start}-{self.end}"
        if self.protocol == 0 and (self.start_port, self.end_port) == (0, 0xFFFF):
            return addr
        proto = next((k for k, v in _PROTOCOLS.items() if v == self.protocol), str(self.protocol))
        if (self.start_port, self.end_port) == (0, 0xFFFF):
            return f"{addr}[{proto}]"
        ports = str(self.start_port) if self.start_port == self.end_port else f"{self.start_port}-{self.end_port}"
        return f"{addr}[{proto}/{ports}]"


def _ip(version: int, value: int) -> IPAddress:
    return ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value)


def _parse_range(addr: str, text: str) -> tuple[IPAddress, IPAddress]:
    try:
        if "-" in addr:
            a, b = (ipaddress.ip_address(x.strip()) for x in addr.split("-", 1))
            if a.version != b.version or int(a) > int(b):
                raise TsError(f"invalid address range in {text!r}")
            return a, b
        net = ipaddress.ip_network(addr, strict=False)
    except ValueError:
        raise TsError(f"invalid traffic selector {text!r}") from None
    return net.network_address, net.broadcast_address


def _parse_proto_port(proto: str | None, port: str | None, text: str) -> tuple[int, int, int]:
    protocol = 0
    if proto:
        protocol = _PROTOCOLS.get(proto.lower(), -1)
        if protocol < 0:
            protocol = _number(proto, 255, text)
    if not port or port in ("%any", "any"):
        return protocol, 0, 0xFFFF
    low, _, high = port.partition("-")
    start = _SERVICES.get(low, -1) if not low.isdigit() else int(low)
    end = start if not high else (_SERVICES.get(high, -1) if not high.isdigit() else int(high))
    if not 0 <= start <= end <= 0xFFFF:
        raise TsError(f"invalid port range in {text!r}")
    return protocol, start, end


def _number(value: str, limit: int, text: str) -> int:
    if not value.isdigit() or int(value) > limit:
        raise TsError(f"invalid protocol in {text!r}")
    return int(value)


def parse_ts_list(texts: str | Iterable[str]) -> tuple[Ts, ...]:
    """A selector list; a string may hold several, comma-separated, as in swanctl.conf."""
    items = texts.split(",") if isinstance(texts, str) else list(texts)
    return tuple(Ts.parse(t) for t in items if t.strip())


def resolve_all(selectors: Iterable[Ts], addr: str | IPAddress | None) -> tuple[Ts, ...]:
    return tuple(r for r in (s.resolve(addr) for s in selectors) if r is not None)


def narrow(proposed: Sequence[Ts], allowed: Sequence[Ts]) -> tuple[Ts, ...]:
    """Every non-empty intersection of a proposed with an allowed selector, deduplicated."""
    result: list[Ts] = []
    for want in proposed:
        for have in allowed:
            common = want.intersect(have)
            if common is not None and common not in result:
                result.append(common)
    return tuple(result)
