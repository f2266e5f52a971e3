"""services/ike/host_addresses.py: the host's addresses the IKE engine counts as its own (review
revclient s20 F3), from a real netlink dump, kept by one dump at a time.  (That a REDIRECT to one is
refused: ike/test_engine_redirect_host.py; the daemon, its watch included:
e2e/test_review_revclient_redirect_own.py and e2e/test_redirect_own_host_later.py.)"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import threading

import pytest

from tunsec.ike.endpoint import IkeEndpoint
from tunsec.policy.selector import IPAddress
from tunsec.services.ike.host_addresses import HostAddresses, _local, dump

LO = ipaddress.ip_address("127.0.0.1")


def test_the_dump_has_the_loopback_address() -> None:
    assert LO in dump()


class _Msg:
    def __init__(self, family: int, **attrs: str) -> None:
        self._family, self._attrs = family, attrs

    def get(self, key: str) -> int | None:
        return self._family if key == "family" else None

    def get_attr(self, name: str) -> str | None:
        return self._attrs.get(name)


def test_a_point_to_point_link_gives_its_local_address_not_the_other_end() -> None:
    ptp = _Msg(socket.AF_INET, IFA_LOCAL="10.0.0.1", IFA_ADDRESS="10.0.0.2")
    assert _local(ptp) == ipaddress.ip_address("10.0.0.1")
    assert _local(_Msg(socket.AF_INET6, IFA_ADDRESS="2001:db8::1")) == ipaddress.ip_address("2001:db8::1")
    assert _local(_Msg(socket.AF_PACKET, IFA_ADDRESS="10.0.0.3")) is None


class _Source:
    """A dump the test releases: one at a time, each the addresses of its moment."""

    def __init__(self) -> None:
        self.now: frozenset[IPAddress] = frozenset({LO})
        self.calls = 0
        self.gate = threading.Event()
        self.gate.set()
        self.fail: OSError | None = None

    def __call__(self) -> frozenset[IPAddress]:
        self.calls += 1
        self.gate.wait(10)
        if self.fail is not None:
            raise self.fail
        return self.now


def test_refresh_hands_the_engine_the_addresses() -> None:
    endpoint, source = IkeEndpoint([]), _Source()
    asyncio.run(HostAddresses(endpoint, source).refresh())
    assert endpoint.host_addresses == {LO}


def test_a_change_during_a_dump_makes_one_more_after_it() -> None:
    """Changes while a dump runs (a burst the watch reports twice): one more dump, whose result is
    the newest, never two at once."""
    endpoint, source = IkeEndpoint([]), _Source()
    later = ipaddress.ip_address("192.0.2.77")

    async def main() -> None:
        hosts = HostAddresses(endpoint, source)
        source.gate.clear()
        hosts.changed()
        while source.calls == 0:
            await asyncio.sleep(0)
        source.now = frozenset({LO, later})
        hosts.changed()
        hosts.changed()
        source.gate.set()
        await hosts.refresh()

    asyncio.run(main())
    assert endpoint.host_addresses == {LO, later}
    assert source.calls == 2   # the first, and one after it for the changes and the refresh, which joins it


def test_a_failed_dump_keeps_the_last_addresses_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    endpoint, source = IkeEndpoint([]), _Source()
    hosts = HostAddresses(endpoint, source)
    asyncio.run(hosts.refresh())
    source.fail = OSError(13, "Permission denied")
    with caplog.at_level(logging.WARNING, "tunsec.ike"):
        asyncio.run(hosts.refresh())
        asyncio.run(hosts.refresh())
    assert endpoint.host_addresses == {LO}
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "cannot list this host's addresses" in lines[0] and "1 known ones" in lines[0]
