"""Child SA negotiation shared by IKE_AUTH and CREATE_CHILD_SA.

Inbound SPIs come from ``IkeSaState.spi_allocator`` (backed by GETSPI in the IKE service);
each ``ChildSa`` is registered in ``st.children`` as soon as its SPI is
allocated, so that a failure anywhere reports ``SpiUnused`` for it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from tunsec.dataplane.pipe import MAX_SELECTORS
from tunsec.immutable import immutable
from tunsec.loglimit import suffix
from tunsec.policy.claims import Claim, Peer, describe, is_manual
from tunsec.policy.selector import IPAddress, SelectorError, TooManySelectors, check_fast_selectors, selectors_text

from ..config import ChildConfig
from ..constants import NotifyType, ProtocolId
from ..crypto import child_seed, derive_child_keys
from ..events import ChildSaUp, NegotiationFailed, SpiUnused
from ..message import Payload, Proposal, SaPayload, TsPayload
from ..peer_logs import Line
from ..proposals import ProposalSpec, Suite, accepts, describe_all, select_proposal
from ..state import ChildSa, IkeSaState
from ..ts import Ts, any_of_family, from_wire, narrow, resolve_each, to_wire

log = logging.getLogger(__name__)


def spi_bytes(spi: int) -> bytes:
    return spi.to_bytes(4, "big")


def usable_spi(spi: bytes) -> bool:
    """Whether the peer's ESP SPI may be ours to send with: 0 is never sent and 1..255 are reserved
    (RFC 4303 §2.1), and the worker's SAD refuses them (csrc/sad.c): agreed to, such a Child SA failed
    only at its install (logged, deleted, and the peer tried again), after a rekey leaving the old one
    waiting for good.  Our own allocator never hands them out (random_spi_allocator, GETSPI)."""
    return int.from_bytes(spi, "big") >= 256


def new_child(st: IkeSaState, cfg: ChildConfig) -> ChildSa:
    """Allocate the inbound SPI and register the (not yet installed) Child SA."""
    spi = st.allocate_spi()
    child = ChildSa(cfg.name, st.new_child_id(), cfg, spi)
    st.children[spi] = child
    return child


def drop_child(st: IkeSaState, child: ChildSa) -> None:
    """Forget a Child SA that never came up and hand its SPI back."""
    if st.children.pop(child.spi_in, None) is not None and not child.installed:
        st.emit(SpiUnused(child.spi_in))


def local_dynamic(st: IkeSaState) -> tuple[str | IPAddress, ...]:
    """What our ``dynamic`` selectors stand for: our virtual IPs once assigned, else our IKE address."""
    if st.own_vips:
        return st.own_vips
    return (st.local_ip,) if st.local_ip is not None else ()


def remote_dynamic(st: IkeSaState) -> tuple[str | IPAddress, ...]:
    """What the peer's ``dynamic`` selectors stand for: only addresses the peer has proven are its.

    The virtual IPs we leased it; else ``st.proven_addr``, the address its IKE SA was set up
    from (the IKE_SA_INIT exchange, whose answer the peer needed to go on; kept across IKE SA
    rekeys), or the MOBIKE address that later passed the return routability check.  Never
    ``remote_addr``: an authenticated request moves that (RFC 7296 §2.23, or MOBIKE's
    UPDATE_SA_ADDRESSES before its check), and the peer holds the keys to send one from any
    spoofed source X, which would give it a Child SA for X/32: X's traffic, and X as source.
    On a connection with pools, an address inside a pool is a client's lease, so a peer without
    a lease has none there: its ``dynamic`` stands for nothing (and the Child SA is refused).
    """
    if st.peer_vips:
        return tuple(lease.address for lease in st.peer_vips)
    addr = st.proven_addr
    if addr is None:
        return ()
    if st.config.pools:
        pool = st.address_pool.holding(st.config.pools, addr) if st.address_pool is not None else "(unknown)"
        # a client may ask again and again (CREATE_CHILD_SA): its share of lines, not a line each
        if pool is not None and (held := st.peer_logs.admit(Line.NO_LEASE, st)) is not None:
            log.warning("%s: peer %s has no virtual IP and its address %s lies in pool %s: its dynamic "
                        "traffic selectors stand for nothing (Child SA refused: TS_UNACCEPTABLE)%s",
                        st.name, st.peer_id, addr, pool, suffix(held))
        if pool is not None:
            return ()
    return (addr,)


def initiator_ts(
    st: IkeSaState, cfg: ChildConfig, requesting_vips: bool = False
) -> tuple[tuple[Ts, ...], tuple[Ts, ...]]:
    """TSi and TSr to propose: our local_ts and remote_ts with ``dynamic`` filled in.

    ``requesting_vips``: IKE_AUTH with a CFG_REQUEST, where our address is not known yet.
    """
    tsr = resolve_each(cfg.remote_ts, remote_dynamic(st))
    if requesting_vips:
        # our side is the virtual IP the answer brings: which claims it meets is not known yet (the
        # answer is checked against them, answer_not_others)
        return any_of_family(cfg.local_ts, sorted({v.version for v in st.config.vips})), tsr
    tsi = resolve_each(cfg.local_ts, local_dynamic(st))
    return tsi, outside_others_claims(st, cfg, tsi, tsr)


def outside_others_claims(st: IkeSaState, cfg: ChildConfig, tsi: tuple[Ts, ...],
                          tsr: tuple[Ts, ...]) -> tuple[Ts, ...]:
    """Our proposal's TSr for a new Child SA without what others hold toward local selectors that
    meet ``tsi`` (policy/claims.py: manual tunnels, other peers), as responder_select leaves the pools
    out of a client's (outside_others_leases).  answer_not_others refuses an answer that overlaps
    them, and a responder answers within what it was offered: proposing them whole, a full tunnel
    beside a manual tunnel toward the same LAN was refused at every try (review revclaimfix F1);
    without them it comes up with the rest.  A rekey keeps its selectors and does not come here.

    Which claims are this peer's own (a reauthentication's, a second IKE SA's, which may overlap) is
    known once it is authenticated (CREATE_CHILD_SA: the same test as answer_not_others).  In
    IKE_AUTH it is not yet: only claims that cannot be its own are left out (is_surely_other), the
    rest is for the answer's check as before.  A primary and a backup named with these very
    selectors share them (``named``).  Nothing left, or too many pieces for an SA: the proposal
    goes whole, and the answer's refusal names the overlap."""
    if st.ts_claims is None or not tsi or not tsr:   # no local side known: no claim is told apart
        return tsr
    named, by_name = st.config.assigns(cfg.name, tsr), st.config.names_its_peer
    proof = st.config.lease_proof
    if st.peer_id is not None:
        found = st.ts_claims.overlaps(Peer(st.peer_id, proof), tsr, tsi, named, by_name)
    else:
        found = [(c, common) for c, common in st.ts_claims.overlaps(Peer(None, proof), tsr, tsi, named, by_name)
                 if is_surely_other(c, proof, by_name)]
    if not found:
        return tsr
    taken = [claim.ts for claim, _ in found]
    left = tuple(dict.fromkeys(p for sel in tsr for p in sel.without_all(taken)))   # one of each, in order
    if not left or len(left) > side_limit(tsr) or _unusable(tsi, left) is not None:
        return tsr
    log.info("%s child %s: proposing TSr %s, not %s: %s", st.name, cfg.name, _ts_text(left), _ts_text(tsr),
             describe(found))
    return left


def is_surely_other(claim: Claim, proof: str, by_name: bool) -> bool:
    """Whether ``claim`` is another peer's whoever answers our IKE_AUTH (proving ``proof``, on a
    connection that names its peer or not: ``by_name``): a manual tunnel's, or one no peer proven so
    is the same as (TsClaims.overlaps: the same identity, proof and ``by_name``)."""
    if is_manual(claim) or not isinstance(claim.peer, Peer):
        return True
    return claim.peer.proof != proof or claim.by_name != by_name or bool(claim.peer.tag)


def sa_payloads(
    child: ChildSa,
    proposals: Sequence[ProposalSpec],
    tsi: Sequence[Ts],
    tsr: Sequence[Ts],
    strip_dh: bool,
) -> list[Payload]:
    """SA, TSi, TSr of a Child SA request; every proposal carries our inbound SPI."""
    specs = [p.without_dh() if strip_dh else p for p in proposals]
    props = tuple(spec.to_wire(i + 1, spi_bytes(child.spi_in)) for i, spec in enumerate(specs))
    return [
        SaPayload(props),
        TsPayload(True, tuple(to_wire(t) for t in tsi)),
        TsPayload(False, tuple(to_wire(t) for t in tsr)),
    ]


def response_payloads(selection: Selection, child: ChildSa) -> list[Payload]:
    """SA (the chosen proposal with our inbound SPI), TSi, TSr of a responder."""
    chosen = selection.proposal
    ours = Proposal(chosen.num, chosen.protocol, spi_bytes(child.spi_in), chosen.transforms)
    return [
        SaPayload((ours,)),
        TsPayload(True, tuple([to_wire(t) for t in selection.tsi])),
        TsPayload(False, tuple([to_wire(t) for t in selection.tsr])),
    ]


def received_ts(payloads: Sequence[Payload]) -> tuple[tuple[Ts, ...], tuple[Ts, ...]] | None:
    """(TSi, TSr) of a message, or None when either is missing."""
    tsi: TsPayload | None = None
    tsr: TsPayload | None = None
    for p in payloads:   # one pass for both: the first TSi and the first TSr count
        if type(p) is TsPayload:
            if p.initiator:
                tsi = tsi or p
            else:
                tsr = tsr or p
    if tsi is None or tsr is None:
        return None
    return (   # (list comprehensions: a generator costs ~1k instructions more for a few items)
        tuple([from_wire(s) for s in tsi.selectors]),
        tuple([from_wire(s) for s in tsr.selectors]),
    )


@immutable   # one per Child SA request answered
class Selection:
    """What a responder agreed to for a Child SA request."""

    config: ChildConfig
    proposal: Proposal
    tsi: tuple[Ts, ...]
    tsr: tuple[Ts, ...]


@dataclass(frozen=True)
class Refusal:
    notify: NotifyType
    detail: str
    child: str | None
    claims: bool = False   # the selectors overlap what another peer holds (policy/claims.py): counted
    rekey_ts: bool = False   # a rekey whose selectors are not the rekeyed Child SA's (rekey_select): counted
    ts_limit: bool = False   # more selectors (or pairs) than an SA holds: counted, and the peer's address logged


def responder_select(
    st: IkeSaState,
    sa: SaPayload,
    tsi: Sequence[Ts],
    tsr: Sequence[Ts],
    strip_dh: bool,
    prefer_group: int | None = None,
) -> Selection | Refusal:
    """Pick the child config whose selectors fit the proposed ones best, then a proposal (a rekey:
    rekey_select).

    Of the configs whose selectors narrow to something, the best match wins (strongSwan's
    select_child_cfg: an exact match beats a config that merely covers the request, so a request
    for a /24 lands in the /24's child, not in a /16's listed first); the first of equals wins.
    """
    remote_ips, local_ips = remote_dynamic(st), local_dynamic(st)
    ts_refusal: Refusal | None = None
    too_many: Refusal | None = None   # reported before any other: it is what a peer's 255 pieces get
    best: tuple[int, ChildConfig, tuple[Ts, ...], tuple[Ts, ...]] | None = None
    configs = st.config.children
    for cfg in configs:
        remote_ts, local_ts = resolve_each(cfg.remote_ts, remote_ips), resolve_each(cfg.local_ts, local_ips)
        try:
            new_tsi = outside_others_leases(st, narrow(tsi, remote_ts, side_limit(remote_ts)))
            new_tsr = narrow(tsr, local_ts, side_limit(local_ts))
        except TooManySelectors as exc:
            too_many = too_many or Refusal(
                NotifyType.TS_UNACCEPTABLE,
                f"proposed {len(tsi)} TSi {_ts_text(tsi)} and {len(tsr)} TSr {_ts_text(tsr)}: for child "
                f"{cfg.name} (remote {_ts_text(cfg.remote_ts)} local {_ts_text(cfg.local_ts)}) {exc}",
                cfg.name, ts_limit=True)
            continue
        if not new_tsi or not new_tsr:
            ts_refusal = ts_refusal or Refusal(
                NotifyType.TS_UNACCEPTABLE,
                f"proposed TSi {_ts_text(tsi)} TSr {_ts_text(tsr)}; "
                f"child {cfg.name} allows remote {_ts_text(cfg.remote_ts)} local {_ts_text(cfg.local_ts)}"
                f"{_pool_note(st)}",
                cfg.name,
            )
            continue
        unusable = _unusable(new_tsr, new_tsi)
        if unusable is not None:
            refusal = Refusal(
                NotifyType.TS_UNACCEPTABLE,
                f"proposed TSi {_ts_text(tsi)} TSr {_ts_text(tsr)} narrow for child {cfg.name} "
                f"to TSi {_ts_text(new_tsi)} TSr {_ts_text(new_tsr)}: {unusable}",
                cfg.name, ts_limit=isinstance(unusable, TooManySelectors),
            )
            if refusal.ts_limit:
                too_many = too_many or refusal
            else:
                ts_refusal = ts_refusal or refusal
            continue
        # the score only ranks configs against each other: with one there is nothing to rank
        score = _ts_match(tsr, local_ts) + _ts_match(tsi, remote_ts) if len(configs) > 1 else 0
        if best is None or score > best[0]:
            best = (score, cfg, new_tsi, new_tsr)
    if best is None:
        return too_many or ts_refusal or Refusal(NotifyType.TS_UNACCEPTABLE, "no child configured", None)
    _, cfg, new_tsi, new_tsr = best
    mine = _not_others(st, cfg, tsi, new_tsi, new_tsr)
    if isinstance(mine, Refusal):
        return mine
    return _with_proposal(cfg, sa, mine, new_tsr, prefer_group, strip_dh)


def rekey_select(
    st: IkeSaState,
    sa: SaPayload,
    tsi: Sequence[Ts],
    tsr: Sequence[Ts],
    old: ChildSa,
    prefer_group: int | None = None,
) -> Selection | Refusal:
    """The responder's choice for the peer's rekey of ``old``: its config, and its selectors again.

    RFC 7296 §2.8: the new Child SA has the same traffic selectors as the one it replaces.  The IKE
    service books a rekey on its predecessor's reqid and policies (installs._child_registered) and
    moves the claims (policy/claims.py) to it: a rekey to other selectors would have left the old
    policies drawing traffic the peer no longer claimed, free for another peer to be given.  As
    strongSwan's child_create (reuse_ts: a rekey narrows with the old Child SA's selectors, not the
    config's), the proposal is narrowed to ``old``'s; anything but all of them, exactly, is refused
    with TS_UNACCEPTABLE (the old Child SA stays until its lifetime ends)."""
    try:
        new_tsi = outside_others_leases(st, narrow(tsi, old.remote_ts, side_limit(old.remote_ts)))
        new_tsr = narrow(tsr, old.local_ts, side_limit(old.local_ts))
    except TooManySelectors as exc:
        return Refusal(NotifyType.TS_UNACCEPTABLE,
                       f"rekey of Child SA {old.name} proposed {len(tsi)} TSi {_ts_text(tsi)} and {len(tsr)} TSr "
                       f"{_ts_text(tsr)}: {exc}", old.name, ts_limit=True)
    if set(new_tsi) == set(old.remote_ts) and set(new_tsr) == set(old.local_ts):
        mine = _not_others(st, old.config, tsi, old.remote_ts, old.local_ts)
        if isinstance(mine, Refusal):
            return mine
        new_tsi = mine
    if set(new_tsi) != set(old.remote_ts) or set(new_tsr) != set(old.local_ts):
        return Refusal(NotifyType.TS_UNACCEPTABLE,
                       f"rekey of Child SA {old.name} proposed TSi {_ts_text(tsi)} TSr {_ts_text(tsr)}, which "
                       f"narrow to TSi {_ts_text(new_tsi)} TSr {_ts_text(new_tsr)}, not its TSi "
                       f"{_ts_text(old.remote_ts)} TSr {_ts_text(old.local_ts)} (a rekey keeps them)",
                       old.name, rekey_ts=True)
    return _with_proposal(old.config, sa, old.remote_ts, old.local_ts, prefer_group, strip_dh=False)


def _with_proposal(cfg: ChildConfig, sa: SaPayload, tsi: tuple[Ts, ...], tsr: tuple[Ts, ...],
                   prefer_group: int | None, strip_dh: bool) -> Selection | Refusal:
    """The Selection of ``cfg`` with these selectors, if one of the peer's ESP proposals fits."""
    theirs = [p for p in sa.proposals if p.protocol == ProtocolId.ESP and len(p.spi) == 4]
    usable = [p for p in theirs if usable_spi(p.spi)]
    chosen = select_proposal(cfg.esp_proposals, usable, prefer_group, strip_dh)
    if chosen is None:
        reserved = f" ({len(theirs) - len(usable)} with a reserved SPI < 256)" if len(usable) < len(theirs) else ""
        return Refusal(
            NotifyType.NO_PROPOSAL_CHOSEN,
            f"received {describe_all(theirs)}{reserved}; configured {describe_all(cfg.esp_proposals)}",
            cfg.name,
        )
    return Selection(cfg, chosen, tsi, tsr)


def outside_others_leases(st: IkeSaState, selectors: Sequence[Ts]) -> tuple[Ts, ...]:
    """On a connection with ``pools``: ``selectors`` without the pools' addresses, but for the
    peer's own lease(s).  A pool address is another client's (now, or once leased), whatever
    remote_ts allows: a client holding it would draw that client's traffic and could send as it.
    strongSwan does not cut pools out (child_cfg.c get_traffic_selectors only intersects with the
    configured selectors; its kernel's longest-prefix policy order hides part of the overlap):
    a client here never holds another's address, at the price of a remote_ts = 10.3.0.0/16
    over a 10.3.0.0/24 pool giving a client its lease and 10.3.1.0-10.3.255.255 only."""
    pools = st.config.pools
    if not pools or st.address_pool is None:
        return tuple(selectors)
    vips = st.peer_vips
    # one lease (a road warrior's usual) is compared, not hashed into a set (an address's hash makes a hex text)
    own_addrs = (vips[0].address,) if len(vips) == 1 else tuple({lease.address: None for lease in vips})
    for sel in selectors:   # (a loop, not all(genexpr): no generator made and resumed per selector)
        if sel.start != sel.end or sel.start not in own_addrs:
            break
    else:
        return tuple(selectors)   # its lease(s) alone (remote_ts = dynamic): nothing of another's
    spans = st.address_pool.spans(pools)
    own = [Ts.host(address) for address in own_addrs]
    out: dict[Ts, None] = {}   # one of each, in order (a peer's 255 pieces: no list searched for each)
    for sel in selectors:
        pieces = sel.without_all(spans) + [mine for host in own if (mine := sel.intersect(host)) is not None]
        out.update(dict.fromkeys(sorted(pieces, key=lambda t: int(t.start))))
    return tuple(out)


def _not_others(st: IkeSaState, cfg: ChildConfig, proposed: Sequence[Ts], tsi: tuple[Ts, ...],
                tsr: tuple[Ts, ...]) -> tuple[Ts, ...] | Refusal:
    """The peer's remote selectors ``tsi`` without what other peers' Child SAs hold toward local
    selectors that meet ``tsr`` (policy/claims.py): with them, our policies would lose those peers'
    traffic to this one (the older of equal ones wins), and its inbound SA admit their addresses as
    source toward the same hosts.  Another peer's remote addresses toward local selectors of this
    peer's own are no overlap: the SPD tells the two apart by the local side.  A road warrior (a connection with
    pools) is narrowed to the rest, as its lease is what it came for; a site (no pools) is refused
    rather than given a part of its subnets it did not expect.  Refused too when nothing is left."""
    named = st.config.assigns(cfg.name, tsi)   # a primary and a backup of one site may share
    # the peer as the IKE service books its claims: the identity and how it was proven (claims.py)
    found = st.ts_claims.overlaps(Peer(st.peer_id, st.config.lease_proof), tsi, tsr, named, st.config.names_its_peer) \
        if st.ts_claims is not None else []
    if not found:
        return tsi
    why = describe(found)
    if st.config.pools:
        taken = [claim.ts for claim, _ in found]
        pieces = dict.fromkeys(p for sel in tsi for p in sel.without_all(taken))   # one of each, in order
        left = tuple(pieces)
        if left and _unusable(tsr, left) is None:
            # the peer may ask as often as it likes: its share of lines (review revpeerdos F3)
            held = st.peer_logs.admit(Line.NARROWED, st)
            log.log(logging.DEBUG if held is None else logging.INFO, "%s child %s: TSi of peer %s narrowed to %s: %s%s",
                    st.name, cfg.name, st.peer_id, _ts_text(left), why, suffix(held or 0))
            return left
    return Refusal(NotifyType.TS_UNACCEPTABLE,
                   f"peer {st.peer_id} proposed TSi {_ts_text(proposed)}, narrowed to {_ts_text(tsi)}, which {why}",
                   cfg.name, claims=True)


def answer_not_others(st: IkeSaState, child: ChildSa, tsi: Sequence[Ts], tsr: Sequence[Ts]) -> Refusal | None:
    """The initiator's side of _not_others: the responder chose TSr, our remote selectors, within
    what we proposed, and may have chosen another peer's part of a wide remote_ts (a hub's spokes,
    one connection per spoke).  Nothing can be narrowed in an answer: a Child SA whose TSr overlaps
    what another peer holds toward local selectors that meet ``tsi`` is refused (the caller deletes
    the half the peer installed).  The same identity (a rekey, a reauthentication) overlaps nothing;
    two connections that name their peers and give them these selectors as written may share."""
    if st.ts_claims is None:
        return None
    named = st.config.assigns(child.config.name, tsr)
    found = st.ts_claims.overlaps(Peer(st.peer_id, st.config.lease_proof), tsr, tsi, named, st.config.names_its_peer)
    if not found:
        return None
    return Refusal(NotifyType.TS_UNACCEPTABLE,
                   f"peer {st.peer_id} answered TSi {_ts_text(tsi)} TSr {_ts_text(tsr)}, whose TSr {describe(found)}",
                   child.name, claims=True)


def _pool_note(st: IkeSaState) -> str:
    """What a refusal's detail adds on a connection with pools (their addresses are not for the taking)."""
    if not st.config.pools:
        return ""
    own = ", ".join(str(lease.address) for lease in st.peer_vips) or "none"
    return f" outside pools {', '.join(st.config.pools)} but for the peer's own lease ({own})"


def _ts_match(proposed: Sequence[Ts], configured: Sequence[Ts]) -> int:
    """How well configured selectors fit the proposed ones (strongSwan's get_ts_match): an equal
    selector counts 5, an overlapping one 1, each weighted by the proposed one's rank (the first,
    e.g. the packet that triggered the request, weighs most)."""
    score = 0
    for weight, sup in zip(range(len(proposed), 0, -1), proposed, strict=True):
        for ts in configured:
            if ts == sup:
                score += 5 * weight
            elif sup.intersect(ts) is not None:
                score += weight
    return score


def check_response(
    child: ChildSa,
    sa: SaPayload,
    tsi: Sequence[Ts],
    tsr: Sequence[Ts],
    proposed: tuple[Sequence[Ts], Sequence[Ts]],
    strip_dh: bool,
) -> Refusal | Proposal:
    """Validate a responder's choice against what the initiator proposed."""
    if len(sa.proposals) != 1 or len(sa.proposals[0].spi) != 4:
        return Refusal(NotifyType.NO_PROPOSAL_CHOSEN, "response must hold exactly one ESP proposal", child.name)
    chosen = sa.proposals[0]
    if not usable_spi(chosen.spi):
        return Refusal(NotifyType.NO_PROPOSAL_CHOSEN,
                       f"peer chose the reserved SPI {int.from_bytes(chosen.spi, 'big')} (< 256)", child.name)
    if chosen.protocol != ProtocolId.ESP or not accepts(child.config.esp_proposals, chosen, strip_dh):
        return Refusal(
            NotifyType.NO_PROPOSAL_CHOSEN,
            f"peer chose {describe_all([chosen])}, not one we offered",
            child.name,
        )
    if len(tsi) > side_limit(proposed[0]) or len(tsr) > side_limit(proposed[1]):
        return Refusal(
            NotifyType.TS_UNACCEPTABLE,
            f"peer answered {len(tsi)} TSi {_ts_text(tsi)} and {len(tsr)} TSr {_ts_text(tsr)}, more than an SA "
            f"holds (we proposed {len(proposed[0])} and {len(proposed[1])}: at most {side_limit(proposed[0])} "
            f"and {side_limit(proposed[1])})",
            child.name, ts_limit=True,
        )
    if not tsi or not tsr or not _within(tsi, proposed[0]) or not _within(tsr, proposed[1]):
        return Refusal(
            NotifyType.TS_UNACCEPTABLE,
            f"peer narrowed to TSi {_ts_text(tsi)} TSr {_ts_text(tsr)}, outside what we proposed",
            child.name,
        )
    unusable = _unusable(tsi, tsr)
    if unusable is not None:
        return Refusal(NotifyType.TS_UNACCEPTABLE, f"peer narrowed to TSi {_ts_text(tsi)} TSr {_ts_text(tsr)}: "
                       f"{unusable}", child.name, ts_limit=isinstance(unusable, TooManySelectors))
    return chosen


def rekey_answer(child: ChildSa, tsi: Sequence[Ts], tsr: Sequence[Ts], old: ChildSa) -> Refusal | None:
    """The initiator's side of rekey_select: the answer to our rekey of ``old`` must hold its selectors,
    all of them (RFC 7296 §2.8), not merely some of what we proposed (check_response): a peer that
    narrowed them would give up a claim (policy/claims.py) that the lineage's policies, kept for the
    new Child SA (installs._child_registered), still act on."""
    if set(tsi) == set(old.local_ts) and set(tsr) == set(old.remote_ts):
        return None
    return Refusal(NotifyType.TS_UNACCEPTABLE,
                   f"peer answered our rekey of Child SA {old.name} with TSi {_ts_text(tsi)} TSr {_ts_text(tsr)}, "
                   f"not its TSi {_ts_text(old.local_ts)} TSr {_ts_text(old.remote_ts)} (a rekey keeps them)",
                   child.name, rekey_ts=True)


def _unusable(local: Sequence[Ts], remote: Sequence[Ts]) -> SelectorError | None:
    """Why these selectors cannot be installed in the fast path, or None when they can.

    Narrowing keeps TSi and TSr lists whose pairs may all differ in family or
    protocol; such a Child SA would carry no selector, so it is refused.
    """
    try:
        check_fast_selectors(local, remote)   # the IKE service builds them, to install
    except SelectorError as exc:
        return exc
    return None


def side_limit(configured: Sequence[Ts]) -> int:
    """How many selectors one side of a Child SA may hold: MAX_SELECTORS that pair with something
    (no more pairs fit the fast path) and as many again that pair with nothing (a dual-stack
    local_ts toward a client of one family: a peer is not refused for those), or as many as
    configured there (or proposed by us) when that is more.  More is a peer cutting what is allowed
    into pieces (a TS payload holds 255), refused before anything is paired, claimed or logged in full."""
    return max(2 * MAX_SELECTORS, len(configured))


def _within(selected: Sequence[Ts], proposed: Sequence[Ts]) -> bool:
    return all(any(p.contains(s) for p in proposed) for s in selected)


def _ts_text(selectors: Sequence[Ts]) -> str:
    return selectors_text(selectors)


def install(
    st: IkeSaState,
    child: ChildSa,
    proposal: Proposal,
    spi_out: int,
    local_ts: tuple[Ts, ...],
    remote_ts: tuple[Ts, ...],
    we_initiated: bool,
    nonces: tuple[bytes, bytes],
    pfs_shared: bytes | None = None,
    rekey_of: int | None = None,
) -> None:
    """Derive KEYMAT (RFC 7296 §2.17) and report the Child SA as up.

    ``nonces`` are (Ni, Nr) of the exchange that created the Child SA and
    ``we_initiated`` says whether we sent its request: that side sends with
    the initiator-to-responder keys.
    """
    assert st.prf is not None and st.keys is not None
    if st.children.get(child.spi_in) is not child:
        # our request was out when we began to delete the IKE SA, which took its Child SAs down (its SPI
        # went back then: sa_teardown.py): none comes up now; the peer drops its half with the IKE SA
        return
    suite = Suite.of(proposal)
    ni, nr = nonces
    keys = derive_child_keys(st.prf, st.keys.d, ni, nr, suite.encr_key_len, suite.integ_key_len, pfs_shared)
    st.keymat_seeds.note(child_seed(pfs_shared, ni, nr))   # the exchanges refuse a repeat of it (keymat_seeds.py)
    key_out, key_in = (keys.encr_i2r, keys.encr_r2i) if we_initiated else (keys.encr_r2i, keys.encr_i2r)
    child.spi_out, child.suite = spi_out, suite
    child.local_ts, child.remote_ts = local_ts, remote_ts
    child.installed = True
    st.emit(
        ChildSaUp(
            st.name,
            child.name,
            child.unique_id,
            child.spi_in,
            spi_out,
            suite.esp_name,
            key_in,
            key_out,
            suite.esn,
            local_ts,
            remote_ts,
            st.esp_remote,  # not yet a MOBIKE address still under its return routability check
            st.esp_local[1],   # nor our address that update came in on
            rekey_of=rekey_of,
            initiator=we_initiated,
            local_ip=st.esp_local[0],
        )
    )


def fail(st: IkeSaState, child: ChildSa | None, refusal: Refusal, peer_request: bool = False) -> None:
    st.emit(NegotiationFailed(st.name, refusal.notify.name, refusal.detail, refusal.child, claims=refusal.claims,
                              rekey_ts=refusal.rekey_ts, peer_request=peer_request, ts_limit=refusal.ts_limit))
    if child is not None:
        drop_child(st, child)
