"""A scrape's document has no lease rows (no metric reads one), so it must not walk the pools'
leases either: every lease a pool holds, offline ones too, in one go on the event loop (review
revscrape F1: ~0.2 s of a scrape's CPU at 50,000 bound leases). `tunsec status` still lists them."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import status_state

from tunsec import status
from tunsec.ike.identity import Identity
from tunsec.policy.pools import AddressPools, LeaseInfo, PoolConfig
from tunsec.services.ike import status as ike_status


class CountedPools(AddressPools):
    """Real pools; counts the lease snapshots taken."""

    snapshots = 0

    def leases(self) -> list[LeaseInfo]:
        self.snapshots += 1
        return super().leases()


def _daemon(pools: AddressPools) -> tuple[Any, Any]:
    gw = status_state.gateway(20)
    d = status_state.daemon(gw)
    # the IKE part as IkeService.status_rows makes it: its leases from the service's AddressPools
    d.service_status = lambda dump: [{"tunnels": []}, {**gw.ike_part(), "leases": ike_status.lease_rows(pools)}]
    return gw, d


def test_a_scrape_takes_no_lease_snapshot() -> None:
    pools = CountedPools([PoolConfig("p", ipaddress.ip_address("10.1.0.0"), ipaddress.ip_address("10.1.255.255"))])
    for i in range(300):   # leases bound to identities, online or not
        pools.acquire(["p"], Identity.parse(f"user{i}@example.org"), 4)
    gw, d = _daemon(pools)
    dump = gw.dump()

    doc = asyncio.run(status.status_document_sliced(d, dump, scrape=True))
    assert doc["leases"] == []
    assert pools.snapshots == 0, "a scrape walked every lease of the pools and threw the result away"


def test_tunsec_status_still_shows_every_lease() -> None:
    """The fix must keep `tunsec status`'s leases (passes on main too)."""
    pools = CountedPools([PoolConfig("p", ipaddress.ip_address("10.1.0.0"), ipaddress.ip_address("10.1.255.255"))])
    for i in range(30):
        pools.acquire(["p"], Identity.parse(f"user{i}@example.org"), 4)
    gw, d = _daemon(pools)
    doc = asyncio.run(status.status_document_sliced(d, gw.dump()))
    assert [x["identity"] for x in doc["leases"]][:2] == ["user0@example.org", "user1@example.org"]
    assert len(doc["leases"]) == 30 and pools.snapshots == 1
