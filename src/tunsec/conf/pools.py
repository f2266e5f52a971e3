"""swanctl.conf's ``pools { <name> { addrs = ..., dns = ... } }``: virtual IP address pools.

Each section becomes a :class:`~tunsec.policy.pools.PoolConfig` (the leases
themselves live in :class:`~tunsec.policy.pools.AddressPools`, in the IKE
service). ``addrs`` is one CIDR subnet (``10.3.0.0/24``, ``fd00:3::/120``) or
one range (``10.3.0.10-10.3.0.20``); ``dns`` a list of addresses sent with
each lease. Pools must not overlap, as strongSwan requires. The other
attributes strongSwan can hand out (NBNS, DHCP, split tunnelling...) are
refused rather than silently left out of the reply.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tunsec.conf.errors import BadValue, ConfigIssue, show_value
from tunsec.conf.reader import SectionReader, refuse_keys
from tunsec.conf.syntax import Section
from tunsec.conf.values import refuse
from tunsec.policy.pools import PoolConfig
from tunsec.policy.selector import IPAddress, Ts

if TYPE_CHECKING:
    from tunsec.conf.connections import Connection

__all__ = ["pool_ts_warnings", "read_pools"]

_REFUSED = (
    ("nbns", "NBNS (WINS) servers are not supported"),
    ("dhcp", "DHCP servers are not supported"),
    ("netmask", "INTERNAL_IP4_NETMASK is not supported"),
    ("server", "INTERNAL_IP4_SERVER is not supported"),
    ("subnet", "INTERNAL_IP4_SUBNET is not supported"),
    ("split_include", "split tunnelling attributes are not supported: use the child's local_ts"),
    ("split_exclude", "split tunnelling attributes are not supported: use the child's local_ts"),
)
# strongSwan caps nothing here; a /64 pool is fine (offsets are integers), but a /0 is a mistake
_MIN_PREFIX = {4: 8, 6: 64}


def _parse_addrs(text: str) -> tuple[IPAddress, IPAddress]:
    text = text.strip()
    if text.lower() in ("dhcp", "radius"):
        raise BadValue(f"addrs = {text} is not supported: write a subnet (10.3.0.0/24) or a range (a-b)")
    try:
        pool = PoolConfig.parse_addrs("_", text)
    except ValueError:
        raise BadValue(f"not a subnet (10.3.0.0/24) or an address range (a-b): {show_value(text)}") from None
    if "/" in text and ipaddress.ip_network(text, strict=False).prefixlen < _MIN_PREFIX[pool.version]:
        raise BadValue(f"{text} is too large a pool (at most /{_MIN_PREFIX[pool.version]})")
    if pool.first.is_unspecified or pool.first.is_multicast or pool.last.is_multicast or pool.first.is_loopback:
        raise BadValue(f"{text} holds unspecified, loopback or multicast addresses")
    return pool.first, pool.last


def _parse_dns(text: str) -> tuple[IPAddress, ...]:
    out: list[IPAddress] = []
    for item in (i.strip() for i in text.split(",")):
        try:
            out.append(ipaddress.ip_address(item))
        except ValueError:
            raise BadValue(f"not an IPv4 or IPv6 address: {show_value(item)}") from None
    return tuple(out)


def read_pools(section: Section, issues: list[ConfigIssue]) -> tuple[PoolConfig, ...]:
    refuse_keys(section, issues, "pools takes one section per pool ('NAME { addrs = ... }'), not keys")
    pools: list[PoolConfig] = []
    for name, sub in section.sections.items():
        r = SectionReader(sub, issues)
        addrs = r.require("addrs", _parse_addrs)
        dns: tuple[IPAddress, ...] = r.get("dns", _parse_dns, ())
        for key, why in _REFUSED:
            r.get(key, refuse(why), None)
        r.finish()
        if addrs is None:
            continue
        pool = PoolConfig(name, addrs[0], addrs[1], dns)
        for other in pools:
            if other.version == pool.version and int(pool.first) <= int(other.last) \
                    and int(other.first) <= int(pool.last):
                r.error("addrs", f"overlaps pool {other.name} ({other.first}-{other.last})")
                break
        else:
            pools.append(pool)
    return tuple(pools)


def pool_ts_warnings(connections: Sequence[Connection], pools: Sequence[PoolConfig]) -> list[ConfigIssue]:
    """A child of a connection with ``pools`` whose fixed remote_ts overlaps one of them: every
    client could claim the others' virtual IPs through it.  Safe all the same (the gateway cuts the
    pools out of a client's remote selectors but for its own lease, exchanges/child.py
    outside_others_leases), but not what was meant: a client's remote side is its lease (dynamic)."""
    by_name = {p.name: p for p in pools}
    out = []
    for c in connections:
        spans = [(name, Ts(net.network_address, net.broadcast_address))
                 for name in c.ike.pools if (pool := by_name.get(name)) is not None for net in pool.networks()]
        for child in c.children:
            for ts in child.config.remote_ts:
                for name, span in spans:
                    if ts.dynamic or ts.intersect(span) is None:
                        continue
                    key = f"connections.{c.name}.children.{child.name}.remote_ts"
                    out.append(ConfigIssue(
                        child.file or c.file, child.line or c.line, key,
                        f"{ts} overlaps pool {name} ({by_name[name].first}-{by_name[name].last}): a client would hold "
                        f"the other clients' virtual IPs; tunsec gives each client only its own lease of the pool "
                        f"(and the rest of {ts}); for road warriors use remote_ts = dynamic"))
    return out + _other_pools_warnings(connections, pools)


def _other_pools_warnings(connections: Sequence[Connection], pools: Sequence[PoolConfig]) -> list[ConfigIssue]:
    """A child of a connection of %any without pools (a group PSK's sites, a CA's certificates)
    whose remote_ts overlaps a pool: any of its clients may claim pool addresses before the road
    warriors they are leased to, whose Child SAs are then narrowed around them or refused (the
    selector claims keep the first holder's: policy/claims.py).  Warned, not refused: the
    administrator gave those clients that range (a hub's spoke routing 0.0.0.0/0 is one), and
    cutting the pools out of it would narrow or refuse sites that never asked for pool addresses."""
    out = []
    spans = [(p, Ts(net.network_address, net.broadcast_address)) for p in pools for net in p.networks()]
    for c in connections:
        if c.ike.pools or c.ike.names_its_peer:
            continue
        for child in c.children:
            for ts in child.config.remote_ts:
                for pool, span in spans:
                    if ts.dynamic or ts.intersect(span) is None:
                        continue
                    out.append(ConfigIssue(
                        child.file or c.file, child.line or c.line,
                        f"connections.{c.name}.children.{child.name}.remote_ts",
                        f"{ts} overlaps pool {pool.name} ({pool.first}-{pool.last}), and any client of this connection "
                        f"(remote id %any) may claim its addresses before the clients they are leased to, whose "
                        f"Child SAs are then refused: narrow remote_ts, or name each peer (remote.id)"))
    return out
