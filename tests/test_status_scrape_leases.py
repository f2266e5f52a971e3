"""A scrape's document has no lease rows (no metric reads one), so it must not walk the pools'
leases either: every lease a pool holds, offline ones too, in one go on the event loop (review
revscrape F1: ~0.2 s of a scrape's CPU at 50,000 bound leases). `tunsec status` still lists them."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import pytest
import status_state

from tunsec import status
from tunsec import status as status_mod
from tunsec.ike.identity import Identity
from tunsec.policy import pools as pools_mod
from tunsec.policy.pools import AddressPools, LeaseInfo, LeaseRef, PoolConfig
from tunsec.services.ike import status as ike_status


class CountedPools(AddressPools):
    """Real pools; counts the lease snapshots taken."""

    snapshots = 0

    def lease_snapshot(self) -> list[LeaseRef]:
        self.snapshots += 1
        return super().lease_snapshot()


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


def test_tunsec_status_makes_its_lease_rows_a_slice_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """`tunsec status` took every lease as a LeaseInfo at once (an address object and the identity's
    text each: ~0.2 s holding the event loop at 50,000 bound leases) before slicing the rows; now the
    snapshot keeps offsets and owners, each LeaseInfo made in its slice: another task on the loop runs
    while some, not all, have been made."""
    made: list[int] = [0]

    class Counted(LeaseInfo):
        def __init__(self, *args: Any) -> None:
            made[0] += 1
            super().__init__(*args)

    monkeypatch.setattr(pools_mod, "LeaseInfo", Counted)
    n = 3 * status_mod.SLICE
    pools = CountedPools([PoolConfig("p", ipaddress.ip_address("10.1.0.0"), ipaddress.ip_address("10.1.255.255"))])
    for i in range(n):
        pools.acquire(["p"], Identity.parse(f"user{i}@example.org"), 4)
    made[0] = 0
    gw, d = _daemon(pools)
    seen: list[int] = []

    async def watch() -> None:
        while made[0] < n:
            seen.append(made[0])
            await asyncio.sleep(0)

    async def main() -> dict[str, Any]:
        watcher = asyncio.create_task(watch())
        doc = await status.status_document_sliced(d, gw.dump())
        await watcher
        return doc

    doc = asyncio.run(main())
    assert len(doc["leases"]) == n and made[0] == n
    assert any(0 < k < n for k in seen), seen
