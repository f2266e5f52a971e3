"""Which peer holds which traffic selectors on a gateway (DESIGN.md "Ownership").

Every Child SA's outbound PROTECT policies sit in one SPD at one priority band, and the fast path
takes the older of two equal-priority policies that both match: a peer whose selectors overlap
another peer's would draw traffic meant for that one (its policy first), and its inbound SA would
admit packets with that one's addresses as source toward the same local hosts.  strongSwan installs
both and leaves the choice to the kernel, whose policy priorities prefer the longer prefix: that
hides part of the overlap only (not the addresses the other peer does not hold a longer prefix for).
Here every Child SA is checked with :meth:`TsClaims.overlaps`, whichever side asked for it: a
responder before it accepts the selectors (exchanges/child.py responder_select, rekey_select, _not_others:
IKE_AUTH, a new Child SA or a rekey in CREATE_CHILD_SA) refuses one that overlaps what another peer holds, or
for a road warrior narrows it to the rest; an initiator checks the selectors the peer chose in its
answer (answer_not_others: IKE_AUTH and CREATE_CHILD_SA, new or rekey), and refuses and deletes a
Child SA that overlaps (an answer cannot be narrowed).  A rekey keeps the selectors of the Child SA
it replaces, whichever side asks (rekey_select, rekey_answer): its lineage's policies, which it takes
over, act on those, and its claims must cover them.  The IKE service's backstop checks each
Child SA again as it books it, for the negotiations of one batch that could not see each other.

An overlap is one in both directions: the remote selectors intersect AND the local selectors
intersect (any pair of each; a policy is a pair of one local and one remote selector, and matches a
packet on both its addresses).  Two partners of one connection of %any behind the same RFC 1918
subnet, each reaching a local subnet of its own, are told apart by the SPD (a packet from one local
subnet matches that partner's policies only) and both are up.  Each one's inbound SA then admits
the other's remote addresses as source, toward its own local subnet only: that is no theft, as
those packets reach only hosts the administrator gave this peer, whose answers go back to it (no
other peer holds a policy toward them), and the numbers are this peer's network's as much as the
other's (overlapping private ranges are two networks that share numbers); toward the other's local
subnet its SA admits nothing.  Road warriors of a pool connection normally share the connection's
local_ts (what they propose is narrowed to it), so between them the remote side decides, as before.

A peer is its authenticated identity *and how it was proven* (:class:`Peer`: IkeConfig.lease_proof,
as a lease is keyed, policy/pools.py): the IDi "alice" of a group-PSK connection's client is the
word of whoever holds that PSK, not the EAP user alice, and may no more hold her virtual IP than
a client calling itself "eve" may (review reveapfix F1).  The same peer may overlap itself (rekeys,
reauthentication make-before-break, a client back with or without INITIAL_CONTACT, a second
IKE SA under ``unique = no``); every other peer may not (the SPD is one for all of them),
unless both peers' connections name their peer and give it these very selectors as written
(IkeConfig.assigns): then the administrator gave the same selectors to two named peers, a primary
and a backup gateway of one site, and both may be up (the older's policies carry the traffic; when
it goes, the other's).  A named peer that chose its part of a wider remote_ts (a hub's spokes)
is held to the rule like any other.  "The same peer" is the identity, its proof and whether its
connection names it (``by_name``), not whether each child was given its selectors as written: a
named spoke's second child, chosen from a wide remote_ts, may overlap its first.
A peer of a connection of %any (road warriors, EAP users, a CA's certificates) is none the
administrator named: it never overlaps another identity's selectors, named or not.  The IKE
service adds each Child SA's remote and local selectors when it books it (ChildSaUp) and removes
them when it forgets it.

A connection that names its peer claims its children's configured selectors for that peer from
its load until a reload stops naming them (services/ike/configured_claims.py, ``configured``): a peer
of a connection of %any (a hub's spoke) may not take a named site's network while the site's Child SA
is down (review revlan F1).  Such a claim binds only peers whose connection does not name them.

A manual tunnel's networks are claimed too (services/manual_claims.py), under an owner no IKE peer
equals (:func:`manual_owner`: its proof ``manual`` is no IkeConfig.lease_proof), for as long as the
configuration names the tunnel, installed or not: its policies' band comes first outbound, but an
IKE peer holding the same network would admit its addresses inbound, and take its traffic whenever
the manual policies are out (a reload replacing them, a worker refusing them: review revreload F2).

Lookups bisect a list sorted by the remote selectors' start address, widened by the widest
selector held, and filter what they find by the local selectors: a gateway of road warriors holds
host selectors, and a claim is found without a pass over every client.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections import Counter
from collections.abc import Sequence

from tunsec.immutable import immutable
from tunsec.policy.full_tunnel import default_routes
from tunsec.policy.held import Held
from tunsec.policy.selector import IPAddress, IPNetwork, Ts


@immutable(slots=True)   # one per remote selector of every Child SA
class Claim:
    """One remote selector of one Child SA (its handle in the IKE service), with the Child SA's
    local selectors (all of them: any one may pair with this remote one in a policy)."""

    handle: int
    conn: str
    peer: object   # the authenticated identity and its proof (Peer), compared with ==
    ts: Ts
    local: tuple[Ts, ...] = ()   # none known: meets every local selector
    named: bool = False   # its connection names its peer and gave it these selectors (IkeConfig.assigns)
    by_name: bool = False   # its connection names its peer (IkeConfig.names_its_peer), whatever selectors
    # a named connection's configured selectors, held while no Child SA of it is up (configured_claims.py):
    # binding on peers of connections that do not name theirs only
    configured: bool = False


@immutable(slots=True)   # two per Child SA set up
class Peer:
    """Whose selectors a claim is: the identity a peer proved (an Identity; its address text if none)
    and how (``proof``: IkeConfig.lease_proof, e.g. ``eap-mschapv2``, ``psk branches``)."""

    id: object
    proof: str

    @property
    def tag(self) -> int:   # an unproven identity's (_as_named)
        return getattr(self.id, "tag", 0)

    def __str__(self) -> str:
        return f"{self.id} ({self.proof})"


# How a manual tunnel's claims are proven: no IKE peer is (IkeConfig.lease_proof is an auth method, or
# "psk CONNECTION"), so no IKE Child SA is ever the same peer as a manual tunnel.
MANUAL_PROOF = "manual"
# What a manual tunnel's claims name as their connection, before its name: with a space, which no
# connection's name has (conf/syntax.py), so a "tunnel" role (ike/address_role.py) is never an IKE one's
MANUAL_CONN = "manual tunnel "


def manual_owner(name: str) -> tuple[str, Peer]:
    """The connection and peer manual tunnel ``name``'s claims are booked under."""
    return MANUAL_CONN + name, Peer(name, MANUAL_PROOF)


def is_manual(claim: Claim) -> bool:
    """Whether ``claim`` is a manual tunnel's (manual_owner), not an IKE Child SA's."""
    return isinstance(claim.peer, Peer) and claim.peer.proof == MANUAL_PROOF


def holder(conn: str) -> str:
    """Who holds a claim of connection ``conn``, for a message: "connection NAME", or "manual tunnel NAME"."""
    return conn if conn.startswith(MANUAL_CONN) else f"connection {conn}"


_Entry = tuple[int, int, Claim]   # (first address, last address, the claim), as integers

# A claim spanning at least this many addresses (a /24 of IPv4) is kept in a list searched in
# full; the narrow ones (a road warrior's lease, small subnets) are bisected, looking back from a
# selector's first address only as far as the widest narrow claim held now reaches (0 for a
# gateway of leases: one bisect): one wide claim (a site's 0.0.0.0/0) does not turn every lookup
# among thousands of clients into a pass over all of them, neither while it is held nor after.
WIDE = 256


class TsClaims:
    """Remote selectors held by Child SAs, searchable by address range."""

    def __init__(self) -> None:
        # by family: the narrow entries sorted by first address, and beside them those addresses
        # alone (bisected without a key function: a lookup per Child SA set-up, two with the
        # backstop); the wide ones unsorted
        self._entries: dict[int, list[_Entry]] = {4: [], 6: []}
        self._starts: dict[int, list[int]] = {4: [], 6: []}
        self._wide: dict[int, list[_Entry]] = {4: [], 6: []}
        # by family: how many narrow claims span each width (last - first), and the widest of them
        self._widths: dict[int, Counter[int]] = {4: Counter(), 6: Counter()}
        self._reach: dict[int, int] = {4: 0, 6: 0}
        self._by_handle: dict[int, list[_Entry]] = {}

    def __len__(self) -> int:
        return len(self._by_handle)

    def add(self, handle: int, conn: str, peer: object, selectors: Sequence[Ts], local: Sequence[Ts],
            named: bool = False, by_name: bool | None = None, configured: bool = False) -> None:
        """Child SA ``handle`` holds remote ``selectors`` toward ``local`` ones (``by_name``: None is ``named``;
        ``configured``: a named connection's configured child, services/ike/configured_claims.py)."""
        mine = tuple(local)
        named, by_name = _as_named(peer, named, by_name)
        known = named if by_name is None else by_name
        # (an address's _ip is int() of it without its __int__ frame)
        entries = [(t.start._ip, t.end._ip, Claim(handle, conn, peer, t, mine, named, known, configured))  # type: ignore[union-attr]
                   for t in selectors if not t.dynamic]
        self.remove(handle)
        self._by_handle[handle] = entries
        for e in entries:
            fam = e[2].ts.version
            if e[1] - e[0] + 1 >= WIDE:
                self._wide[fam].append(e)
                continue
            starts = self._starts[fam]
            i = bisect.bisect_right(starts, e[0])
            starts.insert(i, e[0])
            self._entries[fam].insert(i, e)
            self._widths[fam][e[1] - e[0]] += 1
            self._reach[fam] = max(self._reach[fam], e[1] - e[0])

    def share(self, handle: int, other: int) -> None:
        """``other`` holds what ``handle`` holds too (what it held before goes), until removed."""
        if entries := self._by_handle.get(handle):
            c = entries[0][2]
            self.add(other, c.conn, c.peer, [e[2].ts for e in entries], c.local, c.named, c.by_name, c.configured)

    def clear(self) -> None:
        for fam in self._entries:
            self._entries[fam].clear()
            self._starts[fam].clear()
            self._wide[fam].clear()
            self._widths[fam].clear()
            self._reach[fam] = 0
        self._by_handle.clear()

    def remove(self, handle: int) -> None:
        for e in self._by_handle.pop(handle, ()):
            fam = e[2].ts.version
            if e[1] - e[0] + 1 >= WIDE:
                self._wide[fam].remove(e)
                continue
            starts, entries = self._starts[fam], self._entries[fam]
            i = bisect.bisect_left(starts, e[0])
            while i < len(starts) and starts[i] == e[0]:
                if entries[i] is e:   # among the claims starting there (other peers', ports, protocols)
                    del starts[i]
                    del entries[i]
                    self._narrow_gone(fam, e[1] - e[0])
                    break
                i += 1

    def _narrow_gone(self, fam: int, width: int) -> None:
        widths = self._widths[fam]
        widths[width] -= 1
        if not widths[width]:
            del widths[width]
            if width == self._reach[fam]:   # the widest went: at most WIDE widths to look at
                self._reach[fam] = max(widths, default=0)

    def overlaps(self, peer: object, selectors: Sequence[Ts], local: Sequence[Ts],
                 named: bool = False, by_name: bool | None = None) -> list[tuple[Claim, Ts]]:
        """The claims of other peers that remote ``selectors`` overlap, with local ones that meet
        ``local``, each with the overlap of the remote selectors; ``named``: the asking peer's
        connection names it and gave it these selectors as written, and so may share them with other
        such peers; ``by_name``: its connection names it (None: ``named``).  A claim of the same
        identity is another peer's all the same if one connection names it and the other does not
        (an EAP user or a CA's certificate that merely bears a site's name); of one named twice it
        is the peer's own, whichever selectors each child was given (a spoke's second child that
        chose from a wide remote_ts beside a first one given as written).  A configured claim (a named
        connection's child, services/ike/configured_claims.py) binds only a peer whose connection does
        not name it: among named peers the Child SAs decide, as before (a primary and a backup, spokes
        choosing their parts of one wide remote_ts)."""
        found: list[tuple[Claim, Ts]] = []
        named, by_name = _as_named(peer, named, by_name)
        by_name = named if by_name is None else by_name
        for want in selectors:
            fam = want.version
            first, last = want.start._ip, want.end._ip  # type: ignore[union-attr]
            starts, entries = self._starts[fam], self._entries[fam]
            near = entries[bisect.bisect_left(starts, first - self._reach[fam]):bisect.bisect_right(starts, last)]
            for e in (near + self._wide[fam] if self._wide[fam] else near):
                start, end, claim = e
                if end < first or start > last or (named and claim.named) or (claim.configured and by_name) or \
                        (claim.peer == peer and claim.by_name == by_name):
                    continue
                common = want.intersect(claim.ts)
                if common is not None and locals_meet(claim.local, local):
                    found.append((claim, common))
        return found


    def containing(self, ip: IPAddress) -> list[tuple[Claim, list[Ts], set[IPNetwork]]]:
        """The claims whose remote selector holds ``ip``, each with every remote selector its peer
        holds on its connection (all its Child SAs) and the networks of those that are a full tunnel
        (default_routes; one list and one set per peer, shared by its claims: ike/address_role.py
        asks of a virtual IP or REDIRECT target a client is given, and of every MOBIKE move or NAT
        float of an authenticated peer, and makes neither again per claim, review revcost F3).  Each
        Child SA's selectors come widened across the gaps between them that other peers' claims hold
        (:meth:`_widened`): a full tunnel we proposed without a manual tunnel's network
        (exchanges/child.py outside_others_claims) is a full tunnel still.  The claim itself comes
        widened only when its peer's widened selectors are a full tunnel and its widened range is
        part of it (review revclaims3 F2: a spoke's 10.0.0.0/24 beside another's 10.0.1.0/24 stays
        a /24, the network its policy routes).  Cost: the claims found, one pass over the Child SAs,
        one pass over all claims per peer found that has two selectors of one kind in a Child SA
        (review revfull4 F3), a bisect per gap, and the networks of each peer's selectors found once
        (its full tunnel decided on their address intervals, policy/full_tunnel.py)."""
        fam, at = ip.version, int(ip)
        starts, entries = self._starts[fam], self._entries[fam]
        near = entries[bisect.bisect_left(starts, at - self._reach[fam]):bisect.bisect_right(starts, at)]
        found = [e[2] for e in near + self._wide[fam] if e[0] <= at <= e[1]]
        if not found:
            return []
        # each peer's Child SAs, in one pass over them (not one per peer found: review revfull4 F3)
        handles: dict[tuple[str, object], list[int]] = {}
        for handle, held in self._by_handle.items():
            if held:
                handles.setdefault((held[0][2].conn, held[0][2].peer), []).append(handle)
        asked: dict[tuple[str, object], tuple[list[Ts], set[IPNetwork]]] = {}   # per peer: its pieces, its full tunnel
        # per peer and selector found: the selector the claim comes as (a peer's Child SAs often hold the
        # same selectors: its pieces searched and their networks made once each, review revcost F3)
        shown: dict[tuple[str, object, Ts], Ts] = {}
        out = []
        for c in found:
            known = asked.get((c.conn, c.peer))
            if known is None:
                known = asked[c.conn, c.peer] = self._peer_widened(handles.get((c.conn, c.peer), []))
            pieces, full = known
            ts = shown.get((c.conn, c.peer, c.ts))
            if ts is None:
                own = next((ts for ts in pieces if ts.contains(c.ts)), c.ts)
                ts = shown[c.conn, c.peer, c.ts] = own if set(own.networks()) <= full else c.ts
            out.append((c if ts == c.ts else dataclasses.replace(c, ts=ts), pieces, full))
        return out

    def _peer_widened(self, mine: list[int]) -> tuple[list[Ts], set[IPNetwork]]:
        """Every Child SA ``mine`` of a peer on a connection widened (each once), across what the
        others hold (the peer's own Child SAs are no others: what it holds itself joins nothing),
        and the networks of them that are a full tunnel (default_routes), if any.  Only a Child SA
        with two pieces of one kind can be widened (_widened joins only those): the others' claims
        are merged (a pass over all claims) only for such a peer, so peers that split a subnet by
        ports or protocol cost their own claims only (review revfull4 F3)."""
        if not any(_joinable(self._by_handle[handle]) for handle in mine):
            pieces = [ts for handle in mine for ts in sorted((e[2].ts for e in self._by_handle[handle]), key=_order)]
        else:
            skip = set(mine)
            others = Held.of((e[0], e[1], e[2].ts) for handle, held in self._by_handle.items() if handle not in skip
                             for e in held)
            pieces = [ts for handle in mine for ts in _widened([e[2].ts for e in self._by_handle[handle]], others)]
        return pieces, default_routes([net for ts in pieces for net in ts.networks()])


def _order(t: Ts) -> tuple[int, int, int, int, int]:
    """Selectors by kind (version, protocol, ports), then address: as _widened goes through them."""
    return t.version, t.protocol, t.start_port, t.end_port, int(t.start)


def _joinable(held: Sequence[_Entry]) -> bool:
    """Two of a Child SA's claims are of one kind (version, protocol, ports): _widened may join them."""
    kinds = {(e[2].ts.version, e[2].ts.protocol, e[2].ts.start_port, e[2].ts.end_port) for e in held}
    return len(kinds) < len(held)


def _widened(held: Sequence[Ts], others: Held) -> list[Ts]:
    """A Child SA's remote selectors ``held``, two of them (of one protocol and ports) joined where the
    addresses between them are all held by ``others`` for that traffic: what was cut out of a proposal
    or an answer for others' sake (0.0.0.0/0 without a manual tunnel's 10.2.2.0/24 is 0.0.0.0/0 again;
    not without a claim of its tcp/22 only, whose other traffic is nobody's: review revclaims3 F4)."""
    pieces = sorted(held, key=_order)
    out: list[Ts] = []
    for ts in pieces:
        last = out[-1] if out else None
        if last is not None and (last.version, last.protocol, last.start_port, last.end_port) == \
                (ts.version, ts.protocol, ts.start_port, ts.end_port) and \
                others.holds(ts, int(last.end) + 1, int(ts.start) - 1):
            if int(ts.end) > int(last.end):
                out[-1] = dataclasses.replace(last, end=ts.end)
            continue
        out.append(ts)
    return out


def _as_named(peer: object, named: bool, by_name: bool | None) -> tuple[bool, bool | None]:
    """An unproven identity (an eap-radius client whose RADIUS server proved no user: its ``tag``)
    shares nothing as a named peer would, whatever its connection names: it only bears the name."""
    if getattr(peer, "tag", 0):
        return False, False
    return named, by_name


def locals_meet(held: Sequence[Ts], wanted: Sequence[Ts]) -> bool:
    """Whether two Child SAs' local selectors share a packet's local side: some pair intersects.
    None known on either side, or one still ``dynamic`` (never booked so), is taken as meeting:
    an unknown local side is no reason to let a remote overlap pass."""
    if not held or not wanted or any(t.dynamic for t in held) or any(t.dynamic for t in wanted):
        return True
    return any(h.intersect(w) is not None for h in held for w in wanted)


def describe(found: Sequence[tuple[Claim, Ts]]) -> str:
    """What overlaps of :meth:`TsClaims.overlaps` mean, for a log line: the first one, and how many more."""
    claim, common = found[0]
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    local = ", ".join(map(str, claim.local)) or "any"
    whose = f"{claim.conn} (" if is_manual(claim) else f"peer {claim.peer} (connection {claim.conn}, " + \
        ("configured: " if claim.configured else "")
    return f"overlaps {common} of {whose}its remote {claim.ts} local {local}){more}"
