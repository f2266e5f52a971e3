"""The host's addresses as a set of interface entries and a count per address: one address may sit
on two interfaces, and the host loses it only with its last entry.  The IKE service's list of the
host's addresses (services/ike/host_addresses.py) and the address feed's record of those the worker
was told of (services/addr_feed.py) keep one each."""

from __future__ import annotations

from collections.abc import Iterable

from tunsec.policy.selector import IPAddress
from tunsec.services.addrwatch import InterfaceAddress


class AddressCount:
    def __init__(self, found: Iterable[InterfaceAddress] = ()) -> None:
        self.entries: set[InterfaceAddress] = set(found)
        self.count: dict[IPAddress, int] = {}   # address -> its entries
        for which in self.entries:
            self.count[which.local] = self.count.get(which.local, 0) + 1

    def one(self, added: bool, which: InterfaceAddress) -> bool:
        """One entry added or removed; whether the host gained or lost the address by it (an entry
        added again is an address changed, lifetimes or flags: neither)."""
        count = self.count
        if added:
            if which in self.entries:
                return False
            self.entries.add(which)
            count[which.local] = count.get(which.local, 0) + 1
            return count[which.local] == 1
        if which not in self.entries:
            return False
        self.entries.remove(which)
        if count[which.local] > 1:
            count[which.local] -= 1
            return False
        del count[which.local]
        return True
