"""The IKE part of ``tunsec status``: IKE SAs, their Child SAs, leases, counters."""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from tunsec.eventcounts import EventCounts
from tunsec.ike.auth_ban import AuthBan
from tunsec.ike.dh_pool import KePoolStats, KeyPairPool, group_name
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.fragments import FragmentStats
from tunsec.ike.sa import IkeSa
from tunsec.ike.stats import AUTHENTICATED_REFUSALS, EndpointStats
from tunsec.policy.pools import AddressPools, LeaseInfo, LeaseRef, lease_info
from tunsec.services.ike.barrier import Barrier
from tunsec.services.ike.exclude_gate import exclude_counters
from tunsec.services.ike.record import IkeUpRecord
from tunsec.services.ike.sockets import IkeSockets
from tunsec.services.ike.spis import SpiPool
from tunsec.services.ike.state import ChildState
from tunsec.status import Rows

# Named once: dataclasses.asdict()/fields() build a tuple(<generator>) per call, and each such
# 7-tuple stays in CPython's free list for that length (see the note in dataplane/pipe/decoding.py).
_IKE_DROPS = tuple([f.name for f in dataclasses.fields(EndpointStats) if f.name not in AUTHENTICATED_REFUSALS])
_FRAGMENT_COUNTERS = tuple([f.name for f in dataclasses.fields(FragmentStats)])
_KE_POOL_COUNTERS = tuple([f.name for f in dataclasses.fields(KePoolStats)])


def status(ike_sas: list[dict[str, Any]] | Rows[Any], leases: list[dict[str, Any]] | Rows[Any], endpoint: IkeEndpoint,
           spi_pool: SpiPool, barrier: Barrier, sockets: IkeSockets, radius: dict[str, Any],
           events: EventCounts, ke_pool: KeyPairPool | None = None, reserve_refused: int = 0,
           auth_ban: AuthBan | None = None, worker_ban: AuthBan | None = None) -> dict[str, Any]:
    now = time.monotonic()
    return {
        "ike_sas": ike_sas,
        "leases": leases,
        # unauthenticated IKE: half-open responder SAs now, and what was dropped or answered statelessly
        "ike_half_open": endpoint.half_open,
        # per source address (cookie_threshold_ip, block_threshold; IPv6: per ipv6_source_prefix): how many
        # addresses hold half-open SAs, the most one of them holds, and which one ("": none)
        "ike_half_open_addresses": endpoint.half_open_addresses,
        "ike_half_open_max_per_address": endpoint.half_open_most_from_one(),
        "ike_half_open_busiest": endpoint.half_open_busiest() or "",
        # sources refused for failed authentications (ike/auth_ban.py): source (an IPv6 prefix), seconds
        # left, failures that earned it; the drops are ike_drops.auth_banned
        "auth_bans": [{"source": b.source, "seconds_left": round(b.until - now), "failures": b.failures}
                      for b in (auth_ban.bans(now) if auth_ban else [])],
        # the same for IKE SAs opened through the worker (port 4500; worker_path.py): refused only there
        "auth_bans_worker_path": [{"source": b.source, "seconds_left": round(b.until - now), "failures": b.failures}
                                  for b in (worker_ban.bans(now) if worker_ban else [])],
        # failures of new sources not counted while the table was full of bans in force (auth_ban.py)
        "auth_ban_uncounted": auth_ban.uncounted if auth_ban else 0,
        "auth_bans_started": auth_ban.bans_total if auth_ban else 0,   # since the start (a reload keeps it)
        "ike_drops": {**{n: getattr(endpoint.stats, n) for n in _IKE_DROPS},
                      "esp_on_ike_port": sockets.esp_on_ike_port},   # ESP in UDP on a custom IKE port
        # authenticated peers' requests refused or cut short (not strangers': a known peer misbehaving)
        "ike_refused": {n: getattr(endpoint.stats, n) for n in AUTHENTICATED_REFUSALS},
        # IKE we sent through the worker (port 4500) whose answer it never gave: given up (ours, no
        # peer's: it was under ike_drops.send_ike_unanswered before)
        "ike_sends_unanswered": sockets.natt_unanswered,
        # IKE the worker handed up naming a local port not its 4500: answered from 4500 all the same (a
        # healthy worker names its own sockets' port; natt_local.py)
        "ike_natt_other_local_port": sockets.natt_other_port,
        # exclude routes (services/ike/exclude_gate.py): held now, refused; IKE to an unauthenticated address
        # a TUN route captures sent by the uplink's interface, or into the TUN; IKE dropped past the gate's bound
        "exclude_routes": exclude_counters(sockets.gate),
        # our established IKE SAs whose SPI the worker had no room for (IKE_SPI_ADD refused ENOSPC, it
        # holds TS_IKE_SPI_MAX): their IKE has no reserve against floods of spoofed IKE (trusted.py)
        "ike_reserve_refused": reserve_refused,
        # our IKE SPIs (ike/spi_book.py): drawn again because the one drawn was in use or reserved by a
        # rekey or redirect in flight (one in 2^32 per pair, more for many clients behind one address);
        # successors (rekeys, redirects) dropped because their SPI was taken all the same (a bug)
        "ike_spis": {"redrawn": endpoint.spi_book.redrawn, "successors_refused": endpoint.spi_book.refused},
        # IKE fragmentation (RFC 7383): messages split and reassembled, fragments dropped
        "ike_fragments": {n: getattr(endpoint.fragment_stats, n) for n in _FRAGMENT_COUNTERS},
        # the barrier: incoming datagrams that waited for an inbound SPI (now, in all, dropped past
        # HELD_MAX, an IKE SA's share or half-open SAs' share), and how often outgoing ones waited for
        # installs or SPIs (see SpiPool.receive)
        "ike_held": {"waiting": spi_pool.held_waiting, "held": spi_pool.held_total,
                     "spi_waits": spi_pool.spi_waits,   # of those, IKE_AUTH requests
                     # the most half-open IKE SAs' that waited at once (a burst's IKE_AUTHs; their share
                     # is HELD_MAX - HELD_RESERVE)
                     "waiting_max_half_open": spi_pool.waiting_max_half_open,
                     "spis_returned": spi_pool.returned,   # pooled SPIs handed back (half-open SAs gone)
                     # SPIs of GETSPIs given up on (no answer in REQUEST_TIMEOUT) whose answer came later
                     "spis_late_returned": spi_pool.late_returned,
                     "held_dropped": spi_pool.held_dropped,
                     "held_dropped_half_open": spi_pool.held_dropped_half_open,   # of those, half-open SAs'
                     "install_waits": barrier.install_waits,
                     # IKE SAs' datagrams held for their Child SA installs: how often, how long in all, longest
                     "install_holds": barrier.install_holds,
                     "install_hold_seconds": round(barrier.install_hold_seconds, 6),
                     "install_hold_max": round(barrier.install_hold_max, 6)},
        # packets' ACQUIREs claimed and ignored, by child (the metrics' tunsec_trap_acquires_ignored and
        # tunsec_child_sa_acquires_ignored): "trap", of a trap policy whose child was up or being created
        # already; "child_sa", of a Child SA's policy after its outbound SA's hard limit, until its DELETE
        # or rekey is through; "trap_held", of a trap policy in the hold-down after its child's initiation
        # failed (tunsec_trap_acquires_held; trap_hold.py)
        "acquires_ignored": {"trap": _by_child(events.acquires_ignored),
                             "child_sa": _by_child(events.child_acquires_ignored),
                             "trap_held": _by_child(events.acquires_held)},
        # peers' CREATE_CHILD_SA requests refused over max_child_sas (NO_ADDITIONAL_SAS), by connection
        "child_sa_limit": dict(sorted(events.child_sa_limit.items())),
        # peers' moves (NAT rebinding, MOBIKE) whose Child SAs waited for their IKE SA's move budget
        # (one batch of MIGRATEs a second; the latest target applied), by connection
        "moves_deferred": dict(sorted(events.moves_deferred.items())),
        # Child SAs refused because their selectors overlap another peer's, by child (the metrics'
        # tunsec_child_sa_ts_claims_refused; policy/claims.py)
        "ts_claims_refused": _by_child(events.ts_claims_refused),
        # Child SA rekeys refused because their selectors are not the old Child SA's, by child (the
        # metrics' tunsec_child_sa_rekey_ts_refused; exchanges/child.py rekey_select, rekey_answer)
        "rekey_ts_refused": _by_child(events.rekey_ts_refused),
        # Child SAs whose install failed (refused or unanswered by the worker, or not installable), deleted
        # in the engine, by child (the metrics' tunsec_child_sa_install_failed; install_failed.py)
        "install_failed": _by_child(events.install_failed),
        # Child SAs refused because their selectors narrow to (or the peer's answer holds) more than an
        # SA holds, by child (the metrics' tunsec_child_sa_ts_limit_refused; exchanges/child.py side_limit)
        "ts_limit_refused": _by_child(events.ts_limit_refused),
        # CREATE_CHILD_SAs of a child whose rekey (ours) failed to install: tries to create it again, by
        # child (the metrics' tunsec_child_sa_recreate_tries; recreate.py)
        "child_recreate": _by_child(events.child_recreate),
        # a client's IKE SAs deleted because it cannot use the virtual IP its gateway assigned, by
        # connection (the metrics' tunsec_ike_sa_vip_refused; vip_refused.py)
        "vip_refused": dict(sorted(events.vip_refused.items())),
        # updown up-clients (and so their down-clients) not run: their IKE SA had too many waiting, by
        # child (the metrics' tunsec_updown_skipped; updown.Scripts)
        "updown_skipped": _by_child(events.updown_skipped),
        # ready key pairs (tunsec { ke_pool }, tunsec.ike.dh_pool): handed out ready (hits), generated on
        # the spot because the group's pool was empty (misses) or the group is not pooled (unpooled),
        # dropped unused at their maximum age (expired), and how many are ready now by group
        "ke_pool": {} if ke_pool is None else _ke_pool(ke_pool),
        # auth = eap-radius: requests and answers, what was dropped, what is open now, each server's
        # health, and accounting's counters
        "radius": radius,
    }


def _ke_pool(pool: KeyPairPool) -> dict[str, Any]:
    return {**{n: getattr(pool.stats, n) for n in _KE_POOL_COUNTERS},
            "ready": {group_name(g): n for g, n in pool.sizes().items()}}


def _by_child(counts: Mapping[tuple[str, str], int]) -> list[dict[str, Any]]:
    return [{"connection": conn, "child": child, "count": n} for (conn, child), n in sorted(counts.items())]


def idle_status() -> dict[str, Any]:
    return {"ike_sas": [], "leases": [], "ike_half_open": 0, "ike_half_open_addresses": 0,
            "ike_half_open_max_per_address": 0, "ike_half_open_busiest": "", "ike_drops": {}, "ike_refused": {},
            "auth_bans": [], "auth_bans_worker_path": [], "auth_ban_uncounted": 0, "auth_bans_started": 0,
            "ike_sends_unanswered": 0, "ike_natt_other_local_port": 0,
            "ike_reserve_refused": 0, "ike_spis": {},
            "ike_fragments": {},
            "ike_held": {}, "acquires_ignored": {}, "child_sa_limit": {}, "moves_deferred": {},
            "ts_claims_refused": [], "rekey_ts_refused": [], "install_failed": [], "ts_limit_refused": [],
            "child_recreate": [], "vip_refused": {}, "updown_skipped": [], "ke_pool": {},
            "radius": {}}


def ike_sas(sas: Iterable[IkeSa], ike_up: Mapping[bytes, IkeUpRecord], children: Iterable[ChildState],
            handle_of: Callable[[IkeSa], int | None], live_sa: Callable[[int], IkeSa | None],
            usage: Callable[[int | None], dict[str, int] | None] = lambda handle: None) -> list[dict[str, Any]]:
    """Each IKE SA with its Child SAs (see ike_sa_rows), formatted at once."""
    return ike_sa_rows(sas, ike_up, children, handle_of, live_sa, usage).all()


_IkeSaItem = tuple[IkeSa, "int | None", list[ChildState]]


def ike_sa_rows(sas: Iterable[IkeSa], ike_up: Mapping[bytes, IkeUpRecord], children: Iterable[ChildState],
                handle_of: Callable[[IkeSa], int | None], live_sa: Callable[[int], IkeSa | None],
                usage: Callable[[int | None], dict[str, int] | None] = lambda handle: None) -> Rows[_IkeSaItem]:
    """Each IKE SA with its Child SAs (``handle_of``: the IKE SA handle children name; ``live_sa``:
    which IKE SA a handle means now, after rekeys; ``usage``: its accounted traffic, if any).
    Which IKE SAs there are and which Child SAs each shows are settled now: formatted later, a
    rekey meanwhile would otherwise show a Child SA under both IKE SAs of its lineage, or under none."""
    # each Child SA under its IKE SA's handle, once: a pass over every Child SA per IKE SA made a
    # status of N clients O(N²) on the event loop (seconds at a few thousand)
    by_handle: dict[int, list[ChildState]] = {}
    for c in children:
        by_handle.setdefault(c.ike, []).append(c)
    items: list[_IkeSaItem] = []
    for sa in sas:
        handle = handle_of(sa)
        mine = by_handle.get(handle, []) if handle is not None else []
        # a rekeyed SA and its successor share the handle: its children show under the live one only
        if mine and live_sa(mine[0].ike) is not sa:
            mine = []
        items.append((sa, handle, mine))
    return Rows(items, functools.partial(_ike_sa, ike_up, usage, time.time()), _ike_sa_brief)


def _ike_sa_brief(item: _IkeSaItem) -> dict[str, Any]:
    """What a scrape reads of an IKE SA's row (metrics.py: tunsec_ike_sas, tunsec_child_sas, and which
    Child SA a worker's SA is), each value as _ike_sa and _child write it."""
    sa, _handle, mine = item
    return {"name": sa.name, "state": sa.state.value,
            "children": [{"name": c.child, "spi_in": f"{c.spi_in:08x}", "spi_out": f"{c.spi_out:08x}",
                          "remote": f"{c.remote.addr}[{c.remote.port}]"} for c in mine]}


def _ike_sa(ike_up: Mapping[bytes, IkeUpRecord], usage: Callable[[int | None], dict[str, int] | None], now: float,
            item: _IkeSaItem) -> dict[str, Any]:
    sa, handle, mine = item
    info: Mapping[str, Any] = ike_up.get(sa.local_spi, {})
    used = usage(handle)
    return {
        # RADIUS accounting's total (Child SAs gone included), only for an IKE SA it accounts
        **({"usage": used} if used is not None else {}),
        "name": sa.name,
        "state": sa.state.value,
        "initiator": sa.is_initiator,
        "remote": f"{sa.remote_addr[0]}[{sa.remote_addr[1]}]",
        # our address the peer talks to (null: a wildcard socket that did not say)
        "local": f"{sa.local_ip}[{sa.local_port}]" if sa.local_ip else None,
        "mobike": sa.mobike,   # RFC 4555 negotiated: only UPDATE_SA_ADDRESSES moves it
        "proposal": info.get("proposal"),
        "local_id": info.get("local_id"),
        "remote_id": info.get("remote_id"),
        # false: nothing vouched for remote_id (eap-radius, no User-Name in the Access-Accept):
        # it acts on no other IKE SA (INITIAL_CONTACT, unique, leases)
        "remote_id_proven": info.get("remote_id_proven"),
        # how a client authenticated (nothing secret): the identity it sent in IDi (remote_id
        # differs only when EAP with eap_id proved another), its EAP identity (null: no EAP),
        # and the groups the AAA backend's Access-Accept made it a member of (Class, Filter-Id)
        "remote_ike_id": info.get("remote_ike_id"),
        "remote_eap_id": info.get("remote_eap_id"),
        "groups": info.get("groups", []),
        "spi_i": sa.spi_i.hex(),
        "spi_r": sa.spi_r.hex(),
        "local_vips": info.get("local_vips", []),
        "remote_vips": info.get("remote_vips", []),
        "age_seconds": int(now - info["established"]) if info else None,
        "children": [_child(c, now) for c in mine],
    }


def _child(c: ChildState, now: float) -> dict[str, Any]:
    return {"name": c.child, "spi_in": f"{c.spi_in:08x}", "spi_out": f"{c.spi_out:08x}", "alg": c.alg,
            "esn": c.esn, "reqid": c.reqid, "remote": f"{c.remote.addr}[{c.remote.port}]",
            "local": f"{c.local.addr}[{c.local.port}]",
            "local_ts": [str(t) for t in c.local_ts], "remote_ts": [str(t) for t in c.remote_ts],
            "age_seconds": int(now - c.established)}


def leases(pools: AddressPools) -> list[dict[str, Any]]:
    """Virtual IP leases for ``tunsec status``: pool, address, identity, online or offline, and how
    the identity was proven (``proof``: one name may hold two leases, proven two ways)."""
    return lease_rows(pools).all()


def lease_rows(pools: AddressPools) -> Rows[LeaseRef]:
    # no metric reads a lease: taken only for status, each made a row a slice at a time
    return Rows((), _lease_row, scraped=False, take=pools.lease_snapshot)


def _lease_row(ref: LeaseRef) -> dict[str, Any]:
    return _lease(lease_info(ref))


def _lease(x: LeaseInfo) -> dict[str, Any]:
    return {"pool": x.pool, "address": str(x.address), "identity": x.identity,
            "status": "online" if x.online else "offline", "proof": x.proof}
