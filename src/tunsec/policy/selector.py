"""Traffic selectors: the one model manual tunnels and IKE children share.

- :class:`Ts` is one selector as swanctl.conf writes it and IKEv2 carries it
  (RFC 7296 §3.13.1): an address range, an IP protocol (0 = any) and a 16-bit
  port range.  For ICMP/ICMPv6 the "port" holds the type in the high byte and
  the code in the low byte (RFC 4301 §4.4.1.3), which is also how the fast
  path matches them.
- :func:`parse_ts` / :func:`parse_ts_list` read strongSwan's notation:
  ``10.1.0.0/24``, ``10.1.0.5`` (a host), ``10.1.0.5-10.1.0.9``, ``dynamic``,
  each optionally followed by ``[proto/port]`` with protocol names or numbers,
  port numbers, ranges or service names; ``[icmp/8]`` is type 8 with any
  code, ``[icmp/0x0303]`` type 3 code 3.
- :func:`fast_selectors` turns the (local, remote) selector lists of one SA
  into the fast path's :class:`~tunsec.dataplane.pipe.Selector` tuples, or
  raises :class:`SelectorError` when they give none or more than the fast
  path holds: an SA without selectors would match nothing, so it is refused
  instead of installed.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from tunsec.dataplane.pipe import MAX_SELECTORS, Selector
from tunsec.ike.constants import IKE_PORT, NATT_PORT
from tunsec.immutable import immutable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def addr_text(addr: IPAddress) -> str:
    """``str(addr)``, the same text.  An IPv4Address's by inet_ntoa of its int: str() runs __str__ and
    a helper in Python and joins four int texts, ~9k instructions against ~4k, and a client's set-up
    names its addresses ~5 times (its IKE datagram's source, the log lines' selectors and virtual IP)."""
    if type(addr) is ipaddress.IPv4Address:
        return socket.inet_ntoa(addr._ip.to_bytes(4))  # type: ignore[attr-defined]  # (int() runs __int__)
    return str(addr)
    return str(addr)


@functools.lru_cache(maxsize=4096)
def parse_ip(text: str) -> IPAddress:
    """``ipaddress.ip_address`` of an address as the sockets and the IKE engine give it (text): each
    client's set-up parses its peer's and our own a few times (a send, a Child SA's endpoints, the
    index of established IKE SAs by address), at ~3 us each, and a burst's clients share a few
    addresses (one NAT).  The value is immutable and a pure function of the text, so nothing of one
    peer's reaches another through it.  Bounded: the texts are peers' source addresses.  Raises
    ValueError as ip_address does (not cached)."""
    return ipaddress.ip_address(text)

_ANY_PORTS = (0, 0xFFFF)

# A fixed table so a config means the same on every host, with or without
# /etc/protocols; other names fall back to getprotobyname() like strongSwan.
_PROTOCOLS = {
    "any": 0, "icmp": 1, "igmp": 2, "ipencap": 4, "tcp": 6, "udp": 17,
    "dccp": 33, "ipv6": 41, "gre": 47, "esp": 50, "ah": 51, "ipv6-icmp": 58,
    "icmpv6": 58, "icmp6": 58, "ospf": 89, "ipip": 94, "pim": 103, "vrrp": 112,
    "l2tp": 115, "sctp": 132, "mobility-header": 135, "udplite": 136,
}  # fmt: skip
_PROTOCOL_NAMES = {6: "tcp", 17: "udp", 1: "icmp", 58: "ipv6-icmp", 132: "sctp", 136: "udplite", 47: "gre"}
# Protocols whose selectors may carry ports (RFC 4301 §4.4.1.1); for ICMP the
# "port" is the message type/code.
_PORT_PROTOCOLS = frozenset({1, 6, 17, 33, 58, 132, 135, 136})
ICMP_PROTOCOLS = frozenset({1, 58})
_SERVICES = {"ssh": 22, "domain": 53, "http": 80, "ntp": 123, "https": 443, "isakmp": IKE_PORT,
             "ipsec-nat-t": NATT_PORT}
_UINT = re.compile(r"0[xX][0-9a-fA-F]+|[0-9]+")
_NUMBER_START = re.compile(r"[0-9]")
_PORT_RANGE = re.compile(r"([0-9]\w*)(?:\s*-\s*([0-9]\w*))?", re.ASCII)
# Names handed to getprotobyname()/getservbyname(): plain ASCII, so no NUL
# or unencodable character can raise anything but TsError.
_SYMBOL = re.compile(r"[A-Za-z][A-Za-z0-9_.+-]{0,63}")
_TS = re.compile(r"([^\[\]]*)(?:\[([^\[\]]*)\])?")
_HEX_RUN = re.compile(r"[0-9a-fA-F]{16,}")


class TsError(ValueError):
    """Text that is not a traffic selector (the message says why)."""


class SelectorError(ValueError):
    """Selectors that give no fast-path selector, or more than an SA holds."""


class NoSelectors(SelectorError):
    pass


class TooManySelectors(SelectorError):
    pass


@immutable   # a few per Child SA set up (the peer's, narrowed, resolved)
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
        # the class attribute behind IPv4Address.version, a property (a second frame per call: a
        # client's set-up asks ~13 times); int() of an address below is its _ip likewise (__int__)
        return self.start._version  # type: ignore[union-attr,no-any-return]

    @classmethod
    def parse(cls, text: str) -> Ts:
        return parse_ts(text)

    @classmethod
    def host(cls, addr: str | IPAddress) -> Ts:
        ip = _address(addr)
        return cls(ip, ip)

    def networks(self) -> list[IPNetwork]:
        """The CIDR prefixes that cover the address range exactly (routes need prefixes)."""
        if int(self.start) > int(self.end):
            return []
        return list(ipaddress.summarize_address_range(self.start, self.end))

    def resolve(self, addr: str | IPAddress | None) -> Ts | None:
        """A concrete selector: ``dynamic`` becomes ``addr``; None when that is unknown."""
        if not self.dynamic:
            return self
        if addr is None:
            return None
        ip = _address(addr)
        return Ts(ip, ip, self.protocol, self.start_port, self.end_port)

    def intersect(self, other: Ts) -> Ts | None:
        if self.start._version != other.start._version:  # type: ignore[union-attr]
            return None
        if self.protocol and other.protocol and self.protocol != other.protocol:
            return None
        start1, start2 = self.start._ip, other.start._ip  # type: ignore[union-attr]
        end1, end2 = self.end._ip, other.end._ip  # type: ignore[union-attr]
        start, end = max(start1, start2), min(end1, end2)
        sport, eport = max(self.start_port, other.start_port), min(self.end_port, other.end_port)
        if start > end or sport > eport:
            return None
        protocol = self.protocol or other.protocol
        # one within the other (nearly always: a client's whole address space and its lease, a
        # subnet proposed as configured): that one is the intersection, no new selector is built
        if (start, end, protocol, sport, eport) == (start2, end2, other.protocol, other.start_port, other.end_port) \
                and not other.dynamic:
            return other
        if (start, end, protocol, sport, eport) == (start1, end1, self.protocol, self.start_port, self.end_port) \
                and not self.dynamic:
            return self
        return Ts(_ip(self.version, start), _ip(self.version, end), protocol, sport, eport)

    def contains(self, other: Ts) -> bool:
        return self.intersect(other) == other

    def without_addresses(self, other: Ts) -> list[Ts]:
        """This selector with ``other``'s address range cut out, whatever ``other``'s protocol and
        ports (the addresses are someone else's for every protocol): up to two pieces, in order."""
        if self.version != other.version or self.dynamic:
            return [self]
        start, end, cut_lo, cut_hi = int(self.start), int(self.end), int(other.start), int(other.end)
        if cut_hi < start or cut_lo > end:
            return [self]
        pieces = [(start, cut_lo - 1), (cut_hi + 1, end)]
        return [Ts(_ip(self.version, lo), _ip(self.version, hi), self.protocol, self.start_port, self.end_port)
                for lo, hi in pieces if lo <= hi]

    def without_all(self, others: Sequence[Ts]) -> list[Ts]:
        """This selector with the address range of each of ``others`` cut out, the pieces in order.

        One sweep over the cuts sorted by address: cutting them out one after the other made every
        cut split every piece again, quadratic in their number (the claims a request overlaps)."""
        if self.dynamic:
            return [self]
        start, end = int(self.start), int(self.end)
        cuts = sorted((int(o.start), int(o.end)) for o in others if o.version == self.version)
        pieces: list[tuple[int, int]] = []
        at = start
        for cut_lo, cut_hi in cuts:
            if cut_hi < at:
                continue
            if cut_lo > end:
                break
            if cut_lo > at:
                pieces.append((at, cut_lo - 1))
            at = cut_hi + 1
            if at > end:
                break
        if at == start:
            return [self]   # nothing cut
        if at <= end:
            pieces.append((at, end))
        return [Ts(_ip(self.version, lo), _ip(self.version, hi), self.protocol, self.start_port, self.end_port)
                for lo, hi in pieces]

    def __str__(self) -> str:
        if self.dynamic:
            addr = "dynamic"
        else:
            prefix = self._prefix_len()
            start = addr_text(self.start)
            addr = f"{start}/{prefix}" if prefix is not None else f"{start}-{addr_text(self.end)}"
        if self.protocol == 0 and (self.start_port, self.end_port) == _ANY_PORTS:
            return addr
        proto = _PROTOCOL_NAMES.get(self.protocol, str(self.protocol))
        if (self.start_port, self.end_port) == _ANY_PORTS:
            return f"{addr}[{proto}]"
        return f"{addr}[{proto}/{self._port_text()}]"

    def _prefix_len(self) -> int | None:
        """The prefix length when the address range is exactly one CIDR prefix (what
        :meth:`networks` would give as its only network, without building it), else None."""
        # the addresses' ints as addr_text reads them (int() runs each one's __int__ in Python)
        start: int = self.start._ip  # type: ignore[union-attr]
        end: int = self.end._ip  # type: ignore[union-attr]
        size = end - start + 1
        if size <= 0 or size & (size - 1) or start & (size - 1):
            return None   # reversed, not a power of two, or not aligned to its size
        return self.start.max_prefixlen - (size.bit_length() - 1)

    def _port_text(self) -> str:
        lo, hi = self.start_port, self.end_port
        if self.protocol in ICMP_PROTOCOLS:
            if lo & 0xFF == 0 and hi & 0xFF == 0xFF:   # whole types: written as types, as parsed
                lo, hi = lo >> 8, hi >> 8
            else:                                      # type/code values: hex, never mistaken for a type
                return f"0x{lo:04x}" if lo == hi else f"0x{lo:04x}-0x{hi:04x}"
        return str(lo) if lo == hi else f"{lo}-{hi}"


def _address(addr: str | IPAddress) -> IPAddress:
    """``addr`` as an address object; one already is one as it is (ip_address() would format it
    as text and parse that again)."""
    if type(addr) is ipaddress.IPv4Address or type(addr) is ipaddress.IPv6Address:
        return addr
    return ipaddress.ip_address(addr)


def _ip(version: int, value: int) -> IPAddress:
    return ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value)


def _show(value: str) -> str:
    """Quote a value for an error message, withholding anything that looks like key material."""
    if _HEX_RUN.search(value):
        return "<long hex value withheld>"
    if len(value) > 60:
        value = value[:57] + "..."
    return repr(value)


def _uint(text: str, what: str, limit: int) -> int:
    """Decimal or 0x-hex, as swanctl.conf documents."""
    text = text.strip()
    if not _UINT.fullmatch(text):
        raise TsError(f"not {what}: {_show(text)}")
    if len(text) > 24:
        raise TsError(f"{_show(text)} is too large")
    if len(text) > 1 and text[0] == "0" and text[1] not in "xX":
        # strongSwan's strtoul(..., 0) would read this as octal; refuse to guess.
        raise TsError(f"leading zero in {_show(text)} is ambiguous (octal in strongSwan)")
    value = int(text, 0)
    if value > limit:
        raise TsError(f"{value} is out of range 0..{limit}")
    return value


def _parse_proto(text: str) -> int:
    if not text:
        return 0  # strongSwan reads "[]" and "[/80]" as any protocol
    known = _PROTOCOLS.get(text.lower())
    if known is not None:
        return known
    if _NUMBER_START.match(text):
        return _uint(text, "a protocol number", 0xFF)
    if _SYMBOL.fullmatch(text):
        try:
            return socket.getprotobyname(text)
        except OSError:
            pass
    raise TsError(f"unknown protocol {_show(text)}")


def _service_port(text: str, proto: int) -> int:
    known = _SERVICES.get(text.lower())
    if known is not None:
        return known
    try:
        return socket.getservbyname(text, _PROTOCOL_NAMES.get(proto, "tcp"))
    except OSError:
        raise TsError(f"unknown service name {_show(text)}") from None


def _parse_ports(text: str, proto: int) -> tuple[int, int]:
    if text.lower() == "any":
        return _ANY_PORTS
    if text.lower() == "opaque":
        raise TsError("OPAQUE port selectors are not supported")
    if proto not in _PORT_PROTOCOLS:
        raise TsError("a port needs a protocol that has ports (tcp, udp, sctp, udplite, dccp, icmp, ipv6-icmp)")
    numeric = _PORT_RANGE.fullmatch(text)
    if numeric:
        lo = _uint(numeric.group(1), "a port", 0xFFFF)
        hi = lo if numeric.group(2) is None else _uint(numeric.group(2), "a port", 0xFFFF)
    elif _SYMBOL.fullmatch(text):  # like strongSwan, a service name is never a range
        lo = hi = _service_port(text, proto)
    else:
        raise TsError(f"not a port or port range: {_show(text)}")
    if lo > hi:
        raise TsError(f"port range {lo}-{hi} is backwards")
    if proto in ICMP_PROTOCOLS:
        # strongSwan: below 256 the number is an ICMP type (it moves it to the
        # high byte); 256 and up is type << 8 | code.  A bare type means every
        # code of it, so the range covers the low byte too.
        lo = lo << 8 if lo < 256 else lo
        hi = (hi << 8) | 0xFF if hi < 256 else hi
    return lo, hi


def _parse_protoport(protoport: str | None) -> tuple[int, int, int]:
    """(protocol, first port, last port) of a selector's ``[proto/port]`` part (None: any)."""
    if protoport is None:
        return 0, *_ANY_PORTS
    proto_text, slash, port_text = protoport.partition("/")
    proto = _parse_proto(proto_text.strip())
    lo, hi = _parse_ports(port_text.strip(), proto) if slash else _ANY_PORTS
    return proto, lo, hi


def _parse_addresses(addr: str) -> tuple[IPAddress, IPAddress]:
    if "%" in addr:
        raise TsError(f"not a CIDR prefix or address range: {_show(addr)}")
    try:
        if "-" in addr:
            first, last = (ipaddress.ip_address(a.strip()) for a in addr.split("-", 1))
        else:
            prefix = addr.partition("/")[2]
            if "/" in addr and not prefix.isdigit():
                raise ValueError(addr)
            net = ipaddress.ip_network(addr, strict=False)  # host bits masked, as strongSwan does
            first, last = net.network_address, net.broadcast_address
    except ValueError:
        raise TsError(f"not a CIDR prefix or address range: {_show(addr)}") from None
    if first.version != last.version or int(first) > int(last):
        raise TsError(f"not an address range (mixed families or backwards): {_show(addr)}")
    return first, last


DYNAMIC_ADDR = ipaddress.IPv4Address(0)


def parse_ts(text: str) -> Ts:
    """One selector in swanctl.conf's notation (see the module docstring)."""
    text = text.strip()
    m = _TS.fullmatch(text)
    if not m:
        raise TsError(f"not a traffic selector: {_show(text)}")
    addr = m.group(1).strip()
    proto, lo, hi = _parse_protoport(m.group(2))
    if not addr:
        raise TsError(f"missing subnet in {_show(text)}")
    if addr.lower() == "dynamic":
        return Ts(DYNAMIC_ADDR, DYNAMIC_ADDR, proto, lo, hi, dynamic=True)
    first, last = _parse_addresses(addr)
    return Ts(first, last, proto, lo, hi)


def parse_ts_list(texts: str | Iterable[str]) -> tuple[Ts, ...]:
    """A comma-separated, non-empty list; reports every bad item, not just the first."""
    items = texts.split(",") if isinstance(texts, str) else list(texts)
    if not any(item.strip() for item in items):
        raise TsError("must list at least one selector")
    out: list[Ts] = []
    problems: list[str] = []
    for item in items:
        if not item.strip():
            problems.append("empty item in the list")
            continue
        try:
            out.append(parse_ts(item))
        except TsError as exc:
            problems.append(str(exc))
    if problems:
        raise TsError("; ".join(problems))
    return tuple(out)


# --------------------------------------------------------------------------
# To the fast path
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class FastSelectors:
    """The fast path's selectors of one SA pair.

    ``outbound`` sees packets as they leave us (source = local side) and is
    also what PROTECT policies use; ``inbound`` sees packets as they arrive
    (source = remote side), which is what the fast path checks after
    decryption.
    """

    outbound: tuple[Selector, ...]
    inbound: tuple[Selector, ...]


def _compatible(a: Ts, b: Ts) -> bool:
    same_family: bool = a.start._version == b.start._version  # type: ignore[union-attr]
    return same_family and not (a.protocol and b.protocol and a.protocol != b.protocol)


def _selector(src: Ts, dst: Ts) -> Selector:
    return Selector(src.start, src.end, dst.start, dst.end, proto=src.protocol or dst.protocol,
                    sport=(src.start_port, src.end_port), dport=(dst.start_port, dst.end_port))


def selectors_text(selectors: Sequence[Ts], most: int = MAX_SELECTORS) -> str:
    """The selectors for a message, the first ``most`` of them and how many more: a peer may send
    255 in a TS payload, and the line that refuses them need not quote them all."""
    shown = ", ".join(map(str, selectors[:most])) or "(none)"
    return shown if len(selectors) <= most else f"{shown} (and {len(selectors) - most} more)"


def fast_selectors(local: Sequence[Ts], remote: Sequence[Ts]) -> FastSelectors:
    """Every (local, remote) pair of one family whose protocols agree (0 is any), as fast-path selectors.

    Raises :class:`NoSelectors` when no pair qualifies (an SA without
    selectors admits nothing), :class:`TooManySelectors` past the fast path's
    limit (never a silent cut, which would drop traffic the peer agreed to)
    and :class:`SelectorError` for an unresolved ``dynamic`` or a selector the
    fast path's :class:`Selector` refuses (a reversed range a peer sent).
    """
    pairs = _pairs(local, remote)
    try:
        return FastSelectors(
            outbound=tuple(_selector(lo, re_) for lo, re_ in pairs),
            inbound=tuple(_selector(re_, lo) for lo, re_ in pairs),
        )
    except ValueError as exc:   # a reversed range a peer sent: never reaches the fast path
        raise SelectorError(f"{exc} (local {selectors_text(local)}; remote {selectors_text(remote)})") from None


def check_fast_selectors(local: Sequence[Ts], remote: Sequence[Ts]) -> None:
    """Raises exactly what :func:`fast_selectors` raises, without building the selectors when
    every range is in order and in bounds (then :class:`Selector` accepts them all).  The IKE
    engine checks a Child SA's selectors before agreeing to it; the IKE service builds them
    once, to install it."""
    for t in (*local, *remote):   # (a loop, not all(genexpr): no generator made and resumed per selector)
        if not _in_order(t):
            fast_selectors(local, remote)   # what Selector refuses, and its exact message
            return
    _pairs(local, remote)


def _in_order(t: Ts) -> bool:
    """What Selector's checks demand of one side (Ts itself checks nothing)."""
    kind = type(t.start)
    return ((kind is ipaddress.IPv4Address or kind is ipaddress.IPv6Address) and type(t.end) is kind
            and t.start._ip <= t.end._ip  # type: ignore[union-attr]
            and type(t.protocol) is int and 0 <= t.protocol <= 0xFF
            and type(t.start_port) is int and type(t.end_port) is int and 0 <= t.start_port <= t.end_port <= 0xFFFF)


def selector_pairs(local: Sequence[Ts], remote: Sequence[Ts]) -> list[tuple[Ts, Ts]]:
    """The (local, remote) pairs fast_selectors installs, at most MAX_SELECTORS; its errors but Selector's."""
    return _pairs(local, remote)


def _pairs(local: Sequence[Ts], remote: Sequence[Ts]) -> list[tuple[Ts, Ts]]:
    """The pairs fast_selectors makes selectors of; its errors but Selector's.

    Linear in the selectors, whatever a peer sent (255 in each TS payload): the pairs are counted
    by family and protocol before any is built, and only selectors that pair with something enter
    the loop that builds them (at most MAX_SELECTORS on each side once the count passed)."""
    unresolved = [t for t in (*local, *remote) if t.dynamic]
    if unresolved:
        raise SelectorError(f"'dynamic' selector without an address: {selectors_text(unresolved)}")
    # duplicates make the same pairs again: one of each, in the order first given (one alone, a
    # Child SA's usual, is not hashed for it: ~1k instructions a Ts, twice per Child SA's set-up)
    mine = tuple(local) if len(local) == 1 else tuple(dict.fromkeys(local))
    theirs = tuple(remote) if len(remote) == 1 else tuple(dict.fromkeys(remote))
    if len(mine) * len(theirs) <= MAX_SELECTORS:   # the usual one or two each: comparing all is bounded
        pairs = [(lo, re_) for lo in mine for re_ in theirs if _compatible(lo, re_)]
        if pairs:
            return pairs
    partners_of_mine, partners_of_theirs = _partner_counter(theirs), _partner_counter(mine)
    count = sum(partners_of_mine(lo) for lo in mine)
    if not count:
        raise NoSelectors(
            f"no local/remote selector pair of the same address family and protocol "
            f"(local {selectors_text(local)}; remote {selectors_text(remote)})"
        )
    if count > MAX_SELECTORS:
        raise TooManySelectors(
            f"{count} local/remote selector pairs; the fast path takes at most {MAX_SELECTORS} per SA "
            f"(local {selectors_text(local)}; remote {selectors_text(remote)})"
        )
    paired = [re_ for re_ in theirs if partners_of_theirs(re_)]
    return [(lo, re_) for lo in mine if partners_of_mine(lo) for re_ in paired if _compatible(lo, re_)]


def _partner_counter(others: Sequence[Ts]) -> Callable[[Ts], int]:
    """How many of ``others`` a selector pairs with (_compatible), without comparing it with each."""
    families = Counter(t.version for t in others)
    kinds = Counter((t.version, t.protocol) for t in others)

    def partners(t: Ts) -> int:
        if t.protocol:   # its own protocol, or any
            return kinds[(t.version, t.protocol)] + kinds[(t.version, 0)]
        return families[t.version]
    return partners
