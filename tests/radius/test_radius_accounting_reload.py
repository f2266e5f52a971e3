"""Reloads that turn RADIUS accounting off and on again, through the IKE service's glue
(radius_edge), against accounting servers on loopback (real UDP, ports the kernel picks: safe in
parallel): the old run's Off reaches the server before the new run's On (else the server closes
the sessions the new run just started), a silent old server holds the new On only until the old
run's deadline (a fake clock), and an IKE SA that stayed up through the reloads gets a Start in
the new run with the usage from there and its Access-Accept's Class."""
from __future__ import annotations

import asyncio
import ipaddress
import types
from dataclasses import dataclass
from typing import Any

from test_radius_accounting import CHILD1, AcctServer, Worker, child_sas, serve, settings, until
from test_radius_accounting_lifecycle import WarpLoop, run_warped, statuses
from test_radius_messages import STATION

from tunsec.dataplane.pipe import Endpoint
from tunsec.ike.events import Accepted, DownReason, IkeSaUp
from tunsec.ike.identity import Identity
from tunsec.radius.accounting import Accounting
from tunsec.radius.settings import RadiusSettings
from tunsec.services.ike import radius_edge
from tunsec.services.ike.radius_edge import ACCT_RETIRE_WAIT


def service(radius: RadiusSettings) -> Any:
    from tunsec.services.ike.service import IkeService
    return IkeService([], lambda: None, {4: "192.0.2.1"}, radius=radius)  # type: ignore[arg-type,return-value]


def test_the_old_runs_off_reaches_the_server_before_the_new_runs_on() -> None:
    """Off, then on again while the old run still sends its Stop and Off: the server sees them
    all, in that order, then the new run's On (a new id)."""
    async def main() -> AcctServer:
        server, port = await serve("answer")
        conf = settings(port, timeout=2.0)   # no retransmission on a loaded machine either
        svc = service(conf)
        svc._acct_open()
        old = svc.accounting
        old.start("ike-1", "alice", STATION, [])
        await until(lambda: server.of("Start"))
        svc._reload_radius(None)
        svc._reload_radius(conf)
        assert svc.accounting is not old and svc.acct_retiring == {old}
        await until(lambda: len(server.of("Accounting-On")) == 2)
        assert not svc.acct_retiring
        svc.close()
        server.transport.close()
        return server

    server = asyncio.run(main())
    assert statuses(server) == ["Accounting-On", "Start", "Stop", "Accounting-Off", "Accounting-On"], statuses(server)
    first, *_, last = server.records
    assert first["Acct-Session-Id"] == server.records[-2]["Acct-Session-Id"] != last["Acct-Session-Id"]


def test_a_silent_old_server_holds_the_new_runs_on_only_until_the_old_runs_deadline() -> None:
    """The old run's server never answers: its Stop and Off would retransmit for long. The new
    run's On waits while the old run retires, and goes out once its deadline has passed (the
    loop's clock jumps past it) to the new server."""
    async def main(loop: WarpLoop) -> tuple[AcctServer, AcctServer]:
        silent, silent_port = await serve("silent")
        good, good_port = await serve("answer")
        svc = service(settings(silent_port, timeout=0.5))
        svc._acct_open()
        old = svc.accounting
        old.start("ike-1", "alice", STATION, [])
        await until(lambda: silent.records)   # the old On, unanswered
        svc._reload_radius(None)
        svc._reload_radius(settings(good_port))
        new = svc.accounting
        for _ in range(20):   # what the new run would send at once it has sent by now
            await asyncio.sleep(0)
        assert not good.records and svc.acct_retiring == {old} and new._on is not None and not new._on.done()
        loop.ahead = ACCT_RETIRE_WAIT + 1
        await until(lambda: good.of("Accounting-On"))
        assert not svc.acct_retiring and not old._tasks and not old._links   # retired, sockets closed
        svc.close()
        silent.transport.close()
        good.transport.close()
        return silent, good

    silent, good = run_warped(main)
    assert statuses(good) == ["Accounting-On"]
    assert "Accounting-On" not in statuses(silent)[1:] and set(statuses(silent)) <= {"Accounting-On", "Accounting-Off"}


@dataclass(frozen=True)
class FakeSa:
    """What the glue reads of an IKE SA."""

    local_spi: bytes
    is_closed: bool = False


def test_an_ike_sa_up_through_off_and_on_gets_a_start_with_its_usage_from_there() -> None:
    """Accounting off (the IKE SA came up then, or through a reload turning it off): when a
    reload turns it on, the IKE SA eap-radius authenticated gets a Start, with its Access-Accept's
    Class; its Stop counts the traffic since that Start, not what its Child SA carried before."""
    async def main() -> tuple[AcctServer, Any]:
        server, port = await serve("answer")
        worker = Worker(child_sas(CHILD1, 1000, 2000, 10, 20), [CHILD1])
        sa = FakeSa(b"\x0a\x0b\x0c\x0d" + bytes(4))
        ev = IkeSaUp("rw", b"i" * 8, b"r" * 8, Identity.parse("gw"), Identity.parse("alice@example.org"),
                     ("198.51.100.7", 4500), 4500, "", peer_vips=(ipaddress.ip_address("10.3.0.1"),),
                     accepted=Accepted((b"gold",), None))
        conn = types.SimpleNamespace(ike=types.SimpleNamespace(remote=types.SimpleNamespace(method="eap-radius")))
        svc = types.SimpleNamespace(
            accounting=None, acct_retiring=set(), session_limits={}, local_addrs={4: "192.0.2.1"},
            closing=False, connections={"rw": conn},
            _ike_handles={sa: "ike-1"}, ike_up={sa.local_spi: types.SimpleNamespace(ev=ev)},
            _ike_handle=lambda s: "ike-1",
            _endpoint=lambda version, port: Endpoint(ipaddress.ip_address("0.0.0.0"), port))
        radius_edge._acct_start(svc, sa, ev)   # type: ignore[arg-type]   # accounting off: nothing sent
        svc.accounting = Accounting(settings(port, timeout=2.0), worker.dump, worker.children)
        radius_edge._acct_open(svc)   # type: ignore[arg-type]
        radius_edge._acct_open(svc)   # type: ignore[arg-type]   # (idempotent: one On, one Start)
        await until(lambda: server.of("Start") and not svc.accounting._tasks)
        worker.sas = child_sas(CHILD1, 1500, 2600, 15, 26)
        radius_edge._acct_stop(svc, sa, DownReason.DELETED_BY_PEER)   # type: ignore[arg-type]
        await until(lambda: server.of("Stop"))
        svc.accounting.close()
        server.transport.close()
        return server, svc

    server, _ = asyncio.run(main())
    assert statuses(server) == ["Accounting-On", "Start", "Stop"], statuses(server)
    (start,), (stop,) = server.of("Start"), server.of("Stop")
    assert (start["User-Name"], start["Framed-IP-Address"]) == ("alice@example.org", "10.3.0.1")
    assert server.classes[1:] == [[b"gold"], [b"gold"]]
    assert start["Acct-Session-Id"] == stop["Acct-Session-Id"]
    assert (stop["Acct-Input-Octets"], stop["Acct-Output-Octets"]) == (500, 600)
    assert (stop["Acct-Input-Packets"], stop["Acct-Output-Packets"]) == (5, 6)
