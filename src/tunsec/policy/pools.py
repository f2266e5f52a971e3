"""Virtual IP address pools: the one place where leases live (swanctl.conf ``pools``).

A gateway hands each road-warrior client an address from a pool (RFC 7296
§3.15, INTERNAL_IP4_ADDRESS / INTERNAL_IP6_ADDRESS). Leases outlive any one
IKE SA, so they are kept here, in the IKE service, and the sans-I/O engine
asks for them through the :class:`~tunsec.ike.state.AddressPool` interface
(:meth:`AddressPools.acquire` / :meth:`AddressPools.release`).

The rules follow strongSwan's in-memory pools (``mem_pool.c``):

- an identity keeps its address while it is online; a second IKE SA of the
  same identity shares it (the lease counts its holders);
- when the last holder goes, the lease turns *offline* but stays bound to the
  identity, so a reconnecting client gets the same address back;
- a new identity takes a never-used address first, and only when none is left
  the address of the identity that has been offline the longest;
- with no free and no offline address the pool is exhausted (acquire gives None).

A lease is bound to the identity *and how it was proven* (``proof``: IkeConfig.lease_proof), which
strongSwan's pools do not tell apart: an EAP user "alice" is an account of the EAP back end, while
the IDi "alice" of a client of a group-PSK connection is the word of whoever holds that PSK, and a
certificate's "alice" is its CA's.  Keyed by identity alone, a pool that two such connections share
gives the PSK's holder alice's online address, her return traffic (review reveapid F4).  The same
user proving itself the same way again (a reconnect, a reauthentication, a rekey) gets its address
back, as before; one that proves itself two ways is two clients with an address each.

An unproven identity (eap-radius without User-Name in the Access-Accept: ``Identity.tag``) is
one IKE SA's alone, so it shares no lease: it gets the address of its name only while no IKE SA
holds it (a returning client gets its address back), else one of its own, and when it goes the
address stays bound to the name (if that has none), so the name's next IKE SA finds it.  Only an
address an unproven peer of that name held last: never one a proven identity of that name is
bound to (a client that merely says "alice" does not get Alice's usual address, nor rebind it).
As any IKE SA of such a user is a peer of its own, and the user chooses the name, unproven peers
hold at most UNPROVEN_PER_NAME leases of one name from one source address (an IPv6 one: its /64)
and UNPROVEN_PER_SOURCE from one source, per address family: one authenticated user cannot take
every address, nor, from its own address, the leases of an unproven client of that name elsewhere.

An offline address may go to another identity at once, with no wait here, because
the IKE service removes the old holder from the worker first: its IKE SA reports its
Child SAs down before it releases the lease, the service queues their removal (their
SAs, lingering ones too, and policies) on its changes queue in that order, and a new
Child SA's install waits behind anything queued there (services/ike/installs.py,
changes.py; tests/test_ikeservice_lease_fence.py drives the interleavings).

A CIDR pool skips its network address (and for IPv4 prefixes shorter than /31
its broadcast address), as strongSwan does; a range ``a-b`` uses every address.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from tunsec.ike.dos_source import DEFAULT_IPV6_SOURCE_PREFIX, source_key
from tunsec.ike.identity import Identity
from tunsec.immutable import immutable
from tunsec.policy.selector import IPAddress, Ts

# leases (per address family) unproven peers may hold at once under one name from one source address
# (a phone and a laptop), and from one source address: the name is the user's choice, the address
# less so; clients behind one NAT share it (see docs/configuration.md, Road warriors)
UNPROVEN_PER_NAME = 2
UNPROVEN_PER_SOURCE = 4


@dataclass(frozen=True)
class PoolConfig:
    """One ``pools.<name>`` section: an inclusive address range and what is sent with a lease."""

    name: str
    first: IPAddress
    last: IPAddress
    dns: tuple[IPAddress, ...] = ()

    def __post_init__(self) -> None:
        if self.first.version != self.last.version or int(self.first) > int(self.last):
            raise ValueError(f"pool {self.name}: {self.first}-{self.last} is not an address range")

    @property
    def version(self) -> int:
        return self.first._version  # type: ignore[union-attr,no-any-return]   # (the property's, a frame less)

    @property
    def size(self) -> int:
        return int(self.last) - int(self.first) + 1

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """The networks to route the pool through: for a subnet pool the subnet itself, one route,
        although its network (and IPv4 broadcast) address is never leased; for a range the
        aligned blocks that cover it exactly."""
        first, last = int(self.first), int(self.last)
        width = self.first.max_prefixlen
        for prefixlen in range(width, -1, -1):   # the smallest aligned block holding both ends
            size = 1 << (width - prefixlen)
            if first // size == last // size:
                break
        base = first - first % size
        # exactly what parse_addrs makes of that subnet written as one
        subnet = size <= 2 or (first == base + 1 and last == base + size - (2 if self.version == 4 else 1))
        if subnet or (first, last) == (base, base + size - 1):
            net = ipaddress.IPv4Network if self.version == 4 else ipaddress.IPv6Network
            return [net((base, prefixlen))]
        return list(ipaddress.summarize_address_range(self.first, self.last))

    @classmethod
    def parse_addrs(cls, name: str, text: str, dns: tuple[IPAddress, ...] = ()) -> PoolConfig:
        """``addrs`` as swanctl.conf writes it: ``10.3.0.0/24`` or ``10.3.0.10-10.3.0.20``; ValueError if not."""
        text = text.strip()
        if "-" in text:
            lo, _, hi = text.partition("-")
            return cls(name, ipaddress.ip_address(lo.strip()), ipaddress.ip_address(hi.strip()), dns)
        net = ipaddress.ip_network(text, strict=False)
        first, last = int(net.network_address), int(net.broadcast_address)
        if net.num_addresses > 2:
            first += 1  # the network address
            if net.version == 4:
                last -= 1  # the broadcast address
        return cls(name, ipaddress.ip_address(first) if net.version == 4 else ipaddress.IPv6Address(first),
                   ipaddress.ip_address(last) if net.version == 4 else ipaddress.IPv6Address(last), dns)


@immutable   # one per client's virtual IP
class Lease:
    """What the engine puts in a CFG_REPLY: the address, and the DNS servers of its pool."""

    pool: str
    address: IPAddress
    dns: tuple[IPAddress, ...] = ()
    proof: str = field(default="", compare=False)   # how its holder's identity was proven (acquire's): release takes it


@immutable(slots=True)   # one per bound lease: no __dict__
class _Holder:
    """Whom a lease is bound to: an identity as one way of proving it vouched for it."""

    identity: Identity
    proof: str

    @property
    def tag(self) -> int:
        return self.identity.tag

    @property
    def named(self) -> _Holder:
        return _Holder(self.identity.named, self.proof) if self.identity.tag else self


@dataclass(frozen=True)
class LeaseInfo:
    """A lease as ``tunsec status`` shows it."""

    pool: str
    address: IPAddress
    identity: str
    online: bool
    # how the identity was proven (IkeConfig.lease_proof): two leases of one name (EAP user alice, a
    # group-PSK client calling itself alice) are two clients, and the rows say which is which
    proof: str = ""


@dataclass
class _Pool:
    config: PoolConfig
    unused: int = 0  # offsets below this were handed out at least once
    owner: dict[int, _Holder] = field(default_factory=dict)  # offset -> identity (and proof) it is bound to
    by_id: dict[_Holder, int] = field(default_factory=dict)  # identity (and proof) -> offset
    holders: dict[int, int] = field(default_factory=dict)  # online offset -> number of IKE SAs holding it
    offline: OrderedDict[int, None] = field(default_factory=OrderedDict)  # oldest first
    # offline offsets bound to a name by an unproven peer's release (not by a proven identity of that
    # name): the only ones _name_offline hands to an unproven peer
    unproven_bound: set[int] = field(default_factory=set)

    def address(self, offset: int) -> IPAddress:
        return ipaddress.ip_address(int(self.config.first) + offset) if self.config.version == 4 else \
            ipaddress.IPv6Address(int(self.config.first) + offset)

    def offset(self, addr: IPAddress) -> int | None:
        if addr.version != self.config.version:
            return None
        off = int(addr) - int(self.config.first)
        return off if 0 <= off < self.config.size else None

    def acquire(self, peer: _Holder) -> int | None:
        off = self.by_id.get(peer)
        if off is not None and not peer.tag:
            self.unproven_bound.discard(off)   # a proven identity holds it now: it is that identity's
        if off is None and peer.tag:
            off = self._name_offline(peer)
        if off is None:
            off = self._fresh()
            if off is None:
                return None
            self.owner[off], self.by_id[peer] = peer, off
        self.offline.pop(off, None)
        self.holders[off] = self.holders.get(off, 0) + 1
        return off

    def _name_offline(self, peer: _Holder) -> int | None:
        """The address bound to an unproven peer's name, now bound to that peer, if no one holds it and
        an unproven peer of that name held it last (never one a proven identity of that name held)."""
        off = self.by_id.get(peer.named)
        if off is None or off in self.holders or off not in self.unproven_bound:
            return None
        self._bind(off, peer)
        return off

    def _bind(self, off: int, peer: _Holder) -> None:
        del self.by_id[self.owner[off]]
        self.owner[off], self.by_id[peer] = peer, off
        self.unproven_bound.discard(off)

    def _fresh(self) -> int | None:
        if self.unused < self.config.size:
            self.unused += 1
            return self.unused - 1
        if not self.offline:
            return None
        off, _ = self.offline.popitem(last=False)  # the identity offline the longest loses its address
        del self.by_id[self.owner.pop(off)]
        self.unproven_bound.discard(off)
        return off

    def release(self, off: int, peer: _Holder) -> bool:
        if self.owner.get(off) != peer or off not in self.holders:
            return False
        self.holders[off] -= 1
        if self.holders[off] == 0:
            del self.holders[off]
            self.offline[off] = None
            if peer.tag and peer.named not in self.by_id:
                self._bind(off, peer.named)   # no one will ever ask for that one SA's identity again
                self.unproven_bound.add(off)
        return True


class AddressPools:
    """Every configured pool and its leases (one instance per IKE service)."""

    def __init__(self, pools: Sequence[PoolConfig] = ()) -> None:
        self._pools = {p.name: _Pool(p) for p in pools}
        self._spans: dict[tuple[str, ...], tuple[Ts, ...]] = {}
        self._unproven = _UnprovenLeases()

    def __contains__(self, name: str) -> bool:
        return name in self._pools

    def holding(self, names: Sequence[str], address: str) -> str | None:
        """The first of the pools ``names`` whose networks hold ``address`` (leased or not), or None."""
        addr = ipaddress.ip_address(address)
        for name in names:
            pool = self._pools.get(name)
            if pool is not None and any(addr in net for net in pool.config.networks()):
                return name
        return None

    def acquire(self, names: Sequence[str], peer: Identity, family: int, source: str | None = None,
                proof: str = "") -> Lease | None:
        """An address of IP version ``family`` for ``peer`` from the first of ``names`` that has one;
        ``source``: the IP address the peer's IKE SA came from (UNPROVEN_PER_SOURCE); ``proof``: how
        its identity was proven (the lease is bound to both)."""
        if peer.tag and not self._unproven.admits(peer, family, source):
            return None
        for name in names:
            pool = self._pools.get(name)
            if pool is None or pool.config.version != family:
                continue
            off = pool.acquire(_Holder(peer, proof))
            if off is not None:
                if peer.tag:
                    self._unproven.took(peer, family, source)
                return Lease(name, pool.address(off), pool.config.dns, proof)
        return None

    def release(self, lease: Lease, peer: Identity) -> None:
        """``peer``'s IKE SA holding ``lease`` is gone; the address stays bound to ``peer`` while offline."""
        pool = self._pools.get(lease.pool)
        off = pool.offset(lease.address) if pool is not None else None
        if pool is not None and off is not None and pool.release(off, _Holder(peer, lease.proof)) and peer.tag \
                and off not in pool.holders:
            self._unproven.gave_back(peer, pool.config.version)

    def spans(self, names: Sequence[str]) -> tuple[Ts, ...]:
        """The address blocks of the pools ``names`` (the networks routed into them: for a subnet
        pool its network and broadcast address too), which no client but a lease's holder may claim."""
        key = tuple(names)
        if (known := self._spans.get(key)) is None:   # asked per Child SA; the pools never change
            known = self._spans[key] = tuple(Ts(net.network_address, net.broadcast_address) for n in names
                                             if n in self._pools for net in self._pools[n].config.networks())
        return known

    def families(self, names: Sequence[str]) -> set[int]:
        return {self._pools[n].config.version for n in names if n in self._pools}

    def exhausted(self, names: Sequence[str], family: int) -> list[str]:
        """The pools of ``names`` with IP version ``family`` (for the log line of a failed request)."""
        return [n for n in names if n in self._pools and self._pools[n].config.version == family]

    def leases(self) -> list[LeaseInfo]:
        return [lease_info(ref) for ref in self.lease_snapshot()]

    def lease_snapshot(self) -> list[LeaseRef]:
        """The leases there are now, each not yet made a LeaseInfo (lease_info): what `tunsec status` takes
        at once, formatting them a slice at a time after (leases() at once held the event loop ~0.2 s at
        50,000 bound leases, this ~10 ms)."""
        return [(name, pool, off, (holder := pool.owner[off]).identity, off in pool.holders, holder.proof)
                for name, pool in self._pools.items() for off in sorted(pool.owner)]


# a lease as lease_snapshot took it: pool name, the pool, offset, the identity bound to it, online
# then, and how that identity was proven
LeaseRef = tuple[str, _Pool, int, Identity, bool, str]


def lease_info(ref: LeaseRef) -> LeaseInfo:
    name, pool, off, identity, online, proof = ref
    return LeaseInfo(name, pool.address(off), str(identity), online, proof)


class _UnprovenLeases:
    """The leases unproven peers hold, by name and by source address (per family): each peer (one
    IKE SA and its rekeyed successors) counts once, however often it asks."""

    def __init__(self) -> None:
        self._by_peer: dict[tuple[Identity, int], tuple[_NameKey, tuple[str, int] | None]] = {}
        self._count: dict[object, int] = {}

    def admits(self, peer: Identity, family: int, source: str | None) -> bool:
        if (peer, family) in self._by_peer:
            return True   # it holds one already (asking again gets the same)
        name, src = self._keys(peer, family, source)
        return self._count.get(name, 0) < UNPROVEN_PER_NAME and \
            (src is None or self._count.get(src, 0) < UNPROVEN_PER_SOURCE)

    def took(self, peer: Identity, family: int, source: str | None) -> None:
        if (peer, family) in self._by_peer:
            return
        keys = self._by_peer[(peer, family)] = self._keys(peer, family, source)
        for key in keys:
            if key is not None:
                self._count[key] = self._count.get(key, 0) + 1

    def gave_back(self, peer: Identity, family: int) -> None:
        for key in self._by_peer.pop((peer, family), ()):
            if key is not None:
                left = self._count[key] - 1
                if left:
                    self._count[key] = left
                else:
                    del self._count[key]

    @staticmethod
    def _keys(peer: Identity, family: int, source: str | None) -> tuple[_NameKey, tuple[str, int] | None]:
        where = None if source is None else source_key(source, DEFAULT_IPV6_SOURCE_PREFIX)
        # the name counts per source (none known: apart from every source), so that one client cannot
        # hold the leases of that name from everywhere; the source's own bound takes sprays of names
        return (peer.named, where or "", family), None if where is None else (where, family)


_NameKey = tuple[Identity, str, int]
