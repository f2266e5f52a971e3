"""Virtual IPs in IKE_AUTH: the Configuration payload (RFC 7296 §2.19, §3.15).

Like strongSwan's ike_config task, this rides along in IKE_AUTH: a client with
``vips`` sends CP(CFG_REQUEST) with INTERNAL_IP4_ADDRESS / INTERNAL_IP6_ADDRESS
(empty for "any", or the address it would like) and asks for DNS servers; a
gateway with ``pools`` answers CP(CFG_REPLY) with one lease per requested
family from its :class:`~tunsec.ike.state.AddressPool`, and the pools' DNS
servers. When no family could be served, the gateway answers
N(INTERNAL_ADDRESS_FAILURE) and builds no Child SA, as strongSwan does.

Attribute parsing is strict about lengths (a malformed request is treated as
no request) and only ever reads the attributes below; the rest are ignored. A
request has at most 64 attributes; a reply may have any number (gateways push a
split route per subnet): the client reads only its first address of each family
and first DNS servers.
"""

from __future__ import annotations

import ipaddress
import logging
import struct
from collections.abc import Iterator, Sequence

from tunsec.immutable import immutable
from tunsec.loglimit import suffix

from ..address_role import other_peer, other_tunnel
from ..constants import CfgAttribute, CfgType, NotifyType
from ..message import CpPayload, Payload
from ..peer_logs import Line
from ..state import IkeSaState
from .base import notify

Attribute = tuple[int, bytes]

_ADDRESS_ATTR = {4: CfgAttribute.INTERNAL_IP4_ADDRESS, 6: CfgAttribute.INTERNAL_IP6_ADDRESS}
_DNS_ATTR = {4: CfgAttribute.INTERNAL_IP4_DNS, 6: CfgAttribute.INTERNAL_IP6_DNS}
log = logging.getLogger(__name__)

_MAX_ATTRIBUTES = 64  # a request is a handful; more is not a client we serve


class MalformedCp(ValueError):
    pass


def encode_attributes(attrs: Sequence[Attribute]) -> bytes:
    return b"".join([struct.pack("!HH", kind & 0x7FFF, len(value)) + value for kind, value in attrs])


def _walk(data: bytes) -> Iterator[Attribute]:
    """The attributes of a CP payload body (after its 4-byte header), one by one; MalformedCp once
    one does not fit.  No copy of the rest: a datagram's worth is at most 16384 of them."""
    pos = 0
    while pos < len(data):
        if len(data) - pos < 4:
            raise MalformedCp("truncated attribute header")
        kind, length = struct.unpack_from("!HH", data, pos)
        pos += 4
        if length > len(data) - pos:
            raise MalformedCp(f"attribute {kind & 0x7FFF} longer than the payload")
        yield kind & 0x7FFF, data[pos : pos + length]
        pos += length


def decode_attributes(data: bytes) -> list[Attribute]:
    """The attributes of a CP payload body; MalformedCp if they do not fit or are too many."""
    attrs: list[Attribute] = []
    for attr in _walk(data):
        attrs.append(attr)
        if len(attrs) > _MAX_ATTRIBUTES:
            raise MalformedCp("too many attributes")
    return attrs


def _find_cp(payloads: Sequence[Payload], cfg_type: CfgType) -> list[Attribute] | None:
    cp = _cp_body(payloads, cfg_type)
    try:
        return decode_attributes(cp) if cp is not None else None
    except MalformedCp:
        return None


def _cp_body(payloads: Sequence[Payload], cfg_type: CfgType) -> bytes | None:
    for cp in payloads:   # (a loop: an unfinished generator is closed with a GeneratorExit raised in it)
        if isinstance(cp, CpPayload) and cp.cfg_type == cfg_type:
            return cp.attributes
    return None


_READ_IN_REPLY = {CfgAttribute.INTERNAL_IP4_ADDRESS, CfgAttribute.INTERNAL_IP6_ADDRESS,
                  CfgAttribute.INTERNAL_IP4_DNS, CfgAttribute.INTERNAL_IP6_DNS}
_MAX_DNS = 8


def _reply_attributes(st: IkeSaState, payloads: Sequence[Payload]) -> list[Attribute]:
    """What a client reads of CP(CFG_REPLY): its first address of each kind and first DNS servers.

    A gateway may push many attributes we do not read (a split route per subnet: Windows RRAS,
    FortiGate and Palo Alto send one INTERNAL_IP4_SUBNET each), so the cap on a request does not
    apply: the gateway assigned an address, and it is taken whatever follows it."""
    body = _cp_body(payloads, CfgType.CFG_REPLY)
    if body is None:
        return []
    kept: list[Attribute] = []
    count = dns = 0
    try:
        for kind, value in _walk(body):
            count += 1
            if kind not in _READ_IN_REPLY:
                continue
            if kind in (CfgAttribute.INTERNAL_IP4_DNS, CfgAttribute.INTERNAL_IP6_DNS):
                dns += 1
                if dns > _MAX_DNS:
                    continue
            elif _address(kind, value) is None or any(k == kind for k, _ in kept):
                continue   # only the first address of a kind is taken (process_reply)
            kept.append((kind, value))
    except MalformedCp as exc:
        log.warning("%s: CFG_REPLY of gateway %s is malformed (%s): no virtual IP taken", st.name,
                    st.remote_addr[0], exc)
        return []
    if count > _MAX_ATTRIBUTES:
        log.info("%s: CFG_REPLY of gateway %s has %d attributes (more than %d): only its addresses and "
                 "first %d DNS servers are read", st.name, st.remote_addr[0], count, _MAX_ATTRIBUTES, _MAX_DNS)
    return kept


# ---------------------------------------------------------------- initiator


def request_payloads(st: IkeSaState) -> list[Payload]:
    """CP(CFG_REQUEST) for the configured ``vips``; nothing without them."""
    attrs: list[Attribute] = []
    for vip in st.config.vips:
        value = b"" if vip.is_unspecified else vip.packed
        if vip.version == 6 and value:
            value += bytes([128])
        attrs.append((_ADDRESS_ATTR[vip.version], value))
    for family in sorted({v.version for v in st.config.vips}):
        attrs.append((_DNS_ATTR[family], b""))
    return [CpPayload(CfgType.CFG_REQUEST, encode_attributes(attrs))] if attrs else []


def process_reply(st: IkeSaState, payloads: Sequence[Payload]) -> str | None:
    """Take one virtual IP per family we asked for, and the DNS servers, from CP(CFG_REPLY); the
    reason an address was refused (logged here, with the gateway's address), else None.

    Each address goes on our TUN as a local address: a second one of a family, or one that is
    reserved, broadcast or an IKE peer's, would make this host deliver that address's traffic to
    itself (another gateway's, killing our SAs with it), so the gateway gets one per family and
    no such address."""
    if not st.config.vips:
        return None
    attrs = _reply_attributes(st, payloads)
    wanted = {v.version for v in st.config.vips}
    offered: dict[int, ipaddress.IPv4Address | ipaddress.IPv6Address] = {}
    dns: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for kind, value in attrs:
        addr = _address(kind, value)
        if addr is None:
            continue
        if kind in (CfgAttribute.INTERNAL_IP4_ADDRESS, CfgAttribute.INTERNAL_IP6_ADDRESS):
            if addr.version in wanted:
                offered.setdefault(addr.version, addr)   # the first of its family; the rest are ignored
        elif kind in (CfgAttribute.INTERNAL_IP4_DNS, CfgAttribute.INTERNAL_IP6_DNS) and addr not in dns:
            dns.append(addr)
    addresses, refused = [], []
    for addr in offered.values():
        why = _refusal(st, addr)
        if why is None:
            addresses.append(addr)
        else:
            refused.append(f"{addr} ({why})")
    st.own_vips, st.own_dns = tuple(addresses), _usable_dns(st, dns[:_MAX_DNS])
    if not refused:
        return None
    reason = f"gateway {st.remote_addr[0]} assigned virtual IP {', '.join(refused)}: refused"
    log.warning("%s: %s", st.name, reason)
    return reason


def _address(kind: int, value: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if kind in (CfgAttribute.INTERNAL_IP4_ADDRESS, CfgAttribute.INTERNAL_IP4_DNS) and len(value) == 4:
        return ipaddress.IPv4Address(value)
    if kind == CfgAttribute.INTERNAL_IP6_ADDRESS and len(value) == 17:
        return ipaddress.IPv6Address(value[:16])
    if kind == CfgAttribute.INTERNAL_IP6_DNS and len(value) == 16:
        return ipaddress.IPv6Address(value)
    return None


_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_RESERVED = "a reserved, broadcast, multicast, loopback or link-local address"


def _reserved(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """No address of anyone in particular (an IPv4-mapped one is the IPv4 address it stands for, which
    every check would have to compare instead)."""
    return addr.is_unspecified or addr.is_multicast or addr.is_loopback or addr.is_link_local or addr.is_reserved \
        or addr in _THIS_NETWORK or (addr.version == 6 and addr.ipv4_mapped is not None)


def _usable_dns(st: IkeSaState, dns: list[ipaddress.IPv4Address | ipaddress.IPv6Address],
                ) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
    """The DNS servers of a CFG_REPLY that we take (updown's PLUTO_DNS4_n, what a resolvconf script
    writes): the others are dropped and logged (limited), the reply and its virtual IP still taken
    (review revclient s20 F2)."""
    kept, dropped = [], []
    for addr in dns:
        why = _dns_refusal(st, addr)
        if why is None:
            kept.append(addr)
        else:
            dropped.append(f"{addr} ({why})")
    # a line per reply, which a gateway sends as often as our connection comes up again (its pace: a
    # short reauth time): limited per gateway as the engine's other repeatable lines (peer_logs.py)
    if dropped and (held := st.peer_logs.admit(Line.DNS_DROPPED, st)) is not None:
        log.warning("%s: gateway %s sent DNS server %s: dropped%s", st.name, st.remote_addr[0],
                    ", ".join(dropped), suffix(held))
    return tuple(kept)


def _dns_refusal(st: IkeSaState, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why the host's DNS queries may not go to ``addr``, or None.  A gateway is trusted for the
    networks its connection routes, so a server inside them or on the internet (its own address as well)
    is taken; not one that is nobody's (to the host itself, everyone, nowhere), this host's own (a local
    service), another connection's IKE peer, a road warrior's (in our pools), or behind another tunnel:
    every name the host looks up would go there (a split tunnel's gateway steering them into another
    connection's tunnel, to a host it picks there)."""
    if _reserved(addr):
        return _RESERVED
    role = st.address_role(addr, host=True) if st.address_role is not None else None
    if role is not None and role.kind == "own":
        return "an address of this host"
    peer = None if _same(addr, st.remote_addr[0]) else other_peer(role, st.config)
    if peer is not None:
        return peer
    if role is not None and role.kind == "pool":
        return f"inside pool {role.pool} of connection {role.connection}"
    return other_tunnel(role, st.config, addr)


def _refusal(st: IkeSaState, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why ``addr`` may not be our virtual IP, or None."""
    if _reserved(addr):
        return _RESERVED
    role = st.address_role(addr) if st.address_role is not None else None
    kind = role.kind if role is not None else None
    if _same(addr, st.remote_addr[0]) or kind == "peer":
        return "the address of an IKE peer: as ours it would take that peer's traffic"
    if kind == "own":
        return "an address of this host"
    if role is not None and kind == "pool":
        return f"inside pool {role.pool} of connection {role.connection}: as ours it would take a road warrior's" \
            " traffic"
    tunnel = other_tunnel(role, st.config, addr)
    if tunnel is not None:
        return f"{tunnel}: as ours it would take that tunnel's traffic to it"
    return None


def _same(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, text: str) -> bool:
    try:
        return addr == ipaddress.ip_address(text)
    except ValueError:
        return False


# ---------------------------------------------------------------- responder


@immutable   # one per client's CFG_REQUEST
class CpAnswer:
    payloads: list[Payload]
    failure: str | None = None  # why no address could be assigned (the child is then not built)


def respond(st: IkeSaState, payloads: Sequence[Payload]) -> CpAnswer:
    """Lease an address per requested family; CFG_REPLY, or N(INTERNAL_ADDRESS_FAILURE) if none."""
    attrs = _find_cp(payloads, CfgType.CFG_REQUEST)
    if attrs is None or st.peer_id is None:
        return CpAnswer([])
    families = list(dict.fromkeys([
        4 if kind == CfgAttribute.INTERNAL_IP4_ADDRESS else 6
        for kind, _ in attrs
        if kind in (CfgAttribute.INTERNAL_IP4_ADDRESS, CfgAttribute.INTERNAL_IP6_ADDRESS)
    ]))
    if not families:
        return CpAnswer([])
    pools = st.config.pools
    leases = []
    for family in families:
        lease = st.address_pool.acquire(pools, st.peer_id, family, st.remote_addr[0], st.config.lease_proof) \
            if st.address_pool and pools else None
        if lease is not None:
            leases.append(lease)
    st.peer_vips = tuple(leases)
    if not leases:   # as strongSwan: whether or not the connection has pools at all
        wanted = " and ".join(f"IPv{f}" for f in families)
        why = (f"pools {', '.join(pools)} exhausted or of another family" if pools
               else f"connection {st.name} has no pools")
        return CpAnswer([notify(NotifyType.INTERNAL_ADDRESS_FAILURE)],
                        f"no virtual IP ({wanted}) for {st.peer_id}: {why}")
    reply: list[Attribute] = [(_ADDRESS_ATTR[lease.address.version], _address_value(lease.address))
                              for lease in leases]
    dns = dict.fromkeys([d for lease in leases for d in lease.dns])
    reply += [(_DNS_ATTR[d.version], d.packed) for d in dns]
    return CpAnswer([CpPayload(CfgType.CFG_REPLY, encode_attributes(reply))])


def _address_value(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    return addr.packed + (bytes([128]) if addr.version == 6 else b"")
