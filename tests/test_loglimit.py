"""Log lines an unauthenticated peer can cause pass a rate limit; ours always log."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import pytest

from tunsec.conf.connections import Connection
from tunsec.dataplane.client import WorkerClient
from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.endpoint import DosLimits, IkeEndpoint
from tunsec.ike.identity import Identity
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.secret import Secret
from tunsec.loglimit import LogLimiter, Source, SourceLimiter
from tunsec.policy.ids import IdSpace
from tunsec.services.ike import IkeService

GW, PEER = "192.0.2.1", "198.51.100.7"
PSK = Secret(b"a shared secret of some length")


@dataclass
class Clock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_passes_then_lines_are_held_and_counted() -> None:
    clock = Clock()
    lim = LogLimiter(burst=3, period=10.0, clock=clock)
    assert [lim.admit() for _ in range(5)] == [0, 0, 0, None, None]
    clock.now += 9.9
    assert lim.admit() is None
    clock.now += 0.1
    assert lim.admit() == 3          # the first line of the next period reports the three held back
    assert lim.admit() == 0


def test_a_source_is_named_with_the_port_of_its_latest_line_and_kinds_are_tallied_apart() -> None:
    """What names a source held back is what a failure's own line would say: its address and port
    (a filter wants ADDR[PORT]), the latest one of that address; lines of two kinds, two sources."""
    lim = SourceLimiter(burst=0)
    for port, kind in [(500, "a"), (4500, "a"), (1234, "b"), (4500, "a")]:
        assert lim.admit_from(PEER, port, kind) is None
    # an IPv6 /64 is named by its first address, with that address's port, not the others'
    for addr, port in [("2001:db8::1", 4500), ("2001:db8::2", 600), ("2001:db8::2", 700)]:
        assert lim.admit_from(addr, port, "a") is None
    lim.burst = 1
    held = lim.admit_from("192.0.2.9", 500, "a")
    assert held is not None and held.count == 7
    assert held.top == (Source(PEER, 4500, 3, "a"), Source("2001:db8::1", 4500, 3, "a", "2001:db8::/64"),
                        Source(PEER, 1234, 1, "b"))
    assert (held.rest_lines, held.rest_sources) == (0, 0)


def test_a_count_carried_past_the_cap_stays_with_lines_of_its_kind() -> None:
    """Space-Saving gives a new source past the cap the evicted one's count + 1: with one sketch for
    all kinds, an address's one wrong password took the place of a back end's timeouts and its line
    read "failed authentication 40 more times" (review reveap F4). Each kind has its own now."""
    lim = SourceLimiter(burst=0, cap=2)
    for addr in ("192.0.2.1", "192.0.2.2"):
        for _ in range(39):
            assert lim.admit_from(addr, 500, "no verdict") is None
    assert lim.admit_from("192.0.2.3", 4500, "failed") is None
    lim.burst = 1
    held = lim.admit_from("198.51.100.1", 500, "failed")
    assert held is not None and held.count == 79
    assert Source("192.0.2.3", 4500, 1, "failed") in held.top
    assert [s.count for s in held.top if s.kind == "no verdict"] == [39, 39]
    # past the cap within one kind the carry is Space-Saving's, as before
    for addr in ("192.0.2.1", "192.0.2.2", "192.0.2.2", "192.0.2.4"):
        assert lim.admit_from(addr, 500, "failed") is None
    lim.period, lim.clock = 0.0, lambda: 1e9   # a new window: the next line passes
    held = lim.admit_from("198.51.100.1", 500, "failed")
    assert held is not None and held.rest_unknown
    assert {(s.address, s.count) for s in held.top} == {("192.0.2.2", 2), ("192.0.2.4", 2)}


def _cfg(name: str, proposals: str, local: str, remote: str | None, remote_id: str | None) -> IkeConfig:
    remote_auth = RemoteAuth("psk", Identity.parse(remote_id)) if remote_id else RemoteAuth("psk")
    return IkeConfig(name, LocalAuth("psk", Identity.parse(f"{name}.example")), remote_auth,
                     parse_proposals(proposals), (child_config("net", "10.1.0.0/16", "10.2.0.0/16", "aes128gcm16"),),
                     psk=PSK, local_addr=local, remote_addr=remote)


@dataclass
class FakeSocket:
    sent: list[bytes] = field(default_factory=list)

    def sendto(self, data: bytes, addr: tuple[str, int]) -> int:
        self.sent.append(data)
        return len(data)


def _refused_inits(service: IkeService, n: int) -> None:
    """n IKE_SA_INIT requests whose proposals the gateway refuses, each from a new initiator."""
    loop_now = asyncio.get_running_loop().time()
    for i in range(n):
        peer = IkeEndpoint([_cfg("site", "aes256gcm16-prfsha384-ecp384", PEER, GW, "gw.example")])
        peer.initiate("site", "net", loop_now)
        for d in peer.datagrams_to_send(loop_now):
            service.endpoint.receive(d.data, (PEER, 500 + i), loop_now, (GW, 500))
        service._pump()


def test_refused_negotiations_from_unauthenticated_peers_do_not_flood_the_log(
        caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> tuple[list[str], list[str]]:
        gw = _cfg("gw", "aes128gcm16-prfsha256-curve25519", GW, None, None)
        idle = WorkerClient(lambda _event: None)   # never started: requests refused (WorkerError), as a gone worker's
        # refused requests count towards the COOKIE thresholds (from one address, the 4th gets a COOKIE:
        # ike/test_init_cost.py); here every one must be refused, and reach the log limiter
        many = DosLimits(cookie_threshold=1000, cookie_threshold_ip=1000, block_threshold=1000)
        service = IkeService([Connection(gw.name, gw)], lambda: idle, {4: GW}, IdSpace(), limits=many)
        sock = FakeSocket()
        service.sockets.by_key = {(4, GW, 500): sock}  # type: ignore[dict-item]
        clock = Clock()
        service.unauthenticated_log = LogLimiter(burst=10, period=10.0, clock=clock)
        with caplog.at_level(logging.ERROR, logger="tunsec.ike"):
            _refused_inits(service, 200)
            await asyncio.sleep(0)    # the refused GETSPIs' collector runs: the SPI barrier goes down
            service._pump()
            first = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
            caplog.clear()
            clock.now += 10.0
            _refused_inits(service, 1)
            later = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(sock.sent) >= 200, "every request was still answered"
        assert not service.endpoint.sas, "and nothing was kept for any of them"
        return first, later

    first, later = asyncio.run(body())
    assert len(first) == 10 and all("NO_PROPOSAL_CHOSEN" in m for m in first)
    assert len(later) == 1 and "(190 more like it suppressed)" in later[0]
