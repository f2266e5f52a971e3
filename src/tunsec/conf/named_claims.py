"""What a connection that names its peer claims for it: its children's configured selectors.

One model for the two places that need it: the IKE service's claims while the named peer's Child SA is
down (services/ike/configured_claims.py, review revlan F1) and the load's warning about a connection of
%any that asks for them (conf/named_overlap.py, review revtrap F2).

A child's selectors are resolved as the trap policies are (traps.install_traps: ``dynamic`` as the
connection's addresses, left out where the address is %any) and its full tunnel is left out
(policy/full_tunnel.py without_full_tunnel: the default route through that peer is no network of its,
as ike/address_role.py counts it for none; claimed while down, it would refuse every road warrior's
lease and spoke toward the same local side).

A remote selector that meets the address pool of a connection that leases it toward a local side that
meets the child's (:class:`PoolSide`) is left out of the claim while down (``pools``): a named spoke's
wide remote_ts (10.0.0.0/8, its part chosen at negotiation) is no claim on the road warriors' leases in
it (review revtrap F5); a pool whose clients reach other local networks is no reason (review revlate3
remark: any pool was); nor is a pool a reason to drop the child's other networks (review revlate3 F1).
What the named peer's Child SAs hold they claim, as before h/fixtrap.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunsec.policy.claims import locals_meet
from tunsec.policy.full_tunnel import without_full_tunnel
from tunsec.policy.selector import Ts

if TYPE_CHECKING:
    from tunsec.conf.connections import Connection
    from tunsec.policy.pools import PoolConfig


@dataclass(frozen=True, slots=True)
class PoolSide:
    """One connection's address pools (as selectors) and the local selectors its clients' Child SAs hold."""

    conn: str
    pools: tuple[tuple[str, Ts], ...]   # (pool name, one of its networks)
    local: tuple[Ts, ...]   # every child's local_ts: a client may use any of them


def pool_spans(pools: Iterable[PoolConfig]) -> dict[str, tuple[Ts, ...]]:
    """Each pool's networks as selectors, by name."""
    return {p.name: tuple(Ts(n.network_address, n.broadcast_address) for n in p.networks()) for p in pools}


def pool_sides(connections: Iterable[Connection], spans: Mapping[str, Sequence[Ts]]) -> list[PoolSide]:
    """The connections that lease addresses from the pools (``spans``: pool_spans), each with its local side."""
    out = []
    for c in connections:
        mine = tuple((name, t) for name in c.ike.pools for t in spans.get(name, ()))
        if mine:
            out.append(PoolSide(c.name, mine, tuple(t for ch in c.ike.children for t in ch.local_ts)))
    return out


def configured_selectors(conn: Connection, pools: Sequence[PoolSide] = ()
                         ) -> Iterator[tuple[str, tuple[Ts, ...], tuple[Ts, ...]]]:
    """Each child of ``conn`` (named) with its remote and local selectors as claimed while it is down
    (the module's docstring); with no ``pools``, what its Child SAs may hold when up."""
    ike = conn.ike
    for ch in ike.children:
        local = _resolved(ch.local_ts, ike.local_addr)
        remote = tuple(t for t in without_full_tunnel(_resolved(ch.remote_ts, ike.remote_addr))
                       if t.dynamic or not _leased(t, local, pools))
        if remote:
            yield ch.name, remote, local


def _leased(t: Ts, local: Sequence[Ts], pools: Sequence[PoolSide]) -> bool:
    """Whether ``t`` meets a pool whose clients' Child SAs hold a local side that meets ``local``."""
    return any(t.intersect(span) is not None for side in pools if locals_meet(side.local, local)
               for _, span in side.pools)


def _resolved(selectors: Iterable[Ts], addr: str | None) -> tuple[Ts, ...]:
    """``selectors`` with ``dynamic`` as ``addr``, left out where that is unknown (or no address)."""
    out = []
    for t in selectors:
        try:
            r = t.resolve(addr)
        except ValueError:
            continue
        if r is not None:
            out.append(r)
    return tuple(out)
