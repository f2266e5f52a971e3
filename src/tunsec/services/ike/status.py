"""The IKE part of ``tunsec status``: IKE SAs, their Child SAs, leases, counters."""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

from tunsec.dataplane import pipe
from tunsec.ike.endpoint import EndpointStats
from tunsec.ike.fragments import FragmentStats

if TYPE_CHECKING:
    from tunsec.services.ike.service import IkeService

# Named once: dataclasses.asdict()/fields() build a tuple(<generator>) per call, and each such
# 7-tuple stays in CPython's free list for that length (see the note in dataplane/pipe/decoding.py).
_IKE_DROPS = tuple([f.name for f in dataclasses.fields(EndpointStats)])
_FRAGMENT_COUNTERS = tuple([f.name for f in dataclasses.fields(FragmentStats)])


def status(self: IkeService, dump: pipe.Reply) -> dict[str, Any]:
    return {
        "ike_sas": self.ike_sas(),
        "leases": self.leases(),
        # unauthenticated IKE: half-open responder SAs now, and what was dropped or answered statelessly
        "ike_half_open": self.endpoint.half_open,
        "ike_drops": {n: getattr(self.endpoint.stats, n) for n in _IKE_DROPS},
        # IKE fragmentation (RFC 7383): messages split and reassembled, fragments dropped
        "ike_fragments": {n: getattr(self.endpoint.fragment_stats, n) for n in _FRAGMENT_COUNTERS},
        # the barrier: incoming datagrams that waited for an inbound SPI (now, in all, dropped at
        # HELD_MAX), and how often outgoing ones waited for installs or SPIs (see receive)
        "ike_held": {"waiting": self.spi_pool.held_waiting, "held": self.spi_pool.held_total,
                     "held_dropped": self.spi_pool.held_dropped,
                     "install_waits": self.barrier.install_waits},
        # auth = eap-radius: requests and answers, what was dropped, what is open now, each server's
        # health, and accounting's counters
        "radius": {} if self.radius is None else self.radius.status(self.accounting),
    }


def idle_status(cls: type[IkeService]) -> dict[str, Any]:
    return {"ike_sas": [], "leases": [], "ike_half_open": 0, "ike_drops": {}, "ike_fragments": {}, "ike_held": {},
            "radius": {}}


def ike_sas(self: IkeService) -> list[dict[str, Any]]:
    out = []
    for sa in self.endpoint.sas:
        info = self.ike_up.get(sa.local_spi, {})
        out.append({
            "name": sa.name,
            "state": sa.state.value,
            "initiator": sa.is_initiator,
            "remote": f"{sa.remote_addr[0]}[{sa.remote_addr[1]}]",
            "mobike": sa.mobike,   # RFC 4555 negotiated: only UPDATE_SA_ADDRESSES moves it
            "proposal": info.get("proposal"),
            "local_id": info.get("local_id"),
            "remote_id": info.get("remote_id"),
            "spi_i": sa.spi_i.hex(),
            "spi_r": sa.spi_r.hex(),
            "local_vips": info.get("local_vips", []),
            "remote_vips": info.get("remote_vips", []),
            "age_seconds": int(time.time() - info["established"]) if info else None,
            "children": [
                {"name": c.child, "spi_in": f"{c.spi_in:08x}", "spi_out": f"{c.spi_out:08x}", "alg": c.alg,
                 "esn": c.esn, "reqid": c.reqid, "remote": f"{c.remote.addr}[{c.remote.port}]",
                 "local_ts": [str(t) for t in c.local_ts], "remote_ts": [str(t) for t in c.remote_ts],
                 "age_seconds": int(time.time() - c.established)}
                for c in self.children.values()
                if c.ike == self._ike_handles.get(sa) and self._ike_sa(c.ike) is sa
            ],
        })
    return out


def leases(self: IkeService) -> list[dict[str, Any]]:
    """Virtual IP leases for ``tunsec status``: pool, address, identity, online or offline."""
    return [{"pool": x.pool, "address": str(x.address), "identity": x.identity,
             "status": "online" if x.online else "offline"} for x in self.pools.leases()]
