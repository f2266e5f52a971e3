"""The load's warning about a connection of %any that asks for a named connection's networks.

A connection that names its peer holds its children's configured selectors for that peer while
they are down too (services/ike/configured_claims.py, review revlan F1), and what its Child SAs hold
while up: a peer of a connection of %any (a hub's spokes with a group PSK, a CA's certificates, road
warriors) is refused those networks (a site), or narrowed around them (a connection with pools), and
what this host starts on such a connection is proposed without them.  Warned, not refused, as the
manual tunnels' and pools' overlaps are (conf/manual.py, conf/pools.py): a hub routing 10.0.0.0/8 to
its spokes beside one named site of it is a setup that works, the named site's network excepted.

What is compared is what the claims hold (conf/named_claims.py configured_selectors: a ``dynamic``
remote_ts as the named peer's address, a full tunnel left out) with what the %any connection's peers
ask for: its fixed remote_ts, and its pools' addresses (its clients ask for their lease, ``dynamic``):
a named remote selector that lies within a pool is leased addresses whatever part of it the named peer
negotiates, and its Child SA, while up, refuses them to the road warriors (review revtrap F2).  The
named side's selectors are sorted by first address once per local side, and each %any child's looked up
by bisection in those of the local sides its own meets (review revtrap remark: a pass over every named
child per %any child took 4.9 s at 2,000 x 1,000, now 0.05 s); named children with the same selectors
are one entry (a hub's named spokes sharing one wide remote_ts).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunsec.conf.errors import ConfigIssue
from tunsec.conf.named_claims import configured_selectors, pool_spans
from tunsec.policy.claims import locals_meet
from tunsec.policy.selector import Ts

if TYPE_CHECKING:
    from tunsec.conf.connections import Child, Connection
    from tunsec.policy.pools import PoolConfig


@dataclass(frozen=True, slots=True)
class _Named:
    """One remote selector of a named connection's child, with that child's local selectors."""

    conn: Connection
    child: Child
    ts: Ts
    local: tuple[Ts, ...]

    @property
    def shown(self) -> str:
        """The selector as the warning names it (a ``dynamic`` one resolved: said so)."""
        return str(self.ts) if self.ts in self.child.config.remote_ts else f"{self.ts} (its dynamic remote_ts)"


class _Index:
    """The named children's remote selectors toward one local side, by family, sorted by first address,
    with the furthest last address reached up to each (a lookup walks back from the bisection only while
    that reaches it)."""

    def __init__(self, entries: Sequence[_Named]) -> None:
        self._by: dict[int, tuple[list[int], list[int], list[int], list[_Named]]] = {}
        for version in (4, 6):
            mine = sorted((e for e in entries if e.ts.version == version), key=lambda e: int(e.ts.start))
            reach, top = [], -1
            for e in mine:
                top = max(top, int(e.ts.end))
                reach.append(top)
            self._by[version] = ([int(e.ts.start) for e in mine], [int(e.ts.end) for e in mine], reach, mine)

    def first(self, want: Ts, inside: bool) -> _Named | None:
        """The first named selector ``want`` overlaps (``inside``: that lies within ``want``)."""
        starts, ends, reach, entries = self._by[want.version]
        lo = int(want.start)
        i = bisect.bisect_right(starts, int(want.end)) - 1
        while i >= 0 and reach[i] >= lo:
            common = want.intersect(entries[i].ts) if ends[i] >= lo else None
            if common is not None and (not inside or common == entries[i].ts):
                return entries[i]
            i -= 1
        return None


class _Sides:
    """An :class:`_Index` per local side of the named children (a gateway has few: its LANs), so a %any
    child toward another local side passes theirs by at once."""

    def __init__(self, entries: Sequence[_Named]) -> None:
        by_local: dict[tuple[Ts, ...], list[_Named]] = {}
        for e in entries:
            by_local.setdefault(e.local, []).append(e)
        self._sides = [(local, _Index(mine)) for local, mine in by_local.items()]

    def first(self, want: Ts, local: Sequence[Ts], inside: bool = False) -> _Named | None:
        """The first named selector ``want`` overlaps (``inside``: that lies within ``want``) toward local
        selectors that meet ``local``."""
        for theirs, index in self._sides:
            if locals_meet(local, theirs) and (found := index.first(want, inside)) is not None:
                return found
        return None


def named_overlap_warnings(connections: Sequence[Connection], pools: Sequence[PoolConfig] = ()) -> list[ConfigIssue]:
    """A child of a connection of %any whose fixed remote_ts overlaps what a named connection's child claims,
    or one of whose connection's pools holds all of such a remote selector, toward local_ts that meet (one
    warning per child and kind: the first found).  A ``dynamic`` remote_ts of the %any side is its peer's
    address (or lease): not compared.  A pool that is only part of a wider named remote_ts is not warned
    about: the named peer chooses its part of it (a hub's named spokes in 10.0.0.0/8 beside road warriors
    leased 10.3.0.x, review revtrap F5), and only what it negotiates is its while up."""
    index = _named_index(connections)
    if index is None:
        return []
    spans = pool_spans(pools)
    out = []
    for c in connections:
        if c.ike.names_its_peer:
            continue
        leases = [(name, t) for name in c.ike.pools for t in spans.get(name, ())]
        for child in c.children:
            local = child.config.local_ts
            fixed = ((t, index.first(t, local)) for t in child.config.remote_ts if not t.dynamic)
            if (hit := next(((t, n) for t, n in fixed if n is not None), None)) is not None:
                out.append(_remote_ts_warning(c, child, *hit))
            leased = ((name, t, index.first(t, local, inside=True)) for name, t in leases)
            if (found := next(((name, t, n) for name, t, n in leased if n is not None), None)) is not None:
                out.append(_pool_warning(c, child, *found))
    return out


def _named_index(connections: Sequence[Connection]) -> _Sides | None:
    """What the named children claim (with their Child SAs up: no pool left out), one entry per
    distinct (selector, local side); None if no connection names its peer."""
    seen: dict[tuple[Ts, tuple[Ts, ...]], _Named] = {}
    for c in connections:
        if not c.ike.names_its_peer:
            continue
        children = {ch.name: ch for ch in c.children}
        for name, remote, local in configured_selectors(c):
            for t in remote:
                seen.setdefault((t, local), _Named(c, children[name], t, local))
    return _Sides(list(seen.values())) if seen else None


def _remote_ts_warning(c: Connection, child: Child, mine: Ts, named: _Named) -> ConfigIssue:
    what = ("its clients are narrowed around them" if c.ike.pools
            else "a peer asking for them is refused (TS_UNACCEPTABLE)")
    return ConfigIssue(
        child.file or c.file, child.line or c.line, f"connections.{c.name}.children.{child.name}.remote_ts",
        f"{mine} overlaps {named.shown}, the remote_ts of connection {named.conn.name}'s child {named.child.name}, "
        f"which names its peer ({named.conn.ike.remote.id}), toward local_ts that meet: those networks are that "
        f"peer's, also while its Child SA is down, and this connection's peers (remote id %any) may not take them: "
        f"{what}, and what this host starts here is proposed without them; leave them out of remote_ts, or name "
        "the peer (remote.id)")


def _pool_warning(c: Connection, child: Child, pool: str, span: Ts, named: _Named) -> ConfigIssue:
    return ConfigIssue(
        c.file, c.line, f"connections.{c.name}.pools",
        f"pool {pool} ({span}), whose addresses this connection's clients (remote id %any) lease toward the "
        f"local_ts of its child {child.name}, overlaps {named.shown}, the remote_ts of connection "
        f"{named.conn.name}'s child {named.child.name}, which names its peer ({named.conn.ike.remote.id}), toward "
        "local_ts that meet: while that peer's Child SA is up those addresses are its, and a client leased one of "
        "them has its Child SA refused (TS_UNACCEPTABLE); take the pool out of that remote_ts, or that remote_ts "
        "out of the pool")
