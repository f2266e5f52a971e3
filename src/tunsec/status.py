"""What `tunsec status` shows: a JSON document (no key material ever enters
it) and its rendering for people.  The daemon writes its own part (TUN,
worker, the worker's SAs, policies and drop counters); each service adds its
own keys (Service.status).

The document of thousands of clients is built on the control process's event loop, which also
answers IKE, DPD and RADIUS: its long lists (the worker's SAs and policies, the IKE SAs, the leases)
come as :class:`Rows`, taken at once (a consistent snapshot) and turned into their JSON objects
:data:`SLICE` at a time, back to the loop between slices (:func:`status_document_sliced`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from tunsec.dataplane.pipe import PolicyInfo, Reply, SaInfo, Selector
from tunsec.printable import escaped

if TYPE_CHECKING:
    from tunsec.daemon import Daemon

T = TypeVar("T")

# Rows formatted per turn of the event loop: an IKE SA's row costs ~50 us (more on a loaded machine),
# so a slice holds the loop for a few milliseconds, well inside a retransmission or DPD timer's slack
SLICE = 128


@dataclass(frozen=True)
class Rows(Generic[T]):
    """A long list of the document: ``items`` is what there is now (taken at once, so a client
    arriving or leaving while the rows are formatted is neither shown twice nor missing, and no
    live dict is iterated across a turn of the loop), ``row`` makes one item's JSON object."""

    items: Sequence[T]
    row: Callable[[T], dict[str, Any]]
    # A scrape's row (status_document_sliced(scrape=True)): only the keys the metrics read of one,
    # where row makes more (the full IKE SA rows were ~30% of a scrape's CPU at 1,000 clients, nearly
    # all thrown away); None: row.  scraped=False: the metrics read none of these rows, a scrape's document has [].
    brief: Callable[[T], dict[str, Any]] | None = None
    scraped: bool = True
    # items taken only for a document that shows them (set: items is ignored): a scrape does not walk
    # what it has no row for (every lease a pool holds, offline ones too: review revscrape F1)
    take: Callable[[], Sequence[T]] | None = None

    def taken(self) -> Rows[T]:
        """These rows with their items taken now (see take)."""
        return self if self.take is None else replace(self, items=self.take(), take=None)

    def all(self) -> list[dict[str, Any]]:
        return [self.row(x) for x in self.taken().items]

    async def sliced(self, scrape: bool = False) -> list[dict[str, Any]]:
        """The rows (a scrape's: see brief), SLICE at a time, back to the event loop after each slice."""
        out: list[dict[str, Any]] = []
        if scrape and not self.scraped:
            return out
        row, items = (self.brief or self.row) if scrape else self.row, self.taken().items
        for at in range(0, len(items), SLICE):
            out.extend([row(x) for x in items[at:at + SLICE]])
            await asyncio.sleep(0)
        return out


def _sel(s: Selector) -> str:
    def rng(lo: object, hi: object) -> str:
        return str(lo) if lo == hi else f"{lo}-{hi}"

    text = f"{rng(s.src_lo, s.src_hi)} -> {rng(s.dst_lo, s.dst_hi)}"
    if s.proto:
        text += f" proto {s.proto}"
    for name, (lo, hi) in (("sport", s.sport), ("dport", s.dport)):
        if (lo, hi) != (0, 65535):
            text += f" {name} {rng(lo, hi)}"
    return text


# The keys of an SA's status that are not counters.  The others are the worker's per-SA
# counters by name (SaInfo.counters: enum ts_sa_counter), so a counter the fast path gains
# shows here, in the text below and in the metrics without a change to this module.
SA_FIELDS = frozenset({"spi", "direction", "state", "alg", "esn", "replay_window", "seq", "age_seconds",
                       "local", "remote"})


def sa_status(sa: SaInfo) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "spi": f"{sa.spi:08x}",
        "direction": sa.direction.name.lower(),
        "state": sa.state,
        "alg": sa.alg.name.lower() if sa.alg else None,
        "esn": sa.esn,
        "replay_window": sa.replay_window,
        "seq": sa.seq,
        "age_seconds": sa.age_seconds,
        "local": f"{sa.local.addr}[{sa.local.port}]" if sa.local else None,
        "remote": f"{sa.remote.addr}[{sa.remote.port}]" if sa.remote else None,
    }
    for name, count in sa.counters.items():
        if name not in SA_FIELDS:   # tests/dataplane/test_c_interface.py keeps the header's names apart
            doc[name] = count
    return doc


def sa_counters_text(sa: dict[str, Any]) -> str:
    """'N packets, M bytes' and the SA's other counters; drops (the *_drops counters) only inbound."""
    text = f"{sa.get('packets', 0)} packets, {sa.get('bytes', 0)} bytes"
    drops = []
    for name, count in sa.items():
        if name in SA_FIELDS or name in ("packets", "bytes"):
            continue
        if name.endswith("_drops"):
            drops.append(f"{name.removesuffix('_drops')} {count}")
        else:
            text += f", {name} {count}"
    if drops and sa["direction"] == "in":
        text += ", drops: " + " ".join(drops)
    return text


def _policy(p: PolicyInfo) -> dict[str, Any]:
    return {
        "id": p.id,
        "action": p.action.name.lower(),
        "priority": p.priority,
        "reqid": p.reqid,
        "out_spi": f"{p.out_spi:08x}" if p.out_spi else None,
        "packets": p.packets,
        "selector": _sel(p.selector),
    }


def _policy_brief(p: PolicyInfo) -> dict[str, Any]:
    """What a scrape reads of a policy (tunsec_policy_packets): not its selector's text, a few
    addresses formatted per policy, two policies per client."""
    return {"id": p.id, "action": p.action.name.lower(), "packets": p.packets}


def filled(doc: dict[str, Any]) -> dict[str, Any]:
    """doc with its Rows formatted at once."""
    return {k: v.all() if isinstance(v, Rows) else v for k, v in doc.items()}


def status_document(d: Daemon, dump: Reply) -> dict[str, Any]:
    """The whole document at once (tests; status_document_sliced gives the same in slices)."""
    return filled(status_rows(d, dump))


async def status_document_sliced(d: Daemon, dump: Reply, scrape: bool = False) -> dict[str, Any]:
    """The document, its long lists formatted a slice at a time (the control socket, the metrics);
    scrape: those lists' rows hold only what the metrics read of them (Rows.brief, Rows.scraped)."""
    doc = status_rows(d, dump)
    # every list the document shows is taken now, before the first slice: all at one moment
    doc = {k: v.taken() if isinstance(v, Rows) and (v.scraped or not scrape) else v for k, v in doc.items()}
    for key, value in doc.items():
        if isinstance(value, Rows):
            doc[key] = await value.sliced(scrape)
    return doc


async def release(doc: dict[str, Any]) -> None:
    """Frees doc's long lists SLICE rows per turn of the loop (thousands of clients' rows freed at
    once held it for tens of milliseconds); doc is of no use after."""
    for value in doc.values():
        if isinstance(value, list):
            while len(value) > SLICE:
                del value[-SLICE:]
                await asyncio.sleep(0)


def status_rows(d: Daemon, dump: Reply) -> dict[str, Any]:
    """The document with its long lists as Rows, every one taken now."""
    doc: dict[str, Any] = {
        "tun": {"name": d.cfg.tunsec.tun, "mtu": d.mtu, "created": bool(d.tun and d.tun.created),
                "offloads": d.tun.offload_names() if d.tun else [], "vnet_hdr": bool(d.tun and d.tun.vnet_hdr),
                # tunnels' networks the kernel refused to route through the TUN (a reload's): blocked, a
                # prohibit route of ours refuses their traffic; not blocked, the host's routes may carry it
                "unrouted": [{"network": str(net), "blocked": u.blocked, "reason": u.why}
                             for net, u in (d.tun.unrouted.items() if d.tun else ())],
                # the TUN's routes (and rules) put back since the start; those removed and not back (routekeep.py)
                **(d.route_keeper.status() if d.route_keeper is not None else {})},
        "udp_offloads": d.sockets.offloads(),
        # gauges: the worker's values of now (DUMP's GAUGEs: its live C allocations, policies in its SPD);
        # malformed: datagrams from it the control process could not decode, dropped (since it started);
        # late_answers: answers to requests nobody waited for any more (timed out), dropped;
        # dump_overflows: DUMP answers that grew past client.DUMP_MAX_BYTES, failed (a lying worker);
        # stderr_dropped: lines of its stderr over the relay's rate limit, dropped (stderr_relay.py);
        # unowned_events: events naming no service's SA or policy, since tunsec started (worker_distrust);
        # refused_expires: EXPIREs for limits the SA was never given, ignored (the services');
        # expires_after_rekey: EXPIREs of SAs of Child SAs just rekeyed or deleted, ignored (going_sas.py)
        "worker": {"pid": d.worker.pid, "restarts": len(d.restarts), "gauges": dict(dump.gauges),
                   "malformed": d.worker.malformed, "late_answers": d.worker.late,
                   "dump_overflows": d.worker.dump_overflows, "stderr_dropped": d.worker.stderr_dropped,
                   "unowned_events": d.unowned.count,
                   "refused_expires": sum(svc.refused_expires for svc in d.services),
                   "expires_after_rekey": sum(svc.expires_after_rekey for svc in d.services)},
        # malloc_trims: times the control process gave its free heap back after a burst (memtrim);
        # the worker's are among its gauges
        # control_socket: requests refused (busy: every connection slot taken) or cut short, since the
        # start; not asdict(), whose tuple(<generator>) left a tuple per call in a free list (test_ike_memory)
        "control": {"malloc_trims": d.calm.trims if d.calm is not None else 0,
                    "control_socket": dict(vars(d.ctl_counts))},
        "uptime_seconds": int(time.time() - d.started),
        # larval SAs are the inbound SPIs IKE keeps ready (GETSPI): counted, not listed
        "sas": Rows([sa for sa in dump.sas if sa.state != "larval"], sa_status),
        "larval_sas": sum(1 for sa in dump.sas if sa.state == "larval"),
        "policies": Rows(dump.policies, _policy, _policy_brief),
        "drops": dict(dump.drops),
    }
    for part in d.service_status(dump):
        doc.update(part)
    return doc


def _peer_auth(ike: dict[str, Any]) -> str:
    """How a client authenticated, as strongSwan's list-sas shows it: its EAP identity only where
    that is not the IKE identity it sent, and its groups ("" when there is neither)."""
    parts = []
    eap = ike.get("remote_eap_id")
    if eap is not None and eap != ike.get("remote_ike_id"):
        parts.append(f"EAP identity {escaped(eap)} (IKE identity {escaped(ike.get('remote_ike_id') or '-')})")
    if groups := ike.get("groups"):
        parts.append("groups: " + ", ".join(escaped(g) for g in groups))
    if ike.get("remote_id_proven") is False:
        parts.append("identity unproven (RADIUS proved no user)")
    return ", ".join(parts)


# the text lines of the per-child event counts of the status document, in this order: its key, the line's title
_BY_CHILD = (
    ("ts_claims_refused", "Child SAs refused, their selectors another peer's"),
    ("rekey_ts_refused", "Child SA rekeys refused, their selectors not the old Child SA's"),
    ("install_failed", "Child SAs deleted, their install failed"),
    ("ts_limit_refused", "Child SAs refused, their selectors more than an SA holds"),
    ("child_recreate", "Child SAs created again after our rekey's failed install (tries)"),
    ("updown_skipped", "updown scripts not run, too many of the IKE SA's waiting"),
)


def render(doc: dict[str, Any]) -> str:
    tun, worker = doc["tun"], doc["worker"]
    lines = [
        f"tunsec: TUN {tun['name']} MTU {tun['mtu']}, worker pid {worker['pid']} "
        f"(restarts {worker['restarts']}), up {doc['uptime_seconds']}s"
        + (f", control malloc_trims {trims}" if (trims := doc.get("control", {}).get("malloc_trims")) else ""),
        f"offloads: TUN {', '.join(tun['offloads']) or 'none'}; UDP {', '.join(doc['udp_offloads']) or 'none'}",
    ]
    for u in tun.get("unrouted", ()):
        held = ("its traffic refused (prohibit route)" if u["blocked"]
                else "NOT blocked: its traffic may leave in clear by the host's other routes")
        lines.append(f"unrouted: {u['network']}, {held}: {u['reason']}")
    for lost in tun.get("routes_lost", ()):
        lines.append(f"route lost: {lost['network']}: {lost['reason']}")
    if tun.get("routes_put_back") or tun.get("rules_put_back"):
        lines.append(f"routes put back after someone else or the kernel removed them: {tun['routes_put_back']} "
                     f"(rules {tun['rules_put_back']})")
    gauges = worker.get("gauges") or {}
    if gauges or any(worker.get(k) for k in ("malformed", "late_answers", "dump_overflows", "stderr_dropped")):
        lines.append("worker: " + ", ".join([f"{k} {v}" for k, v in gauges.items()]
                                            + [f"malformed messages {worker.get('malformed', 0)}",
                                               f"late answers {worker.get('late_answers', 0)}"]
                                            + ([f"DUMP answers too large {n}"]
                                               if (n := worker.get("dump_overflows")) else [])
                                            + ([f"stderr lines dropped {n}"]
                                               if (n := worker.get("stderr_dropped")) else [])))
    if any((ctl := doc.get("control", {}).get("control_socket", {})).values()):
        lines.append("control socket refused or cut short: " + ", ".join(f"{k} {v}" for k, v in ctl.items()))
    # once, not per IKE SA: rebuilt in the loop it made rendering N clients O(N²) (seconds at a few thousand)
    counters = {(s["spi"], s["direction"], s["remote"] if s["direction"] == "out" else None): s
                for s in doc.get("sas", ())}   # no IKE service: neither is there
    for ike in doc.get("ike_sas", []):
        lines.append(
            f"{ike['name']}: IKEv2 {ike['state']} with {ike['remote']}"
            + (f" at {ike['local']}" if ike.get("local") else "")
            + f", {ike['proposal'] or '-'}, "
            f"SPIs {ike['spi_i']}_i {ike['spi_r']}_r{'*' if ike['initiator'] else ''}, "
            f"{ike['local_id'] or '-'} <-> {escaped(ike['remote_id'] or '-')}"
            + (", MOBIKE" if ike.get("mobike") else "")
            + (f", up {ike['age_seconds']}s" if ike["age_seconds"] is not None else "")
        )
        if auth := _peer_auth(ike):
            lines.append(f"  {auth}")
        if (used := ike.get("usage")) is not None:
            lines.append(f"  accounted: in {used['octets_in']} bytes ({used['packets_in']} packets), "
                         f"out {used['octets_out']} bytes ({used['packets_out']} packets)")
        if ike.get("local_vips") or ike.get("remote_vips"):
            lines.append(f"  virtual IPs: local {', '.join(ike.get('local_vips') or ['-'])}, "
                         f"remote {', '.join(ike.get('remote_vips') or ['-'])}")
        for c in ike["children"]:
            lines.append(f"  {c['name']}: {c['alg']}{', ESN' if c['esn'] else ''}, SPIs {c['spi_in']}_i "
                         f"{c['spi_out']}_o to {c['remote']}, up {c['age_seconds']}s")
            for spi, d, peer in ((c["spi_in"], "in", None), (c["spi_out"], "out", c.get("remote"))):
                sa = counters.get((spi, d, peer))
                if sa:
                    lines.append(f"    {d:<3} {sa_counters_text(sa)}")
            lines.append(f"    {', '.join(c['local_ts'])} === {', '.join(c['remote_ts'])}")
    if doc.get("leases"):
        lines.append("leases:")
        for x in doc["leases"]:
            # how the identity was proven: two leases of one name are two clients (policy/pools.py)
            proof = f" ({escaped(x['proof'])})" if x.get("proof") else ""
            lines.append(f"  {x['pool']}: {x['address']} {x['status']} {escaped(x['identity'])}{proof}")
    for t in doc["tunnels"]:
        lines.append(f"{t['name']}: {t['type']} {t['local']} <-> {t['remote']} {t['esp']}")
        lines.append(f"  {', '.join(t['local_ts'])} === {', '.join(t['remote_ts'])}")
        for sa in t["sas"]:
            window = f", replay window {sa['replay_window']}" if sa["direction"] == "in" else ""
            lines.append(
                f"  {sa['direction']:<3} SPI {sa['spi']} {sa['state']}: {sa_counters_text(sa)}, "
                f"seq {sa['seq']}{', ESN' if sa['esn'] else ''}{window}"
            )
        for sa in t.get("expired", ()):
            lines.append(f"  {sa['direction']:<3} SPI {sa['spi']} expired: hard {sa['reason']} limit reached, "
                         f"removed, traffic dropped; {sa['hint']}")
        if t.get("not_installed"):   # left out by a restarted worker: tried again on its own (manual_retry.py)
            until = "tried again every second" if t.get("retrying") else "until a reload installs it"
            lines.append(f"  not installed, traffic dropped {until}: {t['not_installed']}")
    if doc["policies"]:
        lines.append("policies:")
        for p in doc["policies"]:
            spi = f" -> SPI {p['out_spi']}" if p["out_spi"] else ""
            lines.append(f"  {p['id']:>5} {p['action']:<8} {p['selector']}{spi}: {p['packets']} packets")
    drops = doc["drops"]
    lines.append("drops: " + ", ".join(f"{k} {v}" for k, v in drops.items()))
    if doc.get("ike_drops"):
        busiest = f": {doc['ike_half_open_busiest']}" if doc.get("ike_half_open_busiest") else ""
        lines.append(f"IKE: {doc['ike_half_open']} half-open from {doc.get('ike_half_open_addresses', 0)} "
                     f"addresses or IPv6 prefixes (at most {doc.get('ike_half_open_max_per_address', 0)} from one"
                     f"{busiest}); unauthenticated: "
                     + ", ".join(f"{k} {v}" for k, v in doc["ike_drops"].items()))
    if bans := doc.get("auth_bans"):   # sources refused for failed authentications (tunsec.ike.auth_ban)
        lines.append("IKE_SA_INIT refused (failed authentications): " + ", ".join(
            f"{b['source']} for {b['seconds_left']}s ({b['failures']} failures)" for b in bans))
    if bans := doc.get("auth_bans_worker_path"):   # the same, of IKE SAs opened through the worker
        lines.append("IKE_SA_INIT refused through the worker's port 4500 only (failed authentications there): "
                     + ", ".join(f"{b['source']} for {b['seconds_left']}s ({b['failures']} failures)" for b in bans))
    if uncounted := doc.get("auth_ban_uncounted"):   # the ban table full of bans in force
        lines.append(f"failed authentications not counted (ban table full of bans): {uncounted}")
    if doc.get("ike_refused"):
        lines.append("IKE requests refused from authenticated peers: "
                     + ", ".join(f"{k} {v}" for k, v in doc["ike_refused"].items()))
    if any((excl := doc.get("exclude_routes") or {}).values()):   # a TUN route covers IKE peers
        lines.append("exclude routes: " + ", ".join(f"{k} {v}" for k, v in excl.items()))
    if unanswered := doc.get("ike_sends_unanswered"):   # only once there are any: the worker's fault
        lines.append(f"IKE sent through the worker (port 4500), given up unanswered: {unanswered}")
    if other := doc.get("ike_natt_other_local_port"):   # only once there are any: the worker's word is wrong
        lines.append(f"IKE from the worker naming a local port not its 4500 (answered from 4500): {other}")
    if refused := doc.get("ike_reserve_refused"):   # only once there are any: the worker was full
        lines.append(f"IKE SAs the worker had no room for (their IKE has no reserve against floods): {refused}")
    spis = doc.get("ike_spis") or {}
    if any(spis.values()):   # only once there are any: rare clashes, or a bug (successors_refused)
        lines.append(f"IKE SPIs drawn again (in use or reserved): {spis.get('redrawn', 0)}, new IKE SAs of rekeys "
                     f"or redirects dropped, their SPI taken (an internal error): {spis.get('successors_refused', 0)}")
    if doc.get("ike_fragments"):
        lines.append("IKE fragments: " + ", ".join(f"{k} {v}" for k, v in doc["ike_fragments"].items()))
    if doc.get("ike_held"):
        lines.append("IKE held for inbound SPIs and installs: "
                     + ", ".join(f"{k} {v}" for k, v in doc["ike_held"].items()))
    if pool := doc.get("ke_pool"):
        ready = ", ".join(f"{g} {n}" for g, n in pool.get("ready", {}).items()) or "none (ke_pool = 0)"
        lines.append(f"key pairs ready: {ready}; taken ready {pool.get('hits', 0)}, generated when the pool was "
                     f"empty {pool.get('misses', 0)} or its group not pooled {pool.get('unpooled', 0)}, "
                     f"expired unused {pool.get('expired', 0)}")
    ignored = doc.get("acquires_ignored") or {}
    if any(ignored.values()):   # only once there are any: one line, by child
        lines.append("ACQUIREs ignored: " + "; ".join(
            f"{what}: " + ", ".join(f"{c['connection']}/{c['child']} {c['count']}" for c in ignored[key])
            for key, what in (("trap", "trap policy, child up or being created"),
                              ("trap_held", "trap policy, held down after its initiation failed"),
                              ("child_sa", "Child SA past its hard limit, DELETE or rekey under way"))
            if ignored.get(key)))
    if limited := doc.get("child_sa_limit"):
        lines.append("Child SAs refused over max_child_sas: " + ", ".join(f"{c} {n}" for c, n in limited.items()))
    for key, title in _BY_CHILD:   # each only once there are any
        if rows := doc.get(key):
            lines.append(f"{title}: " + ", ".join(f"{c['connection']}/{c['child']} {c['count']}" for c in rows))
    if refused := doc.get("vip_refused"):   # only once there are any
        lines.append("IKE SAs deleted, their virtual IP refused: " + ", ".join(f"{c} {n}" for c, n in refused.items()))
    return "\n".join(lines)
