"""Prometheus metrics of a running tunsec: ``tunsec { metrics_listen = ADDR:PORT }``.

Nothing is copied per packet: the worker's C fast path keeps the counters (per
SA, per drop reason) and a scrape asks for them with one DUMP, the request
``tunsec status`` makes, turned into metric families at scrape time.  The HTTP
endpoint is served from the control process's event loop (no thread).  A worker
that is dead or does not answer the DUMP within :data:`DUMP_TIMEOUT` never holds
a scrape up: the scrape returns the control process's own metrics with
``tunsec_worker_up 0``.

That loop also runs IKE, DPD and RADIUS, and a scrape of thousands of clients is
megabytes: its status document and its per-SA and per-policy families (written
straight as text, tunsec.exposition; prometheus_client's objects took a second of
the loop at 2,000 clients) are built status.SLICE items per turn of the loop.
Scrapes at the same moment share one build (ctlsocket.Shared), its encoded body
answers those of the next :data:`CACHE_AGE` seconds (longer after a long build),
and connections are capped in all and per source address.  Anyone who can
connect reads every client's address and SPIs.

Events the control process sees (rekeys, dead peers, worker restarts) are
counted where they happen, in an :class:`EventCounts` (tunsec.eventcounts), and read at
scrape time.  The daemon imports this module only when ``metrics_listen`` is set.

Names follow Prometheus conventions (base units, ``_total`` for counters); the
docs/operations.md maps them to the strongSwan exporters' names.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import ipaddress
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.openmetrics import exposition as openmetrics

from tunsec import ctlsocket, exposition
from tunsec.conf.tunsec_section import ListenAddress
from tunsec.dataplane import pipe
from tunsec.eventcounts import EventCounts
from tunsec.exposition import Written
from tunsec.metrics_names import WorkerNames, names_of
from tunsec.metrics_tun import tun_families
from tunsec.status import SA_FIELDS, SLICE, release

__all__ = ["DUMP_TIMEOUT", "EventCounts", "ListenError", "MetricsServer", "Source", "start"]

log = logging.getLogger("tunsec.metrics")

DUMP_TIMEOUT = 2.0        # a scrape waits this long for the worker's counters
REQUEST_TIMEOUT = 5.0     # for a client to send its request head, and again to read the answer
MAX_REQUEST_HEAD = 8192   # bytes; Prometheus sends a few hundred
MAX_CLIENTS = 16          # connections served at once; more are closed unanswered
MAX_PER_SOURCE = 4        # of those, from one source (an IPv4 address, an IPv6 /64, loopback as one)
# A few sources each at its share can still hold every slot idle (4 x 4: no request sent, each for
# REQUEST_TIMEOUT, again and again), so when all are taken a new connection closes the oldest one
# still waiting for its request head of the source holding the most; one being answered is never cut.
# A scrape's body serves the scrapes of the next CACHE_AGE seconds, or of CACHE_LOAD times as long as
# its build took if that is longer: a build holds the loop a slice at a time only, but all its slices
# of thousands of clients are a few tenths of a second of CPU, and scrapers back to back would otherwise
# take much of the loop from IKE, DPD and RADIUS (scrapes take at most 1/(CACHE_LOAD + 1) of it).
CACHE_AGE = 1.0
CACHE_LOAD = 4
WRITE_CHUNK = 64 * 1024   # a body is handed to a connection this much at a time (not copied whole per client)


@dataclass(frozen=True)
class Source:
    """What a scrape asks the daemon (callables: read at scrape time, never copied)."""

    dump: Callable[[], Awaitable[pipe.Reply]]               # the worker's DUMP (Daemon.dump)
    # status.status_document_sliced(scrape=True) for that DUMP: a document of its own, its rows only what
    # the families read (the scrape frees it as it goes)
    document: Callable[[pipe.Reply], Awaitable[dict[str, Any]]]
    events: Callable[[], EventCounts | None]                 # the IKE service's, None without IKE
    worker_restarts: Callable[[], int]                       # since the daemon started
    worker_pid: Callable[[], int | None]


class ListenError(Exception):
    """The endpoint cannot listen; the message says where and what to do."""


# --- what a scrape shows ------------------------------------------------------------------
# remote: the peer's address[port] the SA is bound to, as `tunsec status` shows it.  An outbound SPI
# is the peer's choice, so two clients of one connection may pick the same one: without the remote
# their series would share a label set (Prometheus keeps one, a client could hide another's).  On
# both directions, so that one client's pair of SAs shows under one remote.
# Sorted, as the formats write them; a drop's reason goes between direction and remote.
_SA_LABELS = ("child", "connection", "direction", "remote", "spi")
# The worker's per-SA counters (enum ts_sa_counter in csrc/tunsec_dp.h), by the name DUMP and
# `tunsec status` carry: their help text.  Every counter is exported, listed here or not: a
# <reason>_drops counter as tunsec_child_sa_drops_total{reason} (on inbound SAs, the only
# ones that drop), any other as tunsec_child_sa_<name>_total.
SA_COUNTER_HELP: dict[str, str] = {
    "bytes": "Bytes of inner packets through the SA",
    "packets": "Packets through the SA",
}
# The worker's gauges (DUMP's GAUGEs, `tunsec status`'s worker.gauges) by name: their help text.  Each is
# exported as tunsec_worker_<name>, listed here or not.
WORKER_GAUGE_HELP: dict[str, str] = {
    "live_sa_entries": "SA entries the worker's fast path holds allocated (larval SAs too); "
                       "one that stays up after its SAs went is a leak",
    "live_cipher_contexts": "Cipher contexts the worker's fast path holds allocated (per SA and loop thread)",
    "spd_entries": "Policies in the worker's SPD",
    "spd_slots": "Policy slots the worker's SPD holds allocated (live or not): back to at most four times "
                 "spd_entries once policies went",
    "ike_spis": "Established IKE SAs whose IKE datagrams have the worker's reserve (IKE_SPI_ADD)",
    "malloc_trims": "Times the worker gave its free heap back to the system after a burst of requests "
                    "(malloc_trim), since it started",
    "sandbox": "The worker's sandbox: 1 Landlock, 2 seccomp, 3 both; 0 none (worker_sandbox = no, or a kernel "
               "with neither)",
}
# `tunsec status`'s ike_drops that are not drops (the rest are: datagrams dropped unauthenticated)
_IKE_NOT_DROPS = {"cookies_sent", "half_open_closed", "redirects_sent", "init_refused"}
# IKE fragmentation (RFC 7383): `tunsec status`'s ike_fragments (ike.fragments.FragmentStats) by
# name, each tunsec_ike_<name>_total; a counter not listed here is exported with a generic help
IKE_FRAGMENT_HELP: dict[str, str] = {
    "messages_fragmented": "IKE messages sent in fragments (RFC 7383)",
    "fragments_sent": "IKE fragments sent (each retransmission counts again)",
    "messages_reassembled": "IKE messages of peers put back together from fragments",
    "fragments_received": "Verified IKE fragments stored for reassembly",
    "fragments_dropped": "IKE fragments dropped: failed ICV, duplicate, over a bound, or of a message that expired",
}


async def _sa_owners(doc: dict[str, Any]) -> dict[tuple[str, str, str | None], tuple[str, str]]:
    """(spi, direction, remote of an outbound SA) -> (connection, child), as `tunsec status` matches them."""
    owners: dict[tuple[str, str, str | None], tuple[str, str]] = {}
    ike_sas = doc.get("ike_sas", [])
    for at in range(0, len(ike_sas), SLICE):
        for ike in ike_sas[at:at + SLICE]:
            for c in ike["children"]:
                owners[(c["spi_in"], "in", None)] = (ike["name"], c["name"])
                owners[(c["spi_out"], "out", c.get("remote"))] = (ike["name"], c["name"])
        await asyncio.sleep(0)
    for t in doc.get("tunnels", []):
        for sa in t["sas"]:
            owners[(sa["spi"], sa["direction"], sa["remote"] if sa["direction"] == "out" else None)] = \
                (t["name"], t["name"])
    return owners


async def sa_families(doc: dict[str, Any], names: WorkerNames | None = None) -> list[Written]:
    """Per Child SA (each direction is an SA of its own in the worker): its counters (those names
    admits) and age.  Written directly (tunsec.exposition), status.SLICE SAs per turn of the event loop."""
    names = names or WorkerNames()
    counters = {name: Written(f"tunsec_child_sa_{name}", "counter", help_text)
                for name, help_text in SA_COUNTER_HELP.items()}
    drops = Written("tunsec_child_sa_drops", "counter", "Inbound packets the SA dropped, by reason")
    age = Written("tunsec_child_sa_age_seconds", "gauge", "Seconds since the SA was installed")
    owners = await _sa_owners(doc)
    sas = doc.get("sas", [])
    for at in range(0, len(sas), SLICE):
        for sa in sas[at:at + SLICE]:
            remote = sa["remote"] if sa["direction"] == "out" else None
            conn, child = owners.get((sa["spi"], sa["direction"], remote), ("", ""))
            head = exposition.labels(_SA_LABELS[:3], (child, conn, sa["direction"]))   # escaped once per SA
            tail = exposition.labels(_SA_LABELS[3:], (sa.get("remote") or "", sa["spi"]))
            labels = f"{head},{tail}"
            age.add(labels, sa["age_seconds"])
            for name, count in sa.items():
                if name in SA_FIELDS:
                    continue
                if not names.sa_counter(name, counters):
                    continue
                if name.endswith("_drops"):
                    if sa["direction"] == "in":
                        drops.add(f'{head},reason="{exposition.label(name.removesuffix("_drops"))}",{tail}', count)
                    continue
                if name not in counters:
                    counters[name] = Written(f"tunsec_child_sa_{name}", "counter",
                                             f"The fast path's per-SA counter {name} (enum ts_sa_counter)")
                counters[name].add(labels, count)
        await asyncio.sleep(0)
    return [*counters.values(), drops, age]


async def policy_family(doc: dict[str, Any]) -> Written:
    """Packets per policy of the worker's SPD (a few per client), status.SLICE per turn of the loop."""
    family = _policies()
    policies = doc.get("policies", [])
    for at in range(0, len(policies), SLICE):
        _policy_samples(family, policies[at:at + SLICE])
        await asyncio.sleep(0)
    return family


def _policies() -> Written:
    return Written("tunsec_policy_packets", "counter", "Packets that matched a policy")


def _policy_samples(family: Written, policies: list[dict[str, Any]]) -> None:
    for p in policies:
        family.add(exposition.labels(("action", "policy"), (p["action"], str(p["id"]))), p["packets"])


def state_families(doc: dict[str, Any], worker_up: bool, policies: Metric | Written | None = None,
                   names: WorkerNames | None = None) -> Iterator[Metric | Written]:
    """Counts of things (gauges) and the worker's global counters; policies (policy_family's, else
    made here at once) among them, and the worker's gauges names admits."""
    names = names or WorkerNames()
    yield GaugeMetricFamily("tunsec_worker_up", "1 if the dataplane worker answered this scrape's DUMP in time",
                            value=1 if worker_up else 0)
    yield from tun_families(doc)   # the TUN's routes (metrics_tun.py)
    ike = GaugeMetricFamily("tunsec_ike_sas", "IKE SAs by connection and state", labels=["connection", "state"])
    by_state = collections.Counter((s["name"], s["state"]) for s in doc.get("ike_sas", []))
    for (conn, state), n in sorted(by_state.items()):
        ike.add_metric([conn, state], n)
    yield ike
    children = GaugeMetricFamily("tunsec_child_sas", "Installed Child SAs (pairs of SAs) by connection and child",
                                 labels=["connection", "child"])
    per_child = collections.Counter((s["name"], c["name"]) for s in doc.get("ike_sas", []) for c in s["children"])
    per_child.update((t["name"], t["name"]) for t in doc.get("tunnels", []) if t["sas"])
    for (conn, child), n in sorted(per_child.items()):
        children.add_metric([conn, child], n)
    yield children
    if worker_up:
        esp = GaugeMetricFamily("tunsec_esp_sas", "SAs in the worker by direction and state",
                                labels=["direction", "state"])
        states = collections.Counter((s["direction"], s["state"]) for s in doc.get("sas", []))
        states[("in", "larval")] += doc.get("larval_sas", 0)
        for (direction, state), n in sorted(states.items()):
            esp.add_metric([direction, state], n)
        yield esp
        drops = CounterMetricFamily("tunsec_drops", "Packets the worker dropped, by reason (pipe_*: events "
                                    "the control process did not read in time)", labels=["reason"])
        for reason, n in sorted(doc.get("drops", {}).items()):
            drops.add_metric([reason], n)
        yield drops
        for name, value in (doc.get("worker", {}).get("gauges") or {}).items():
            if (family := names.gauge(name)) is not None:
                yield GaugeMetricFamily(family, WORKER_GAUGE_HELP.get(name, f"The worker's gauge {name}"), value=value)
        if policies is None:
            policies = _policies()
            _policy_samples(policies, doc.get("policies", []))
        yield policies
    yield GaugeMetricFamily("tunsec_ike_half_open_sas", "IKE SAs not authenticated yet (responder side)",
                            value=doc.get("ike_half_open", 0))
    yield GaugeMetricFamily("tunsec_ike_half_open_addresses", "Source addresses (IPv6: prefixes of "
                            "ipv6_source_prefix bits) holding half-open IKE SAs",
                            value=doc.get("ike_half_open_addresses", 0))
    yield GaugeMetricFamily("tunsec_ike_half_open_max_per_address", "The most half-open IKE SAs one source "
                            "address (IPv6: prefix) holds (cookie_threshold_ip, block_threshold apply to it)",
                            value=doc.get("ike_half_open_max_per_address", 0))
    yield auth_ban_family(doc.get("auth_bans", []))
    yield CounterMetricFamily("tunsec_ike_auth_ban_uncounted", "Failed authentications of new sources not "
                              "counted towards a ban: the ban table was full of bans in force (auth_failures)",
                              value=doc.get("auth_ban_uncounted", 0))
    yield CounterMetricFamily("tunsec_ike_auth_bans_started", "Failed-authentication bans started (a source, "
                              "or a wider IPv6 prefix, refused for auth_failures_ban or longer)",
                              value=doc.get("auth_bans_started", 0))
    dropped = CounterMetricFamily("tunsec_ike_requests_dropped", "Datagrams on the IKE ports dropped before "
                                  "anything in them was authenticated (anyone may send them), nothing kept for "
                                  "them, by reason", labels=["reason"])
    stats = doc.get("ike_drops", {})
    for reason, n in sorted(stats.items()):
        if reason not in _IKE_NOT_DROPS:
            dropped.add_metric([reason], n)
    yield dropped
    refused = CounterMetricFamily("tunsec_ike_authenticated_refused", "Requests of authenticated peers refused "
                                  "or cut short, by reason (ike_rekeys_refused: IKE SA rekeys answered "
                                  "TEMPORARY_FAILURE while replaced IKE SAs await their DELETE; "
                                  "delete_spis_ignored: SPIs of a DELETE past what its IKE SA could hold; "
                                  "mobike_checks_failed: MOBIKE moves to an address that never answered the "
                                  "return routability check, taken back; floats_refused: NAT rebindings to an "
                                  "address outside remote_addrs or of another family, not followed; ike_sa_limit: "
                                  "IKE_AUTHs refused, the identity holding max_ike_sas_per_identity IKE SAs; "
                                  "child_sas_refused_for_now: CREATE_CHILD_SAs answered TEMPORARY_FAILURE, a nonce "
                                  "of ours as their Ni, 8 answered while ours is out, or a repeated KEYMAT seed)",
                                  labels=["reason"])
    for reason, n in sorted(doc.get("ike_refused", {}).items()):
        refused.add_metric([reason], n)
    yield refused
    yield CounterMetricFamily("tunsec_worker_malformed_messages", "Datagrams from the worker the control "
                              "process could not decode, dropped (since the worker started)",
                              value=doc.get("worker", {}).get("malformed", 0))
    yield CounterMetricFamily("tunsec_control_malloc_trims", "Times the control process gave its free heap back "
                              "to the system after a burst of IKE (malloc_trim)",
                              value=doc.get("control", {}).get("malloc_trims", 0))
    yield CounterMetricFamily("tunsec_worker_late_answers", "Answers from the worker to requests the control "
                              "process had given up on (timed out), dropped (since the worker started)",
                              value=doc.get("worker", {}).get("late_answers", 0))
    yield CounterMetricFamily("tunsec_worker_dump_overflows", "DUMP answers from the worker that grew past "
                              "the control process's cap, failed (since the worker started)",
                              value=doc.get("worker", {}).get("dump_overflows", 0))
    yield CounterMetricFamily("tunsec_worker_stderr_dropped_lines", "Lines the worker wrote to its stderr past "
                              "the relay's rate limit, dropped (since the worker started)",
                              value=doc.get("worker", {}).get("stderr_dropped", 0))
    yield CounterMetricFamily("tunsec_worker_unowned_events", "Worker events naming no SA or policy a "
                              "service installed, counted and their lines rate-limited (since tunsec started)",
                              value=doc.get("worker", {}).get("unowned_events", 0))
    yield CounterMetricFamily("tunsec_worker_refused_expires", "EXPIREs from the worker for a limit the SA "
                              "was never given, ignored (since tunsec started)",
                              value=doc.get("worker", {}).get("refused_expires", 0))
    yield CounterMetricFamily("tunsec_ike_natt_other_local_port", "IKE events from the worker naming a local "
                              "port not its 4500, answered from 4500 all the same",
                              value=doc.get("ike_natt_other_local_port", 0))
    yield CounterMetricFamily("tunsec_ike_cookies_sent", "Stateless COOKIE answers (RFC 7296 2.6)",
                              value=stats.get("cookies_sent", 0))
    yield CounterMetricFamily("tunsec_ike_redirects_sent", "Stateless REDIRECT answers (RFC 5685)",
                              value=stats.get("redirects_sent", 0))
    yield CounterMetricFamily("tunsec_ike_half_open_closed", "Half-open IKE SAs closed before authentication",
                              value=stats.get("half_open_closed", 0))
    yield CounterMetricFamily("tunsec_ike_init_refused", "IKE_SA_INIT requests answered with an error after "
                              "proposal selection or the KE check (no proposal, a bad KE), no state kept",
                              value=stats.get("init_refused", 0))
    yield CounterMetricFamily("tunsec_ike_sends_unanswered", "IKE datagrams handed to the worker (port 4500) "
                              "whose answer it did not give in time: given up",
                              value=doc.get("ike_sends_unanswered", 0))
    yield CounterMetricFamily("tunsec_ike_reserve_refused", "Established IKE SAs whose SPI the worker had no "
                              "room for (IKE_SPI_ADD refused, it holds as many as it may): their IKE has no "
                              "reserve against floods", value=doc.get("ike_reserve_refused", 0))
    spis = doc.get("ike_spis", {})
    yield CounterMetricFamily("tunsec_ike_spis_redrawn", "Our new IKE SPIs drawn again because the one drawn was "
                              "in use or reserved by a rekey or redirect in flight", value=spis.get("redrawn", 0))
    yield CounterMetricFamily("tunsec_ike_successors_refused", "New IKE SAs of rekeys or redirects dropped because "
                              "their SPI was taken all the same (an internal error)",
                              value=spis.get("successors_refused", 0))
    radius = CounterMetricFamily("tunsec_radius_packets", "RADIUS (auth = eap-radius): requests sent, answers "
                                 "taken, datagrams dropped, by kind", labels=["kind"])
    for kind, n in sorted(doc.get("radius", {}).items()):
        # gauges (and sections shown below): the rest are counters
        if kind not in ("conversations", "outstanding", "waiting", "parked", "accounting", "servers", "dae"):
            radius.add_metric([kind], n)
    yield radius
    up = GaugeMetricFamily("tunsec_radius_server_up", "1 if the RADIUS server answered its last request, 0 if it "
                           "did not (none before the first answer or timeout)", labels=["server", "port"])
    for name, ports in sorted(doc.get("radius", {}).get("servers", {}).items()):
        for port, health in sorted(ports.items()):
            if health["state"] != "unknown":
                up.add_metric([name, port], 1 if health["state"] == "up" else 0)
    yield up
    acct = CounterMetricFamily("tunsec_radius_accounting_packets", "RADIUS accounting (radius.accounting = yes): "
                               "Accounting-Requests sent, answers taken, records lost, datagrams dropped, by kind",
                               labels=["kind"])
    for kind, n in sorted(doc.get("radius", {}).get("accounting", {}).items()):
        if kind != "sessions":   # a gauge
            acct.add_metric([kind], n)
    yield acct
    dae = CounterMetricFamily("tunsec_radius_dae_packets", "RADIUS Dynamic Authorization (radius.dae): requests "
                              "answered, IKE SAs closed, datagrams dropped, by kind", labels=["kind"])
    for kind, n in sorted(doc.get("radius", {}).get("dae", {}).items()):
        if kind != "listen":
            dae.add_metric([kind], n)
    yield dae


# the bans' labels always shown, 0 without bans (an alert needs the series): an IPv4 address, an IPv6
# source prefix (ipv6_source_prefix's default) and its wider ones (ike/auth_ban.py WIDER)
_BAN_PREFIXES = (("ipv4", "32"), ("ipv6", "64"), ("ipv6", "56"), ("ipv6", "48"))


def auth_ban_family(bans: list[dict[str, Any]]) -> GaugeMetricFamily:
    """The failed-authentication bans in force (`tunsec status`: auth_bans) by the source's family and
    prefix length: a bounded label set (IPv6 prefix lengths at most), never the source itself, which
    an attacker chooses (`tunsec status` names them)."""
    family = GaugeMetricFamily("tunsec_ike_auth_bans", "Sources whose IKE_SA_INIT requests are dropped for "
                               "failed authentications now (auth_failures), by family and prefix length: an "
                               "IPv4 address (32), an IPv6 source prefix (ipv6_source_prefix) or a wider one "
                               "banned for its parts' failures (56, 48)", labels=["family", "prefix_length"])
    counts = dict.fromkeys(_BAN_PREFIXES, 0)
    for ban in bans:
        source = ban["source"]
        # "2001:db8:1:2::/64", "fe80::/64%eth0" (a link-local one's scope), "198.51.100.7"
        length = source.partition("/")[2].partition("%")[0]
        # a key no socket gives (AuthBan counts a non-address as given) must not make labels of its text
        key = ("ipv4", "32") if ":" not in source else ("ipv6", length if length.isdigit() else "other")
        counts[key] = counts.get(key, 0) + 1
    for labels, n in sorted(counts.items()):
        family.add_metric(list(labels), n)
    return family


def ike_families(doc: dict[str, Any]) -> Iterator[Metric]:
    """The IKE service's fragmentation counters and its barrier (`tunsec status`: ike_fragments, ike_held)."""
    fragments = doc.get("ike_fragments", {})
    for name in [*IKE_FRAGMENT_HELP, *[n for n in fragments if n not in IKE_FRAGMENT_HELP]]:
        yield CounterMetricFamily(f"tunsec_ike_{name}", IKE_FRAGMENT_HELP.get(name, f"IKE fragmentation: {name}"),
                                  value=fragments.get(name, 0))
    held = doc.get("ike_held", {})
    yield GaugeMetricFamily("tunsec_ike_datagrams_waiting", "Incoming IKE datagrams waiting for an inbound SPI now",
                            value=held.get("waiting", 0))
    yield CounterMetricFamily("tunsec_ike_datagrams_held", "Incoming IKE datagrams that waited for an inbound SPI "
                              "from the worker (the pool was empty)", value=held.get("held", 0))
    yield CounterMetricFamily("tunsec_ike_auth_spi_waits", "IKE_AUTH requests that waited for an inbound SPI "
                              "(of tunsec_ike_datagrams_held)", value=held.get("spi_waits", 0))
    yield CounterMetricFamily("tunsec_ike_spis_returned", "Pooled inbound SPIs handed back to the worker "
                              "(half-open IKE SAs that timed out or failed)", value=held.get("spis_returned", 0))
    yield CounterMetricFamily("tunsec_ike_spis_late_returned", "Inbound SPIs handed back to the worker whose GETSPI "
                              "was answered after it was given up on", value=held.get("spis_late_returned", 0))
    yield CounterMetricFamily("tunsec_ike_datagrams_held_dropped", "Incoming IKE datagrams dropped because the "
                              "most that may wait for an inbound SPI already did", value=held.get("held_dropped", 0))
    yield CounterMetricFamily("tunsec_ike_datagrams_held_dropped_half_open", "Of those, datagrams of half-open IKE "
                              "SAs (not authenticated; their share of the hold queue was full)",
                              value=held.get("held_dropped_half_open", 0))
    yield GaugeMetricFamily("tunsec_ike_datagrams_waiting_half_open_max", "The most datagrams of half-open IKE SAs "
                            "that waited for an inbound SPI at once (a burst's IKE_AUTHs)",
                            value=held.get("waiting_max_half_open", 0))
    yield CounterMetricFamily("tunsec_ike_install_waits", "Times outgoing IKE waited for Child SA installs or "
                              "inbound SPIs (make-before-break)", value=held.get("install_waits", 0))
    yield from ke_pool_families(doc.get("ke_pool", {}))


def ke_pool_families(pool: dict[str, Any]) -> Iterator[Metric]:
    """The ready key pairs (`tunsec status`: ke_pool; tunsec.ike.dh_pool)."""
    taken = CounterMetricFamily("tunsec_ke_pool_key_pairs", "Ephemeral key pairs IKE_SA_INIT asked for: ready from "
                                "the pool (hit), generated on the spot because the group's pool was empty (miss) or "
                                "the group is not pooled (unpooled); and pooled ones dropped unused at their maximum "
                                "age (expired)", labels=["result"])
    for result, key in (("hit", "hits"), ("miss", "misses"), ("unpooled", "unpooled"), ("expired", "expired")):
        taken.add_metric([result], pool.get(key, 0))
    yield taken
    ready = GaugeMetricFamily("tunsec_ke_pool_ready", "Ephemeral key pairs ready now, by key exchange group",
                              labels=["group"])
    for group, n in sorted(pool.get("ready", {}).items()):
        ready.add_metric([group], n)
    yield ready


def event_families(events: EventCounts | None, worker_restarts: int) -> Iterator[Metric]:
    ike = CounterMetricFamily("tunsec_ike_sa_rekeys", "IKE SAs rekeyed", labels=["connection"])
    child = CounterMetricFamily("tunsec_child_sa_rekeys", "Child SAs rekeyed (the new SA installed)",
                                labels=["connection", "child"])
    dpd = CounterMetricFamily("tunsec_dpd_failures", "Established IKE SAs whose peer stopped answering",
                              labels=["connection"])
    ignored = CounterMetricFamily("tunsec_trap_acquires_ignored", "Packets' ACQUIREs of a trap policy ignored: "
                                  "its child was up or being created already", labels=["connection", "child"])
    held = CounterMetricFamily("tunsec_trap_acquires_held", "Packets' ACQUIREs of a trap policy that started "
                               "nothing: its child's last initiation failed, held down 2 s doubling to 165 s",
                               labels=["connection", "child"])
    gone = CounterMetricFamily("tunsec_child_sa_acquires_ignored", "Packets' ACQUIREs of a Child SA's policy "
                               "ignored: its outbound SA reached its hard limit, the DELETE or rekey was under way",
                               labels=["connection", "child"])
    migrate = CounterMetricFamily("tunsec_child_sa_migrate_failures", "MIGRATEs of a Child SA to its moved peer "
                                  "(MOBIKE, NAT rebinding) the worker refused or did not answer; retried, then "
                                  "rekeyed", labels=["connection", "child"])
    deferred = CounterMetricFamily("tunsec_ike_sa_moves_deferred", "Moves of a peer (NAT rebinding, MOBIKE) whose "
                                   "Child SAs waited for their IKE SA's move budget (a batch of MIGRATEs a second, "
                                   "two at once; the latest address applied)", labels=["connection"])
    limit = CounterMetricFamily("tunsec_child_sa_limit_refusals", "Peers' CREATE_CHILD_SA requests refused with "
                                "NO_ADDITIONAL_SAS: the IKE SA held max_child_sas Child SAs", labels=["connection"])
    claims = CounterMetricFamily("tunsec_child_sa_ts_claims_refused", "Child SAs refused (or deleted before "
                                 "their install) because their traffic selectors overlap what another peer's "
                                 "Child SAs hold", labels=["connection", "child"])
    rekey_ts = CounterMetricFamily("tunsec_child_sa_rekey_ts_refused", "Child SA rekeys refused (or kept apart "
                                   "from the old Child SA's policies) because their traffic selectors are not "
                                   "the old Child SA's", labels=["connection", "child"])
    ts_limit = CounterMetricFamily("tunsec_child_sa_ts_limit_refused", "Child SAs refused because their traffic "
                                   "selectors narrow to (or the peer's answer holds) more than an SA holds",
                                   labels=["connection", "child"])
    failed = CounterMetricFamily("tunsec_child_sa_install_failed", "Child SAs whose install the worker refused "
                                 "or did not answer, or could not take: deleted (the peer is told)",
                                 labels=["connection", "child"])
    recreate = CounterMetricFamily("tunsec_child_sa_recreate_tries", "CREATE_CHILD_SAs of a child whose rekey "
                                   "(ours) failed to install: tries to create it again, its policies held",
                                   labels=["connection", "child"])
    vip = CounterMetricFamily("tunsec_ike_sa_vip_refused", "A client's IKE SAs deleted because it cannot use "
                              "the virtual IP its gateway assigned (tried again, keyingtries)", labels=["connection"])
    skipped = CounterMetricFamily("tunsec_updown_skipped", "updown up-clients not run (nor their down-clients): "
                                  "their IKE SA had too many scripts waiting", labels=["connection", "child"])
    if events is not None:
        for (conn, name), n in sorted(events.updown_skipped.items()):
            skipped.add_metric([conn, name], n)
        for (conn, name), n in sorted(events.install_failed.items()):
            failed.add_metric([conn, name], n)
        for (conn, name), n in sorted(events.child_recreate.items()):
            recreate.add_metric([conn, name], n)
        for conn, n in sorted(events.child_sa_limit.items()):
            limit.add_metric([conn], n)
        for (conn, name), n in sorted(events.migrate_failures.items()):
            migrate.add_metric([conn, name], n)
        for conn, n in sorted(events.moves_deferred.items()):
            deferred.add_metric([conn], n)
        for (conn, name), n in sorted(events.ts_claims_refused.items()):
            claims.add_metric([conn, name], n)
        for (conn, name), n in sorted(events.rekey_ts_refused.items()):
            rekey_ts.add_metric([conn, name], n)
        for (conn, name), n in sorted(events.ts_limit_refused.items()):
            ts_limit.add_metric([conn, name], n)
        for (conn, name), n in sorted(events.acquires_ignored.items()):
            ignored.add_metric([conn, name], n)
        for (conn, name), n in sorted(events.acquires_held.items()):
            held.add_metric([conn, name], n)
        for (conn, name), n in sorted(events.child_acquires_ignored.items()):
            gone.add_metric([conn, name], n)
        for conn, n in sorted(events.ike_rekeys.items()):
            ike.add_metric([conn], n)
        for (conn, name), n in sorted(events.child_rekeys.items()):
            child.add_metric([conn, name], n)
        for conn, n in sorted(events.dpd_failures.items()):
            dpd.add_metric([conn], n)
        for conn, n in sorted(events.vip_refused.items()):
            vip.add_metric([conn], n)
    yield from (ike, child, dpd, ignored, held, gone, migrate, deferred, limit, claims, rekey_ts, ts_limit, failed,
                recreate, vip, skipped)
    yield CounterMetricFamily("tunsec_worker_restarts", "Times the dataplane worker died and was restarted",
                              value=worker_restarts)


def queue_cpu(pid: int | None, proc: str = "/proc") -> Iterator[Metric]:
    """Each worker queue's loop thread's CPU time (the C loop names its thread tunsec-qN): its load."""
    family = CounterMetricFamily("tunsec_worker_queue_cpu_seconds", "CPU time of a worker queue's packet loop",
                                 labels=["queue", "mode"])
    if pid is not None:
        tick = os.sysconf("SC_CLK_TCK")
        tasks = f"{proc}/{pid}/task"
        with contextlib.suppress(OSError):
            for tid in os.listdir(tasks):
                try:
                    with open(f"{tasks}/{tid}/stat", "rb") as f:
                        stat = f.read().decode("ascii", "replace")
                except OSError:
                    continue   # the thread ended meanwhile
                # pid (comm) state ...: comm may hold spaces and parentheses, the fields follow the last ')'
                comm = stat[stat.find("(") + 1:stat.rfind(")")]
                fields = stat[stat.rfind(")") + 2:].split()
                if not comm.startswith("tunsec-q") or len(fields) < 13:
                    continue
                queue = comm.removeprefix("tunsec-q")
                family.add_metric([queue, "user"], int(fields[11]) / tick)
                family.add_metric([queue, "system"], int(fields[12]) / tick)
    yield family


# The formats served, by name: (encoder, Content-Type).  Not prometheus_client's choose_encoder: it
# puts the version the client asks for into the Content-Type (every version one more body to build
# per cache age) and raises on one it cannot parse.
_FORMATS: dict[str, tuple[exposition.Encoder, str]] = {
    "text": (generate_latest, CONTENT_TYPE_PLAIN_0_0_4),
    "openmetrics": (openmetrics.generate_latest, openmetrics.CONTENT_TYPE_LATEST),
}


def choose_format(accept: str) -> str:
    """OpenMetrics for a client that accepts it (Prometheus does), else the text format 0.0.4."""
    media = {part.split(";", 1)[0].strip().lower() for part in accept.split(",")}
    return "openmetrics" if "application/openmetrics-text" in media else "text"


def source_of(peer: Any) -> str:
    """Whose share of the connections a peer's (host, port, ...) takes: its IPv4 address, its IPv6
    /64 (one host has all of one), or "loopback" (a local user may bind any of 127/8)."""
    try:
        addr = ipaddress.ip_address(str(peer[0]).split("%", 1)[0])
    except (TypeError, ValueError, IndexError):
        return "?"
    if addr.is_loopback:
        return "loopback"
    if addr.version == 6:
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr)


@dataclass(frozen=True)
class Body:
    """An encoded scrape, served until ``expires`` (the server's clock)."""

    data: bytes
    content_type: str
    expires: float


@dataclass(eq=False)
class _Conn:
    """A connection holding a slot: whose share it takes, and whether its request head came (it is
    being answered: never cut for another)."""

    source: str
    writer: asyncio.StreamWriter
    answering: bool = False


# --- the endpoint ------------------------------------------------------------------------
class MetricsServer:
    def __init__(self, listen: ListenAddress, source: Source, clock: Callable[[], float] = time.monotonic) -> None:
        self.listen = listen
        self.source = source
        self.clock = clock
        self._server: asyncio.AbstractServer | None = None
        self._dump: asyncio.Task[pipe.Reply] | None = None
        self._conns: list[_Conn] = []   # holding a slot, oldest first
        self._per_source: collections.Counter[str] = collections.Counter()
        self.refused = 0   # connections closed unanswered: every slot, or the source's share, taken
        self.evicted = 0   # connections closed before their request head, their slot given to a newer one
        self._bodies: dict[str, Body] = {}   # by format
        self._own_names: frozenset[str] | None = None   # the scrape's own families' (families())
        # concurrent scrapes share one build (and one DUMP) per format
        self._builds = {fmt: ctlsocket.Shared(functools.partial(self._build, fmt)) for fmt in _FORMATS}
        # what every body ends with (exposition.encode): the two processes' own families
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)   # the control process: process_cpu_seconds_total ...
        ProcessCollector(namespace="tunsec_worker", pid=lambda: str(source.worker_pid()), registry=self.registry)

    async def start(self, serve: bool = True) -> None:
        """Bind and listen; accept once serve or start_serving (the daemon: after privilege is given up)."""
        # a socket of our own: start_server(host, port) would resolve the address in
        # the loop's thread pool, and the daemon must have no thread when it drops privilege
        family = socket.AF_INET6 if self.listen.addr.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((str(self.listen.addr), self.listen.port))
            sock.listen(MAX_CLIENTS)
            sock.setblocking(False)
            self._server = await asyncio.start_server(self._serve, sock=sock, limit=MAX_REQUEST_HEAD,
                                                      start_serving=serve)
        except OSError as err:
            sock.close()
            raise ListenError(
                f"cannot listen for Prometheus scrapes on TCP {self.listen} (tunsec {{ metrics_listen }}): "
                f"{os.strerror(err.errno) if err.errno else err}; choose a free port, or an address this host has"
            ) from err
        log.info("Prometheus metrics on http://%s/metrics", self.listen)

    async def start_serving(self) -> None:
        if self._server is not None:
            await self._server.start_serving()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._dump is not None and not self._dump.done():
            self._dump.cancel()

    # One DUMP at a time: concurrent scrapes share it, and one that timed out
    # leaves it running (the pipe client bounds it) rather than cancelling it.
    async def _worker_dump(self) -> pipe.Reply | None:
        if self._dump is None or self._dump.done():
            self._dump = asyncio.ensure_future(self.source.dump())
            self._dump.add_done_callback(lambda t: t.cancelled() or t.exception())
        try:
            return await asyncio.wait_for(asyncio.shield(self._dump), DUMP_TIMEOUT)
        except TimeoutError:
            log.warning("metrics: the worker did not answer a DUMP within %.0f s", DUMP_TIMEOUT)
            return None
        except Exception as err:   # WorkerError, or a worker that is being restarted
            log.debug("metrics: no DUMP from the worker: %s", err)
            return None

    async def render(self, accept: str) -> tuple[bytes, str]:
        fmt = choose_format(accept)
        body = self._bodies.get(fmt)
        if body is None or self.clock() >= body.expires:
            body = await self._builds[fmt].get()
        return body.data, body.content_type

    async def _build(self, fmt: str) -> Body:
        """A body for fmt: the one built while this waited for its turn (Shared) if it is fresh."""
        body = self._bodies.get(fmt)
        if body is not None and self.clock() < body.expires:
            return body
        reply = await self._worker_dump()
        started = self.clock()
        empty = pipe.Reply(1, pipe.MsgType.DUMP, pipe.Errno.OK)
        doc = await self.source.document(reply if reply is not None else empty)
        parts = await self.families(doc, reply is not None)
        await release(doc)   # the body is what stays
        data = exposition.encode(_FORMATS[fmt][0], parts, self.registry)
        now = self.clock()
        body = self._bodies[fmt] = Body(data, _FORMATS[fmt][1], now + max(CACHE_AGE, CACHE_LOAD * (now - started)))
        return body

    async def families(self, doc: dict[str, Any], worker_up: bool) -> list[Metric | Written]:
        """A scrape's families, in the order of the body (the processes' own follow them); of the names
        the worker chose, those that clash with none of the scrape's own (tunsec.metrics_names)."""
        if self._own_names is None:   # once: the families of a document that names nothing of the worker's
            self._own_names = names_of(await self._families({}, True, WorkerNames()))
        return await self._families(doc, worker_up, WorkerNames(self._own_names))

    async def _families(self, doc: dict[str, Any], worker_up: bool, names: WorkerNames) -> list[Metric | Written]:
        return [
            *state_families(doc, worker_up, await policy_family(doc), names),
            *await sa_families(doc, names),
            *ike_families(doc),
            *event_families(self.source.events(), self.source.worker_restarts()),
            *queue_cpu(self.source.worker_pid()),
            CounterMetricFamily("tunsec_metrics_connections_refused", "Connections to this endpoint closed "
                                "unanswered: every slot, or the share of their source address, was taken",
                                value=self.refused),
            CounterMetricFamily("tunsec_metrics_connections_evicted", "Connections to this endpoint closed "
                                "before their request came, for a newer one: every slot was taken (the oldest "
                                "waiting of the source holding the most)", value=self.evicted),
            names.family(),
        ]

    @property
    def _clients(self) -> int:
        return len(self._conns)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn(source_of(writer.get_extra_info("peername")), writer)
        if self._per_source[conn.source] >= MAX_PER_SOURCE or (len(self._conns) >= MAX_CLIENTS
                                                                and not self._evict()):
            self.refused += 1
            writer.close()
            return
        self._conns.append(conn)
        self._per_source[conn.source] += 1
        try:
            await self._answer(reader, writer, conn)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass   # a client that is slow, gone (or evicted) or sends too much gets nothing
        finally:
            self._release(conn)
            # closed: nothing; else the socket and any answer left unread go now (close() would keep them
            # until a client that never reads took them: for ever, its slot given back)
            writer.transport.abort()

    def _release(self, conn: _Conn) -> None:
        """conn's slot free (once: an evicted connection's went at its eviction)."""
        if conn not in self._conns:
            return
        self._conns.remove(conn)
        self._per_source[conn.source] -= 1
        if self._per_source[conn.source] <= 0:
            del self._per_source[conn.source]

    def _evict(self) -> bool:
        """Every slot taken: free the one of the oldest connection still waiting for its request head
        from the source holding the most (a flood from a few sources pays, a scraper's connection,
        idle for the moment it takes to send its request, hardly ever); False if all are being answered."""
        waiting = [c for c in self._conns if not c.answering]
        if not waiting:
            return False
        most = max(self._per_source[c.source] for c in waiting)
        victim = next(c for c in waiting if self._per_source[c.source] == most)   # oldest first
        self._release(victim)
        victim.writer.transport.abort()   # its readuntil ends (IncompleteReadError): nothing is sent to it
        self.evicted += 1
        return True

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: _Conn) -> None:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
        conn.answering = True
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            status, body, ctype = "400 Bad Request", b"bad request\n", "text/plain"
        elif parts[0] not in ("GET", "HEAD"):
            status, body, ctype = "405 Method Not Allowed", b"GET /metrics\n", "text/plain"
        elif parts[1].split("?")[0] != "/metrics":
            status, body, ctype = "404 Not Found", b"tunsec: metrics are at /metrics\n", "text/plain"
        else:
            status = "200 OK"
            body, ctype = await self.render(headers.get("accept", ""))
        async with asyncio.timeout(REQUEST_TIMEOUT):
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                         "Connection: close\r\n\r\n".encode("latin-1"))
            if parts[0] != "HEAD":
                # a chunk at a time: handed over whole, each client not reading would hold a copy
                view = memoryview(body)
                for at in range(0, len(view), WRITE_CHUNK):
                    writer.write(view[at:at + WRITE_CHUNK])
                    await writer.drain()
            writer.close()
            await writer.wait_closed()   # after the answer's last byte went (drain() leaves up to 64 KiB)


async def start(listen: ListenAddress, source: Source, clock: Callable[[], float] = time.monotonic,
                serve: bool = True) -> MetricsServer:
    """Serve GET /metrics on ``listen`` from the running event loop (once start_serving if not serve);
    ListenError if it cannot bind."""
    server = MetricsServer(listen, source, clock)
    await server.start(serve)
    return server
