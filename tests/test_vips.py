"""VirtualIps with a TUN that records its netlink calls (tunsec.services.ike.vips; review N2, N3).

Up: one address per family goes on the TUN (a gateway's second address of a family would be a local
address no selector covers), none that another interface of the host has.  Down: each route that has
the address as its source is re-pointed before the address goes (the kernel deletes an IPv4 route
whose source disappears: the network then followed the default route, in clear), also once a reload
removed the connection; a route the kernel will not re-point is blocked and left to a reload.
"""
from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest

from tunsec.ike.config import child_config
from tunsec.ike.events import IkeSaUp
from tunsec.ike.identity import Identity
from tunsec.services.ike.state import IPAddress, IPNetwork
from tunsec.services.ike.vips import VirtualIps, _log_refusal

NET = ipaddress.ip_network("10.9.0.0/16")
NET6 = ipaddress.ip_network("fd00:9::/48")
LEASE, LEASE2 = ipaddress.ip_address("10.3.0.1"), ipaddress.ip_address("10.3.0.2")
LEASE6 = ipaddress.ip_address("fd00:3::1")


@dataclass
class RecordingTun:
    """What VirtualIps asks of the daemon's Tun, recorded in order; routes as Tun keeps them."""

    name: str = "tunsec0"
    routes: list[tuple[IPNetwork, str | None]] = field(default_factory=lambda: [(NET, None), (NET6, None)])
    elsewhere: dict[str, str] = field(default_factory=dict)   # address -> the interface that has it
    refuse_source: bool = False
    refuse_add: set[str] = field(default_factory=set)   # addresses the kernel will not add
    calls: list[tuple[object, ...]] = field(default_factory=list)

    def address_conflict(self, addr: str) -> str | None:
        return f"interface {self.elsewhere[addr]} of this host has it" if addr in self.elsewhere else None

    def add_address(self, addr: str) -> None:
        if addr in self.refuse_add:
            raise OSError(17, f"adding virtual IP {addr} to TUN {self.name}: File exists")
        self.calls.append(("add", addr))

    def remove_address(self, addr: str) -> None:
        self.calls.append(("remove", addr))

    def set_route_source(self, dst: IPNetwork, src: str | None) -> None:
        if self.refuse_source and src is None:
            raise OSError(22, f"setting source none on route {dst} via TUN {self.name}: Invalid argument")
        self.calls.append(("source", str(dst), src))
        self.routes = [(d, src if d == dst else s) for d, s in self.routes]

    def block(self, dst: IPNetwork, why: str) -> None:
        self.calls.append(("block", str(dst)))
        self.routes = [r for r in self.routes if r[0] != dst]   # as Tun.block: the prohibit route replaces it

    def set_source_or_block(self, dst: IPNetwork, src: str | None, why: str) -> str | None:
        try:
            self.set_route_source(dst, src)
            return None
        except OSError as err:
            self.block(dst, why)
            return f"{why}: {err.strerror}"


class Conn:
    class ike:   # what VirtualIps reads of a Connection: its children's remote_ts
        children = (child_config("net", "dynamic", ["10.9.0.0/16", "fd00:9::/48"], "aes128gcm16"),)


def up_event(*vips: IPAddress, name: str = "home") -> IkeSaUp:
    return IkeSaUp(name, b"i" * 8, b"r" * 8, Identity.parse("c1.example"), Identity.parse("gw.example"),
                   ("192.0.2.1", 4500), 4500, "aes128gcm16", own_vips=vips)


class Work:
    class ike:   # another connection of the client (another gateway, or the same with another identity)
        children = (child_config("net", "dynamic", ["10.8.0.0/16", "fd00:8::/48"], "aes128gcm16"),)


class Harness:
    def __init__(self, tun: RecordingTun, conn: object | None = Conn,
                 conns: dict[str, object] | None = None) -> None:
        """``conns``: the connections by name (else ``conn`` under every name)."""
        self.tun = tun
        self.tasks: list[asyncio.Future[None]] = []
        self.refused: list[tuple[int, str, str]] = []   # (IKE SA handle, connection, address)
        self.applied: list[tuple[int, str]] = []
        self.vips = VirtualIps(lambda: tun, lambda name: conn if conns is None else conns.get(name),  # type: ignore[arg-type, return-value]
                               self._spawn, refused=self._refused,
                               applied=lambda h, c: self.applied.append((h, c)))

    def _refused(self, handle: int, conn: str, addr: IPAddress | None, why: str) -> None:
        self.refused.append((handle, conn, str(addr)))
        _log_refusal(handle, conn, addr, why)   # as the daemon logs it

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> object:
        self.tasks.append(asyncio.ensure_future(coro))
        return None

    async def settle(self) -> list[tuple[object, ...]]:
        while self.tasks:   # a task may spawn another (an address handed over to another IKE SA)
            tasks = list(self.tasks)
            self.tasks.clear()
            await asyncio.gather(*tasks)
        calls = list(self.tun.calls)
        self.tun.calls.clear()
        return calls


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


def test_one_address_per_family_goes_on_the_tun() -> None:
    async def main() -> None:
        h = Harness(RecordingTun())
        h.vips.up(1, up_event(LEASE, ipaddress.ip_address("8.8.8.8"), LEASE6, ipaddress.ip_address("192.168.1.1")))
        calls = await h.settle()
        assert [c for c in calls if c[0] == "add"] == [("add", "10.3.0.1"), ("add", "fd00:3::1")]
        assert ("source", str(NET), "10.3.0.1") in calls and ("source", str(NET6), "fd00:3::1") in calls
        h.vips.down(1)
        assert [c for c in await h.settle() if c[0] == "remove"] == [("remove", "10.3.0.1"), ("remove", "fd00:3::1")]
    run(main())


def test_an_address_another_interface_has_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        h = Harness(RecordingTun(elsewhere={"10.3.0.1": "eth0"}))
        h.vips.up(1, up_event(LEASE))
        assert await h.settle() == []   # no address, no route source
    with caplog.at_level(logging.ERROR, "tunsec.ike"):
        run(main())
    assert "home: virtual IP 10.3.0.1 refused: interface eth0 of this host has it" in caplog.text


def test_down_re_points_the_route_before_the_address_goes() -> None:
    async def main() -> None:
        h = Harness(RecordingTun())
        h.vips.up(1, up_event(LEASE))
        await h.settle()
        h.vips.down(1)
        assert await h.settle() == [("source", str(NET), None), ("remove", "10.3.0.1")]
    run(main())


def test_down_re_points_to_the_address_another_ike_sa_of_the_connection_holds() -> None:
    async def main() -> None:
        h = Harness(RecordingTun())
        h.vips.up(1, up_event(LEASE))
        h.vips.up(2, up_event(LEASE2))   # a second IKE SA of the connection: the route's source now
        await h.settle()
        h.vips.down(2)
        assert await h.settle() == [("source", str(NET), "10.3.0.1"), ("remove", "10.3.0.2")]
        h.vips.down(1)
        assert await h.settle() == [("source", str(NET), None), ("remove", "10.3.0.1")]
    run(main())


@pytest.mark.parametrize("how", ["add refused", "another interface has it"])
def test_down_re_points_only_to_an_address_on_the_tun(how: str) -> None:
    """Review T F3: IKE SA 2's address never made it onto the TUN: the kernel would refuse it as the
    route's source (the route blocked while IKE SA 2 is up), or take the LAN interface's."""
    tun = RecordingTun(refuse_add={str(LEASE2)} if how == "add refused" else set(),
                       elsewhere={} if how == "add refused" else {str(LEASE2): "eth0"})

    async def main() -> None:
        h = Harness(tun)
        h.vips.up(1, up_event(LEASE))
        await h.settle()
        h.vips.up(2, up_event(LEASE2))
        assert ("add", str(LEASE2)) not in await h.settle()
        h.vips.down(1)   # IKE SA 2 (and its Child SAs) stay up
        assert await h.settle() == [("source", str(NET), None), ("remove", "10.3.0.1")]
    run(main())
    assert (NET, None) in tun.routes


def test_down_after_a_reload_removed_the_connection_still_re_points_its_route() -> None:
    async def main() -> None:
        conn: list[object | None] = [Conn]
        tun = RecordingTun()
        h = Harness(tun)
        h.vips = VirtualIps(lambda: tun, lambda name: conn[0], h._spawn)  # type: ignore[arg-type, return-value]
        h.vips.up(1, up_event(LEASE))
        await h.settle()
        conn[0] = None   # the reload took the connection away; its route still has the address as source
        h.vips.down(1)
        assert await h.settle() == [("source", str(NET), None), ("remove", "10.3.0.1")]
    run(main())


def test_a_route_the_kernel_will_not_re_point_is_blocked_and_left_to_a_reload(
        caplog: pytest.LogCaptureFixture) -> None:
    tun = RecordingTun(refuse_source=True)

    async def main() -> None:
        h = Harness(tun)
        h.vips.up(1, up_event(LEASE))
        await h.settle()
        h.vips.down(1)
        assert await h.settle() == [("block", str(NET)), ("remove", "10.3.0.1")]
    with caplog.at_level(logging.ERROR, "tunsec.ike"):
        run(main())
    assert [d for d, _ in tun.routes] == [NET6]   # no longer ours: a reload adds it (and lifts the block)
    assert "route 10.9.0.0/16 kept virtual IP 10.3.0.1 as its source" in caplog.text
    assert "its traffic is refused (prohibit route) until a reload adds the route" in caplog.text


def test_an_address_skipped_for_its_ike_sas_refusal_goes_on_with_the_next_ike_sa() -> None:
    """Review W F1: the IPv6 address of an IKE SA refused for its IPv4 one stays off the TUN (one a
    DELETING IKE SA held each try piled up there); a later IKE SA that holds it, its IPv4 address
    usable, puts it on."""
    async def main() -> None:
        h = Harness(RecordingTun(elsewhere={"192.168.1.1": "eth0"}))
        h.vips.up(1, up_event(ipaddress.ip_address("192.168.1.1"), LEASE6))
        assert not [c for c in await h.settle() if c[0] == "add"]
        h.vips.up(2, up_event(LEASE, LEASE6))
        assert [c for c in await h.settle() if c[0] == "add"] == [("add", "10.3.0.1"), ("add", "fd00:3::1")]
        h.vips.down(1)
        h.vips.down(2)
        assert [c for c in await h.settle() if c[0] == "remove"] == [("remove", "10.3.0.1"), ("remove", "fd00:3::1")]
    run(main())


def test_an_address_another_ike_sa_relied_on_goes_on_for_it_when_its_first_holder_is_refused() -> None:
    """Review Z F1: connection evil's gateway assigns a LAN address and the IPv6 address home's gateway
    assigns; home comes up before evil's task ran, so relied on it for that address.  evil is refused
    whole: the address goes on the TUN for home (it was skipped, home looked connected and its IPv6
    traffic matched nothing), and home's count starts again only once it is there."""
    async def main() -> None:
        tun = RecordingTun(elsewhere={"192.168.1.1": "eth0"})
        h = Harness(tun)
        h.vips.up(1, up_event(ipaddress.ip_address("192.168.1.1"), LEASE6, name="evil"))
        h.vips.up(2, up_event(LEASE, LEASE6, name="home"))
        calls = await h.settle()
        assert h.refused == [(1, "evil", "192.168.1.1")]
        assert [c for c in calls if c[0] == "add"] == [("add", "10.3.0.1"), ("add", "fd00:3::1")]
        assert ("source", str(NET6), "fd00:3::1") in calls and ("source", str(NET), "10.3.0.1") in calls
        assert h.applied == [(2, "home")]
        h.vips.down(1)   # evil's DELETE done: home's addresses stay
        assert not [c for c in await h.settle() if c[0] == "remove"]
        h.vips.down(2)
        assert [c for c in await h.settle() if c[0] == "remove"] == [("remove", "10.3.0.1"), ("remove", "fd00:3::1")]
    run(main())


def test_applied_waits_for_every_address_of_the_ike_sa() -> None:
    """home's own task adds only its IPv4 address (the IPv6 one is evil's task's, then handed over):
    applied() is not reported before the IPv6 address is on the TUN."""
    async def main() -> None:
        tun = RecordingTun(elsewhere={"192.168.1.1": "eth0"})
        h = Harness(tun)
        seen: list[tuple[bool, tuple[int, str]]] = []
        h.vips._ok = lambda handle, conn: seen.append((("add", "fd00:3::1") in tun.calls, (handle, conn)))
        h.vips.up(1, up_event(ipaddress.ip_address("192.168.1.1"), LEASE6, name="evil"))
        h.vips.up(2, up_event(LEASE, LEASE6, name="home"))
        await h.settle()
        assert seen == [(True, (2, "home"))]
    run(main())


class FlakyTun(RecordingTun):
    """A conflict check that fails for an address, a number of times (netlink: ENOBUFS, EINTR, the TUN going)."""

    failures: dict[str, int]

    def address_conflict(self, addr: str) -> str | None:
        if self.failures.get(addr, 0) > 0:
            self.failures[addr] -= 1
            raise OSError(errno.ENOBUFS, f"looking up routes to {addr}: No buffer space available")
        return super().address_conflict(addr)


def test_an_address_that_cannot_be_checked_refuses_the_ike_sa() -> None:
    """Review Z F2: it was logged and left off: the IKE SA stayed up without it, applied() reset the
    count, and no later IKE SA added it while this one held it.  Now the IKE SA is refused (retried
    with the refusals' backoff) and the next one, its check passing, puts both addresses on."""
    tun = FlakyTun()
    tun.failures = {str(LEASE6): 3}   # more than the check's own retries

    async def main() -> None:
        h = Harness(tun)
        h.vips.up(1, up_event(LEASE, LEASE6))
        assert not [c for c in await h.settle() if c[0] == "add"]
        assert h.refused == [(1, "home", "fd00:3::1")] and h.applied == []
        h.vips.up(2, up_event(LEASE, LEASE6))   # the next try (or a make-before-break twin)
        assert [c for c in await h.settle() if c[0] == "add"] == [("add", "10.3.0.1"), ("add", "fd00:3::1")]
        assert h.applied == [(2, "home")]
        h.vips.down(1)
        assert not await h.settle()
    run(main())


def test_a_check_failing_once_is_asked_again_not_refused() -> None:
    """Review AA F2: one passing kernel condition refused the IKE SA, and with the default
    keyingtries = 1 the connection stayed down for good.  The check is asked again."""
    tun = FlakyTun()
    tun.failures = {str(LEASE6): 1}

    async def main() -> None:
        h = Harness(tun)
        h.vips.up(1, up_event(LEASE, LEASE6))
        assert [c for c in await h.settle() if c[0] == "add"] == [("add", "10.3.0.1"), ("add", "fd00:3::1")]
        assert h.refused == [] and h.applied == [(1, "home")]
    run(main())


class SlowRefusingTun(RecordingTun):
    """An add the kernel answers late, with a refusal, while the IKE SA goes down."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def add_address(self, addr: str) -> None:
        self.gate.wait(5)
        raise OSError(errno.EADDRNOTAVAIL, f"adding virtual IP {addr}: Cannot assign requested address")


def test_a_refusal_made_after_its_ike_sa_went_is_not_held_against_the_next_one() -> None:
    """Review AA F1: an IKE SA gone while its address was added (or checked) left the refusal behind:
    the next IKE SA of any connection with that address was refused at once, for a reason that may have
    passed, and deleted (with keyingtries = 1, for good).  Nothing is remembered for a gone IKE SA."""
    tun = SlowRefusingTun()

    async def main() -> None:
        h = Harness(tun)
        h.vips.up(1, up_event(LEASE, name="x"))
        await asyncio.sleep(0.05)                 # its add is under way in the thread
        h.vips.down(1)                            # the gateway deletes it meanwhile
        tun.gate.set()
        await h.settle()
        assert not h.vips._refusals and not h.vips._refused_sas and not h.vips._skipped
        h.tun = ok = RecordingTun()
        h.vips._tun = lambda: ok                  # the kernel fine again
        h.vips.up(2, up_event(LEASE, name="y"))   # another connection's IKE SA gets that address
        assert [c for c in await h.settle() if c[0] == "add"] == [("add", "10.3.0.1")]
        assert [r for r in h.refused if r[0] == 2] == [] and h.applied == [(2, "y")]
    run(main())


class PassingTun(RecordingTun):
    """An add and a removal each failing once on a passing kernel condition (ENOBUFS)."""

    def __init__(self) -> None:
        super().__init__()
        self.fail = {"add", "remove"}

    def add_address(self, addr: str) -> None:
        if "add" in self.fail:
            self.fail.discard("add")
            raise OSError(errno.ENOBUFS, f"adding virtual IP {addr}: No buffer space available")
        super().add_address(addr)

    def remove_address(self, addr: str) -> None:
        if "remove" in self.fail:
            self.fail.discard("remove")
            raise OSError(errno.ENOBUFS, f"removing virtual IP {addr}: No buffer space available")
        super().remove_address(addr)


def test_an_add_or_removal_failing_once_is_asked_again() -> None:
    """Review AB F2, F3: one passing kernel condition refused the IKE SA (and, kept as the address's
    refusal, the next IKE SA of another connection with it), and one during the removal left the address
    on the TUN with no IKE SA.  Both are asked again."""
    tun = PassingTun()

    async def main() -> None:
        h = Harness(tun)
        h.vips.up(1, up_event(LEASE))
        assert [c for c in await h.settle() if c[0] == "add"] == [("add", "10.3.0.1")]
        assert h.refused == [] and h.applied == [(1, "home")] and not h.vips._refusals
        h.vips.down(1)
        assert [c for c in await h.settle() if c[0] == "remove"] == [("remove", "10.3.0.1")]
    run(main())


# Two connections given the same virtual IP (review AB F1): one gateway leasing one address per identity
# to two connections of the client, or a second (hostile) gateway assigning the first one's address.
WORK, WORK6 = ipaddress.ip_network("10.8.0.0/16"), ipaddress.ip_network("fd00:8::/48")


def two_connections(tun_type: type[RecordingTun] = RecordingTun, **kw: Any) -> Harness:
    tun = tun_type(**kw)
    tun.routes = [(NET, None), (NET6, None), (WORK, None), (WORK6, None)]
    return Harness(tun, conns={"home": Conn, "work": Work})


def sources(tun: RecordingTun) -> dict[str, str | None]:
    return {str(d): s for d, s in tun.routes}


def test_two_connections_given_one_address_both_route_from_it() -> None:
    """work's IKE SA came up with the address home's already put on the TUN: no task ran for it, so
    work's routes never got it as their source and work's traffic left from an address its selectors
    (the virtual IP) do not cover, dropped for the IKE SA's life; nor did work's refusal count reset."""
    async def main() -> None:
        h = two_connections()
        h.vips.up(1, up_event(LEASE, LEASE6, name="home"))
        await h.settle()
        h.vips.up(2, up_event(LEASE, LEASE6, name="work"))
        calls = await h.settle()
        assert not [c for c in calls if c[0] == "add"]   # on the TUN already: no second add
        assert sources(h.tun) == {str(NET): str(LEASE), str(NET6): str(LEASE6),
                                  str(WORK): str(LEASE), str(WORK6): str(LEASE6)}
        assert h.applied == [(1, "home"), (2, "work")]
    run(main())


class GatedTun(RecordingTun):
    """An add the kernel answers once the test lets it: ok, refused, or failing on a passing condition
    (ENOBUFS) as often as the add asks it again, then ok."""

    def __init__(self, answer: str = "ok") -> None:
        super().__init__()
        self.answer = answer
        self.passing = 3   # the add's first ask and its two asks again (vips._CHECK_RETRIES)
        self.adding, self.gate = threading.Event(), threading.Event()

    def add_address(self, addr: str) -> None:
        self.adding.set()
        self.gate.wait(5)
        if self.answer == "refused":
            raise OSError(errno.EADDRNOTAVAIL, f"adding virtual IP {addr}: Cannot assign requested address")
        if self.answer == "passing" and self.passing > 0:
            self.passing -= 1
            raise OSError(errno.ENOBUFS, f"adding virtual IP {addr}: No buffer space available")
        super().add_address(addr)


@pytest.mark.parametrize("answer", ["ok", "passing", "refused"])
def test_the_second_connection_coming_up_while_the_first_adds_the_address(answer: str) -> None:
    """work's IKE SA comes up while home's task is adding the address (held, not yet applied).  ok: work's
    routes get it once it is on.  passing (the add fails on a kernel condition each time home's task
    asks): home alone is refused (review AB F2), and work, which relied on home's add, was left up
    without the address: it is now added for work, as an address whose check fails is (_hand_over).  refused (the
    kernel refuses the address itself): both IKE SAs are refused, no route takes it (a guard: so before)."""
    async def main() -> None:
        h = two_connections(GatedTun, answer=answer)
        h.vips.up(1, up_event(LEASE, name="home"))
        await asyncio.to_thread(h.tun.adding.wait, 5)   # home's add is under way in the thread
        h.vips.up(2, up_event(LEASE, name="work"))
        h.tun.gate.set()
        calls = await h.settle()
        if answer == "refused":
            assert h.refused == [(1, "home", str(LEASE)), (2, "work", str(LEASE))] and h.applied == []
            assert calls == [] and set(sources(h.tun).values()) == {None}
            return
        assert [c for c in calls if c[0] == "add"] == [("add", str(LEASE))]
        home = None if answer == "passing" else str(LEASE)   # refused: its route is left alone
        assert sources(h.tun) == {str(NET): home, str(NET6): None, str(WORK): str(LEASE), str(WORK6): None}
        assert h.applied == ([(2, "work")] if answer == "passing" else [(1, "home"), (2, "work")])
        assert h.refused == ([(1, "home", str(LEASE))] if answer == "passing" else [])
    run(main())


@pytest.mark.parametrize("kernel", ["re-points", "refuses the re-point"])
def test_an_address_two_connections_held_goes_by_each_routes_owner(kernel: str) -> None:
    """home's IKE SA 1 and work's IKE SA 2 share 10.3.0.1; home's IKE SA 3 holds 10.3.0.2 besides.  work's
    IKE SA goes: the address stays (home holds it), both routes keep it.  home's IKE SA 1 goes: the
    address leaves the TUN and each route it was the source of is re-pointed by the connection that owns
    it: work's route took home's 10.3.0.2 (chosen by the connection going down), which its selectors do
    not cover; it now has no source, or is blocked where the kernel refuses that (never neither)."""
    async def main() -> None:
        h = two_connections(refuse_source=kernel != "re-points")
        h.vips.up(1, up_event(LEASE, name="home"))
        h.vips.up(2, up_event(LEASE, name="work"))
        await h.settle()
        h.vips.down(2)
        assert await h.settle() == []
        assert sources(h.tun)[str(WORK)] == str(LEASE) and sources(h.tun)[str(NET)] == str(LEASE)
        h.vips.up(3, up_event(LEASE2, name="home"))
        await h.settle()
        assert sources(h.tun)[str(NET)] == str(LEASE2) and sources(h.tun)[str(WORK)] == str(LEASE)
        h.vips.down(1)
        calls = await h.settle()
        assert calls[-1] == ("remove", str(LEASE))
        if kernel == "re-points":
            assert calls[:-1] == [("source", str(WORK), None)]
            assert sources(h.tun) == {str(NET): str(LEASE2), str(NET6): None, str(WORK): None, str(WORK6): None}
        else:
            assert calls[:-1] == [("block", str(WORK))]
            assert sources(h.tun) == {str(NET): str(LEASE2), str(NET6): None, str(WORK6): None}
    run(main())


def test_an_ike_sa_going_while_another_connection_keeps_its_address_hands_its_routes_to_its_siblings() -> None:
    """work's IKE SA 2 holds 10.3.0.2, its IKE SA 3 then the 10.3.0.1 home's IKE SA 1 holds: work's routes
    take 10.3.0.1.  IKE SA 3 goes, the address stays on the TUN for home: work's routes go back to
    10.3.0.2, the address of the IKE SA work still has (10.3.0.1 is not in its selectors)."""
    async def main() -> None:
        h = two_connections()
        h.vips.up(1, up_event(LEASE, name="home"))
        h.vips.up(2, up_event(LEASE2, name="work"))
        await h.settle()
        h.vips.up(3, up_event(LEASE, name="work"))
        await h.settle()
        assert sources(h.tun)[str(WORK)] == str(LEASE)
        h.vips.down(3)
        assert await h.settle() == [("source", str(WORK), str(LEASE2))]
        assert sources(h.tun)[str(NET)] == str(LEASE)
        assert h.applied == [(1, "home"), (2, "work"), (3, "work")]
    run(main())


def test_a_refused_ike_sa_holding_another_connections_address_takes_none_of_its_routes() -> None:
    """A hostile gateway (evil) assigns home's address and an IPv6 address eth0 has: evil is refused
    whole; its routes do not take home's address, home's keep it, and it stays on the TUN (a guard)."""
    async def main() -> None:
        h = Harness(RecordingTun(routes=[(NET, None), (WORK, None)], elsewhere={str(LEASE6): "eth0"}),
                    conns={"home": Conn, "evil": Work})
        h.vips.up(1, up_event(LEASE, name="home"))
        await h.settle()
        h.vips.up(2, up_event(LEASE, LEASE6, name="evil"))
        assert await h.settle() == []
        assert h.refused == [(2, "evil", str(LEASE6))] and h.applied == [(1, "home")]
        assert sources(h.tun) == {str(NET): str(LEASE), str(WORK): None}
        h.vips.down(2)
        assert await h.settle() == []
    run(main())


# Review AD: an error other than OSError from a route change (F2), every holder relying on a failed
# add (F3), a stale IKE SA of a replaced connection (F4).
NET7 = ipaddress.ip_network("10.7.0.0/16")


class RouteFailingTun(RecordingTun):
    """set_route_source raises a non-OSError for one network (the real Tun's link_lookup(...)[0] is an
    IndexError once the TUN is gone; a bug)."""

    broken: str = ""

    def set_route_source(self, dst: IPNetwork, src: str | None) -> None:
        if str(dst) == self.broken:
            raise IndexError("list index out of range")
        super().set_route_source(dst, src)


def test_an_unexpected_error_moving_a_route_to_a_sibling_is_logged_not_raised(
        caplog: pytest.LogCaptureFixture) -> None:
    """Review AD F2: _release caught only OSError: the IndexError escaped its task ("Task exception was
    never retrieved") and the other routes were not moved."""
    async def main() -> None:
        tun = RouteFailingTun(routes=[(NET, None), (WORK, None)])
        h = Harness(tun, conns={"home": Conn, "work": Work})
        h.vips.up(1, up_event(LEASE, name="home"))
        h.vips.up(2, up_event(LEASE, name="work"))
        h.vips.up(3, up_event(LEASE2, name="home"))   # home's sibling
        await h.settle()
        h.vips.up(4, up_event(LEASE, name="home"))   # NET back on LEASE (home's latest IKE SA)
        await h.settle()
        tun.broken = str(NET)
        h.vips.down(4)   # LEASE kept (work, home's IKE SA 1): NET moves to the sibling's address
        h.vips.down(1)
        await h.settle()
    with caplog.at_level(logging.ERROR, "tunsec.ike"):
        run(main())
    assert "cannot make virtual IP 10.3.0.2 the source of route 10.9.0.0/16 on TUN tunsec0: IndexError" in caplog.text


def test_an_unexpected_error_re_pointing_one_route_still_removes_the_address() -> None:
    """Review AD F2: in _apply_down one route's _repoint raising skipped the address's other routes and
    its removal: the address stayed on the TUN with no IKE SA."""
    async def main() -> None:
        tun = RouteFailingTun(routes=[(NET, None), (WORK, None)])
        h = Harness(tun, conns={"home": Conn, "work": Work})
        h.vips.up(1, up_event(LEASE, name="home"))
        h.vips.up(2, up_event(LEASE, name="work"))
        await h.settle()
        assert sources(tun) == {str(NET): str(LEASE), str(WORK): str(LEASE)}
        tun.broken = str(NET)
        h.vips.down(1)
        h.vips.down(2)   # LEASE's last holder: both routes re-pointed, then it goes
        calls = await h.settle()
        assert ("source", str(WORK), None) in calls
        assert calls[-1] == ("remove", str(LEASE))
    run(main())


class Lab:
    class ike:   # a third connection given the same address (one gateway's lease per identity)
        children = (child_config("net", "dynamic", ["10.7.0.0/16"], "aes128gcm16"),)


def test_every_holder_that_relied_on_a_failed_add_gets_the_address_as_its_routes_source() -> None:
    """Review AD F3: home's add of 10.3.0.1 fails on a passing condition each time it is asked; work's and
    lab's IKE SAs came up with the same address meanwhile (their tasks, with no fresh address, ran after
    home's and found it off the TUN).  _hand_over put it on for one of them (work) and only that one's
    routes got it: lab's route kept no source, the kernel took the TUN's first IPv4 address (outside
    lab's selectors: its traffic dropped for the IKE SA's life), and lab's refusal count never reset."""
    async def main() -> None:
        tun = GatedTun(answer="passing")
        tun.routes = [(NET, None), (WORK, None), (NET7, None)]
        h = Harness(tun, conns={"home": Conn, "work": Work, "lab": Lab})
        h.vips.up(1, up_event(LEASE, name="home"))
        await asyncio.to_thread(tun.adding.wait, 5)   # home's add is under way in the thread
        h.vips.up(2, up_event(LEASE, name="work"))
        h.vips.up(3, up_event(LEASE, name="lab"))
        tun.gate.set()
        calls = await h.settle()
        assert h.refused == [(1, "home", str(LEASE))]
        assert [c for c in calls if c[0] == "add"] == [("add", str(LEASE))]   # once
        assert sources(tun) == {str(NET): None, str(WORK): str(LEASE), str(NET7): str(LEASE)}
        assert sorted(h.applied) == [(2, "work"), (3, "lab")]
    run(main())


def test_a_stale_ike_sa_of_a_replaced_connection_does_not_re_source_another_connections_route() -> None:
    """Review AD F4: _set_sources and _owners_addresses read the connection's networks as configured now.
    lab's IKE SA came up (10.3.0.2) and its task waits; a reload replaces lab by one that also routes
    work's 10.8.0.0/16 (lab's old IKE SA is being deleted: it stays until the peer answers the DELETE).
    Its task made 10.3.0.2 the source of work's route while work's IKE SA holds 10.3.0.1: work's traffic
    left from an address its selectors do not cover, dropped until the stale IKE SA went."""
    async def main() -> None:
        conns: dict[str, object] = {"home": Conn, "work": Work, "lab": Lab}
        tun = RecordingTun(routes=[(NET, None), (WORK, None), (NET7, None)])
        h = Harness(tun, conns=conns)
        h.vips.up(1, up_event(LEASE, name="work"))
        await h.settle()
        h.vips.up(2, up_event(LEASE2, name="lab"))   # its task not yet run
        conns["lab"] = Work   # the reload: lab now routes 10.8.0.0/16 too (IKE SA 2 being deleted)
        await h.settle()
        assert sources(tun)[str(WORK)] == str(LEASE)
        h.vips.down(1)   # work's IKE SA goes: its route is not given the stale IKE SA's address either
        await h.settle()
        assert sources(tun)[str(WORK)] is None
    run(main())


class RefusingOnceTun(RecordingTun):
    """The kernel refuses the next source change (a passing condition): the route is blocked."""

    refuse_next: bool = False

    def set_route_source(self, dst: IPNetwork, src: str | None) -> None:
        if self.refuse_next:
            self.refuse_next = False
            raise OSError(errno.ENOBUFS, f"setting source {src} on route {dst}: No buffer space available")
        super().set_route_source(dst, src)


def test_a_route_blocked_by_a_re_point_and_added_again_by_a_reload_takes_its_virtual_ip() -> None:
    """Review AD F1: home's IKE SA 2 goes, its route's re-point to IKE SA 1's address is refused: blocked.
    The reload adds the route again (Daemon._add_route: no source for a dynamic local_ts) and it kept
    none (the kernel chose any address of the TUN); now it takes the address home's IKE SA holds.  A
    route with a tunnel's own local address as its source is left alone."""
    async def main() -> None:
        tun = RefusingOnceTun(routes=[(NET, None), (WORK, None)])
        h = Harness(tun, conns={"home": Conn, "work": Work})
        h.vips.up(1, up_event(LEASE))
        h.vips.up(2, up_event(LEASE2))
        h.vips.up(3, up_event(LEASE, name="work"))
        await h.settle()
        tun.set_route_source(WORK, "192.168.1.10")   # a site-to-site tunnel's too: its local address
        tun.calls.clear()
        tun.refuse_next = True
        h.vips.down(2)
        assert await h.settle() == [("block", str(NET)), ("remove", str(LEASE2))]
        tun.calls.clear()
        tun.routes.append((NET, None))   # the reload's Daemon._add_route
        await h.vips.source_routes()     # as Daemon._reload_routes then awaits
        assert tun.calls == [("source", str(NET), str(LEASE))]
        assert sources(tun) == {str(NET): str(LEASE), str(WORK): "192.168.1.10"}
    run(main())


def test_a_route_whose_source_a_replaced_connection_holds_takes_another_connections_address() -> None:
    """Review AD F4: home and lab both route 10.9.0.0/16; lab's IKE SA (the latest) made 10.3.0.2 its
    source.  A reload replaces lab (other proposals, the same networks): its IKE SA is being deleted.
    Once the reload's routes are in, the route takes home's address, the one IKE SA set up under the
    configuration in force holds (it kept the address of the IKE SA being deleted)."""
    async def main() -> None:
        conns: dict[str, object] = {"home": Conn, "lab": Conn}
        tun = RecordingTun(routes=[(NET, None)])
        h = Harness(tun, conns=conns)
        h.vips.up(1, up_event(LEASE, name="home"))
        h.vips.up(2, up_event(LEASE2, name="lab"))
        await h.settle()
        assert sources(tun) == {str(NET): str(LEASE2)}
        conns["lab"] = type("Lab", (), {"ike": Conn.ike})   # replaced: equal networks
        h.vips.replaced("lab")   # as the IKE reload does
        await h.vips.source_routes()   # as Daemon._reload_routes does once the routes are in
        assert sources(tun) == {str(NET): str(LEASE)}
        tun.calls.clear()
        h.vips.down(2)   # its DELETE done: the route keeps home's address
        assert await h.settle() == [("remove", str(LEASE2))]
    run(main())


class TwoNets:
    class ike:   # a connection routing two IPv4 networks
        children = (child_config("net", "dynamic", ["10.9.0.0/16", "10.8.0.0/16"], "aes128gcm16"),)


def test_one_route_refusing_its_source_at_up_leaves_the_connections_other_routes_set() -> None:
    """As review AD F2, at up: _set_sources caught per address, so the first route's error skipped the
    address's other routes, which kept no source (another connection's address, chosen by the kernel)."""
    async def main() -> None:
        tun = RouteFailingTun(routes=[(NET, None), (WORK, None)])
        tun.broken = str(NET)
        h = Harness(tun, conns={"home": TwoNets})
        h.vips.up(1, up_event(LEASE))
        await h.settle()
        assert sources(tun) == {str(NET): None, str(WORK): str(LEASE)}
    run(main())
