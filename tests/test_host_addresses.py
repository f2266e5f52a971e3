"""services/ike/host_addresses.py: the host's addresses the IKE engine counts as its own (review
revclient s20 F3): a dump at start, then the address watch's changes applied one by one, a dump
again only when the watch missed some (review revperf R1).  (That a REDIRECT to one is refused:
ike/test_engine_redirect_host.py; the daemon, its watch included: e2e/test_review_revclient_redirect_own.py
and e2e/test_redirect_own_host_later.py; at start: test_host_addresses_start.py.)"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import textwrap
import threading

import pytest
from test_review_revperf_host_addresses import NEEDS_ROOT, run_in_own_netns

from tunsec.ike.endpoint import IkeEndpoint
from tunsec.services.addrwatch import AddressChange, InterfaceAddress
from tunsec.services.ike.host_addresses import HostAddresses

IP = ipaddress.ip_address
LO = InterfaceAddress(1, IP("127.0.0.1"), 8, IP("127.0.0.1"))


def add(index: int, text: str, prefixlen: int = 32) -> AddressChange:
    return True, InterfaceAddress(index, IP(text), prefixlen)


def delete(index: int, text: str, prefixlen: int = 32) -> AddressChange:
    return False, InterfaceAddress(index, IP(text), prefixlen)


class _Source:
    """A dump the test releases: one at a time, each the addresses of its moment."""

    def __init__(self) -> None:
        self.now: frozenset[InterfaceAddress] = frozenset({LO})
        self.calls = 0
        self.gate = threading.Event()
        self.gate.set()
        self.fail: OSError | None = None

    def __call__(self) -> frozenset[InterfaceAddress]:
        self.calls += 1
        self.gate.wait(10)
        if self.fail is not None:
            raise self.fail
        return self.now


def _started() -> tuple[IkeEndpoint, HostAddresses, _Source]:
    endpoint, source = IkeEndpoint([]), _Source()
    hosts = HostAddresses(endpoint, source)
    asyncio.run(hosts.refresh())
    return endpoint, hosts, source


def test_refresh_hands_the_engine_the_addresses() -> None:
    endpoint, _hosts, _source = _started()
    assert endpoint.host_addresses == {IP("127.0.0.1")}


def test_changes_one_by_one_and_in_bursts_are_applied_without_a_dump() -> None:
    endpoint, hosts, source = _started()
    hosts.apply([add(2, "192.0.2.1")])
    assert IP("192.0.2.1") in endpoint.host_addresses
    hosts.apply([delete(2, "192.0.2.1")])
    assert IP("192.0.2.1") not in endpoint.host_addresses
    hosts.apply([add(2, f"198.51.100.{i}") for i in range(1, 101)]
                + [delete(2, f"198.51.100.{i}") for i in range(1, 51)]
                + [add(3, "2001:db8::1", 0), add(2, "198.51.100.1"), delete(2, "198.51.100.1")])
    kept = {IP(f"198.51.100.{i}") for i in range(51, 101)}
    assert endpoint.host_addresses == {IP("127.0.0.1"), IP("2001:db8::1"), *kept}
    assert source.calls == 1   # the start's


def test_an_address_on_two_interfaces_stays_until_both_lost_it() -> None:
    endpoint, hosts, _source = _started()
    hosts.apply([add(2, "192.0.2.1"), add(3, "192.0.2.1"), add(2, "192.0.2.1", 24)])
    hosts.apply([add(2, "192.0.2.1")])   # a change of one (its lifetimes, flags): no second entry
    hosts.apply([delete(2, "192.0.2.1"), delete(3, "192.0.2.1")])
    assert IP("192.0.2.1") in endpoint.host_addresses   # the /24 of interface 2 is left
    hosts.apply([delete(2, "192.0.2.1", 24), delete(9, "192.0.2.1")])   # (and one never seen: nothing)
    assert endpoint.host_addresses == {IP("127.0.0.1")}


def test_changes_read_during_a_dump_are_applied_on_its_result() -> None:
    """The dump read the kernel's list before the changes the watch reads while it runs: they are
    applied on top of it, not lost under it."""
    endpoint, hosts, source = _started()
    later, gone = IP("192.0.2.77"), InterfaceAddress(2, IP("192.0.2.88"), 32)

    async def main() -> None:
        source.gate.clear()
        source.now = frozenset({LO, gone})   # as the kernel had them when the dump read them
        hosts.resync()
        while source.calls < 2:
            await asyncio.sleep(0)
        hosts.apply([add(2, str(later)), (False, gone)])
        source.gate.set()
        assert hosts._running is not None
        await hosts._running
    asyncio.run(main())
    assert endpoint.host_addresses == {IP("127.0.0.1"), later}
    assert source.calls == 2


def test_a_resync_during_a_dump_makes_one_more_after_it() -> None:
    """Resyncs while a dump runs (the watch missed changes twice): one more dump, whose result is the
    newest, never two at once."""
    endpoint, source = IkeEndpoint([]), _Source()
    later = InterfaceAddress(2, IP("192.0.2.77"), 32)

    async def main() -> None:
        hosts = HostAddresses(endpoint, source)
        source.gate.clear()
        hosts.resync()
        while source.calls == 0:
            await asyncio.sleep(0)
        source.now = frozenset({LO, later})
        hosts.resync()
        hosts.resync()
        source.gate.set()
        await hosts.refresh()

    asyncio.run(main())
    assert endpoint.host_addresses == {IP("127.0.0.1"), later.local}
    assert source.calls == 2   # the first, and one after it for the resyncs and the refresh, which joins it


def test_a_failed_dump_keeps_the_last_addresses_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    endpoint, hosts, source = _started()
    source.fail = OSError(13, "Permission denied")
    with caplog.at_level(logging.WARNING, "tunsec.ike"):
        asyncio.run(hosts.refresh())
        asyncio.run(hosts.refresh())
    assert endpoint.host_addresses == {IP("127.0.0.1")}
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "cannot list this host's addresses" in lines[0] and "1 known ones" in lines[0]


_NETNS = textwrap.dedent("""
    import asyncio, json, socket, subprocess, tempfile, time
    from tunsec.ike.endpoint import IkeEndpoint
    from tunsec.services.addrwatch import AddressWatch, dump_addresses
    from tunsec.services.ike.host_addresses import HostAddresses

    dumps = []
    def counted():
        dumps.append(1)
        return dump_addresses()

    def ip(*args):
        subprocess.run(["ip", *args], check=True)

    def batch(lines):
        with tempfile.NamedTemporaryFile("w") as f:
            f.write("".join(line + "\\n" for line in lines))
            f.flush()
            ip("-batch", f.name)

    def kernel():
        return sorted({str(a.local) for a in dump_addresses()})

    async def main():
        ip("link", "set", "lo", "up")
        endpoint = IkeEndpoint([])
        hosts = HostAddresses(endpoint, counted)
        watch = AddressWatch(lambda: None, settle=0.05, listener=hosts)
        watch.start()
        await hosts.refresh()
        out = {}

        async def settled():
            for _ in range(100):
                await asyncio.sleep(0.05)
                if sorted(map(str, endpoint.host_addresses)) == kernel() and hosts._running.done():
                    break
            return sorted(map(str, endpoint.host_addresses)) == kernel()

        for step in (["addr", "add", "10.77.0.1/32", "dev", "lo"], ["addr", "add", "2001:db8::77/128", "dev", "lo"],
                     ["addr", "add", "10.77.0.1/24", "dev", "lo"], ["addr", "del", "10.77.0.1/32", "dev", "lo"],
                     ["addr", "del", "2001:db8::77/128", "dev", "lo"], ["addr", "del", "10.77.0.1/24", "dev", "lo"]):
            ip(*step)
            out.setdefault("one_by_one", []).append(await settled())
        out["dumps_one_by_one"] = len(dumps)
        batch([f"addr add 10.78.{i // 256}.{i % 256}/32 dev lo" for i in range(200)]
              + [f"addr del 10.78.{i // 256}.{i % 256}/32 dev lo" for i in range(0, 200, 3)])
        out["burst"] = await settled()
        # the watch's socket overflows: a tiny buffer, and the loop busy while 500 addresses come
        watch._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        before = len(dumps)
        batch([f"addr add 10.79.{i // 256}.{i % 256}/32 dev lo" for i in range(500)])
        out["overflow"] = await settled()
        out["dumps_for_overflow"] = len(dumps) - before
        out["addresses"] = len(endpoint.host_addresses)
        print(json.dumps(out))
        watch.close()
        hosts.close()

    asyncio.run(main())
""")


@NEEDS_ROOT
def test_the_real_watch_keeps_the_list_exactly_the_hosts() -> None:
    """In a network namespace of its own: addresses added and removed one by one (IPv4, IPv6, one
    address twice with two prefixes), then in a burst, then so many at once that the watch's socket
    overflows: the list is the kernel's each time; a dump at start, one after the overflow, none else."""
    out = json.loads(run_in_own_netns(_NETNS).splitlines()[-1])
    assert out["one_by_one"] == [True] * 6, out
    assert out["dumps_one_by_one"] == 1, out   # the start's: each change applied, no listing per change
    assert out["burst"], out
    assert out["overflow"] and out["dumps_for_overflow"] >= 1, out
    assert out["addresses"] >= 500 + 133, out


