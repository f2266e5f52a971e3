"""Events the control process counts where they happen (rekeys, dead peers), read by the
Prometheus endpoint (tunsec.metrics) at scrape time.

A module of its own so that the IKE service can count without importing prometheus_client:
a gateway without ``metrics_listen`` never loads it.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field


@dataclass
class EventCounts:
    """Events counted where they happen; only ever incremented."""

    ike_rekeys: collections.Counter[str] = field(default_factory=collections.Counter)   # by connection
    child_rekeys: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)  # (conn, child)
    dpd_failures: collections.Counter[str] = field(default_factory=collections.Counter)  # established, then dead
    # ACQUIREs of a trap policy while its child was up or being created already (traps.acquire)
    acquires_ignored: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    # ACQUIREs of a trap policy in the hold-down after its child's initiation failed (trap_hold.py)
    acquires_held: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    # ACQUIREs of a Child SA's policies once the worker removed its outbound SA (hard limit) until
    # its DELETE or rekey is through (traps.acquire)
    child_acquires_ignored: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    # MIGRATEs (a Child SA following its moved peer) the worker refused or left unanswered (mobility)
    migrate_failures: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    # moves of an IKE SA's Child SAs asked for while its last batch ran or within MOVE_INTERVAL of it:
    # they wait, and the latest target is applied when the budget allows (mobility._move), by connection
    moves_deferred: collections.Counter[str] = field(default_factory=collections.Counter)
    # peers' CREATE_CHILD_SA requests refused with NO_ADDITIONAL_SAS over max_child_sas, by connection
    child_sa_limit: collections.Counter[str] = field(default_factory=collections.Counter)
    # Child SAs refused because their selectors overlap another peer's (policy/claims.py): the
    # engine's refusals, whichever side asked, and the service's same-batch backstop
    ts_claims_refused: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    # rekeys of Child SAs refused because their selectors are not the old Child SA's (RFC 7296 §2.8),
    # whichever side asked, and the service's backstop (installs._child_registered), by (conn, child)
    rekey_ts_refused: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    # Child SAs refused because their selectors narrow to (or an answer holds) more than an SA holds
    # (exchanges/child.py side_limit, MAX_SELECTORS pairs), whichever side asked, by (conn, child)
    ts_limit_refused: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    # Child SAs whose install the worker refused or did not answer, or that it cannot take (selectors,
    # algorithm): deleted in the engine (installs, install_failed), by (conn, child)
    install_failed: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    # CREATE_CHILD_SAs of a child whose rekey (ours) failed to install (services/ike/recreate.py)
    child_recreate: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    # a client's IKE SAs deleted because it cannot use the virtual IP its gateway assigned (vip_refused.py)
    vip_refused: collections.Counter[str] = field(default_factory=collections.Counter)
    # updown up-clients not run (nor their down-clients): their IKE SA had updown.QUEUE_LIMIT waiting
    updown_skipped: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
