"""The Dynamic Authorization listener through the IKE service's glue (radius_edge), on loopback
with real UDP (a port the kernel picks: safe in parallel): bound to the configured address
only, answering a Disconnect-Request for no session with a NAK; a reload that changes the
listener binds the new one and closes the old, one that turns it off closes it; its counters
reach ``tunsec status`` and Prometheus."""
from __future__ import annotations

import asyncio
import dataclasses
import functools
import ipaddress
import socket
import time
import types
from typing import Any

import pytest
from pyrad import packet as rp

from tunsec.ike.secret import Secret
from tunsec.radius.dae import DaeServer
from tunsec.radius.messages import DICTIONARY, Station
from tunsec.radius.settings import DaeSettings, RadiusServer, RadiusSettings

SECRET = b"dae-listener-secret"
LOOP = ipaddress.ip_address("127.0.0.1")


def two_free_ports() -> tuple[int, int]:
    """Two different UDP ports of 127.0.0.1 nothing is bound to: both held until both are picked (a port
    closed again may be picked again, 1 in ~28000)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        return a.getsockname()[1], b.getsockname()[1]


def settings(port: int) -> RadiusSettings:
    server = RadiusServer("fr", LOOP, Secret(b"radius"))
    return RadiusSettings((server,), dae=DaeSettings(LOOP, Secret(SECRET), port, (ipaddress.ip_network(LOOP),)))


def service(radius: RadiusSettings) -> Any:
    from tunsec.services.ike.service import IkeService
    return IkeService([], lambda: None, {4: "192.0.2.1"}, radius=radius)  # type: ignore[arg-type]


def disconnect_request(user: str, stamp: int | None, ident: int = 3) -> tuple[Any, bytes]:
    """A signed Disconnect-Request for ``user`` (Event-Timestamp ``stamp``; None: without), and its bytes."""
    pkt = rp.CoAPacket(code=rp.DisconnectRequest, id=ident, secret=SECRET, dict=DICTIONARY)
    pkt.AddAttribute("User-Name", user)
    if stamp is not None:
        pkt.AddAttribute("Event-Timestamp", stamp)
    return pkt, pkt.RequestPacket()


async def disconnect(port: int, user: str, wait: float = 10.0) -> tuple[Any, bytes | None]:
    """A Disconnect-Request for ``user`` to 127.0.0.1:``port``, and the answer (None: refused, or none in
    ``wait`` seconds: a bound for a hang where an answer is due, how long silence must last where none
    is). Stamped a second ahead (MAX_AHEAD allows 10): these tests send in the second the listener
    started, which refuses its own stamps (a replay of before the start cannot be told apart)."""
    pkt, raw = disconnect_request(user, int(time.time()) + 1)
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        s.connect(("127.0.0.1", port))
        await loop.sock_sendall(s, raw)
        try:
            return pkt, await asyncio.wait_for(loop.sock_recv(s, 4096), wait)
        except (TimeoutError, ConnectionRefusedError):
            return pkt, None


def nak_cause(req: Any, raw: bytes | None) -> int | None:
    assert raw is not None, "no answer"
    reply = rp.CoAPacket(packet=raw, secret=SECRET, dict=DICTIONARY)
    assert reply.code == rp.DisconnectNAK and req.VerifyReply(reply, raw, enforce_ma=True), \
        f"another answer: {reply.code}, or to another request (Identifier {reply.id}, not {req.id})"
    (cause,) = reply.get(101)
    return int.from_bytes(cause, "big")


def test_the_listener_binds_its_address_answers_and_follows_reloads() -> None:
    async def main() -> None:
        first, second = two_free_ports()
        svc = service(settings(first))
        svc._dae_open()   # prepare(): before the privilege drop
        assert svc.dae is not None
        await svc._dae_serve()
        assert svc.dae.transport.get_extra_info("sockname") == ("127.0.0.1", first)
        req, answer = await disconnect(first, "alice")
        assert nak_cause(req, answer) == 503   # no IKE SA: Session-Context-Not-Found
        old = svc.dae

        relay = svc.radius
        svc._reload_radius(settings(second))   # another port: the new listener, the old one closed
        assert svc.dae is not old and old.transport is None
        assert svc.radius is relay   # only dae { } changed: EAP rounds in flight go on
        for _ in range(5):
            await asyncio.sleep(0)   # the new one is served by a task
        req, answer = await disconnect(second, "bob")
        assert nak_cause(req, answer) == 503
        assert (await disconnect(first, "alice", wait=2.0))[1] is None
        status = svc.status(None)["radius"]["dae"]   # type: ignore[arg-type]
        assert (status["listen"], status["requests"], status["disconnect_naks"]) == \
            (f"127.0.0.1:{second}", 1, 1), status

        same = svc.dae
        off = dataclasses.replace(settings(second), dae=None)
        svc._reload_radius(dataclasses.replace(settings(second), nas_identifier="gw-2"))   # dae unchanged
        assert svc.dae is same and same.nas_identifier == "gw-2"
        svc._reload_radius(off)
        assert svc.dae is None and same.transport is None
        assert (await disconnect(second, "bob", wait=2.0))[1] is None
        svc.close()

    asyncio.run(main())


def test_dae_counters_reach_prometheus_and_the_other_radius_families_still_work() -> None:
    from tunsec.metrics import state_families
    from tunsec.radius.dae import DaeStats

    doc = {"radius": {"requests": 2, "conversations": 0, "outstanding": 0, "servers": {},
                      "dae": {"listen": "127.0.0.1:3799", **DaeStats(requests=4, bad=2).as_dict()}}}
    families = {f.name: f for f in state_families(doc, False)}
    dae = {s.labels["kind"]: s.value for s in families["tunsec_radius_dae_packets"].samples}
    assert dae["requests"] == 4 and dae["bad"] == 2 and "listen" not in dae
    packets = {s.labels["kind"]: s.value for s in families["tunsec_radius_packets"].samples}
    assert packets == {"requests": 2}


def station(calling: str, nas_port: int) -> Station:
    return Station("gw", "192.0.2.1", "192.0.2.1[4500]", calling, nas_port, "rw")


def test_the_service_matches_established_eap_radius_ike_sas_by_identity_session_id_and_virtual_ip() -> None:
    """radius_edge._dae_find on the service's own tables (IKE SAs by handle, connections, the
    IKE_SA up records, what accounting's Starts said): only established IKE SAs of eap-radius
    connections, each once (a rekeyed IKE SA shares its successor's handle)."""
    from tunsec.ike.identity import Identity
    from tunsec.ike.state import State
    from tunsec.radius.dae import SessionQuery
    from tunsec.services.ike import radius_edge

    @dataclasses.dataclass(eq=False)   # hashable by identity, as an IkeSa
    class Sa:
        name: str
        peer_id: Identity
        local_spi: bytes
        state: State
        remote_addr: tuple[str, int] = ("198.51.100.7", 4500)   # where it is now (MOBIKE moved it)
        local_port: int = 4500

    def sa(name: str, user: str, spi: bytes, state: State = State.ESTABLISHED) -> Sa:
        return Sa(name, Identity.parse(user), spi, state)

    def conn(method: str) -> Any:
        return types.SimpleNamespace(ike=types.SimpleNamespace(remote=types.SimpleNamespace(method=method)))

    def up(*vips: str) -> Any:
        return types.SimpleNamespace(ev=types.SimpleNamespace(peer_vips=tuple(ipaddress.ip_address(v) for v in vips)))

    alice, rekeyed = sa("rw", "alice@example.org", b"a" * 8), sa("rw", "alice@example.org", b"r" * 8, State.REKEYED)
    bob, going = sa("rw", "bob@example.org", b"b" * 8), sa("rw", "carol@example.org", b"c" * 8, State.DELETING)
    psk = sa("site", "alice@example.org", b"p" * 8)   # a PSK connection's peer of the same name
    svc = types.SimpleNamespace(
        _ike_handles={alice: 1, rekeyed: 1, bob: 2, going: 3, psk: 4},
        connections={"rw": conn("eap-radius"), "site": conn("psk")},
        ike_up={b"a" * 8: up("10.3.0.1"), b"b" * 8: up("10.3.0.2", "fd00::2")},
        # what each session's Start said (alice's from before MOBIKE moved her to 198.51.100.7)
        accounting=types.SimpleNamespace(started={1: ("s-1", station("198.51.100.5[4500]", 0x61616161)),
                                                  2: ("s-2", station("198.51.100.6[4500]", 0x62626262))}.get),
        radius=types.SimpleNamespace(settings=types.SimpleNamespace(nas_identifier="gw")),
        _endpoint=lambda _version, port: types.SimpleNamespace(addr=ipaddress.ip_address("192.0.2.1"), port=port))

    def find(users: tuple[str, ...] = (), sids: tuple[str, ...] = (), vips: tuple[str, ...] = (),
             **station: Any) -> list[Any]:
        query = SessionQuery(users, sids, tuple(ipaddress.ip_address(v) for v in vips), **station)
        return radius_edge._dae_find(svc, query)  # type: ignore[arg-type]

    assert find(("alice@example.org",)) == [1]
    assert find(("carol@example.org",)) == []   # being deleted already
    assert find(sids=("s-2",)) == [2] and find(("alice@example.org",), ("s-2",)) == []
    assert find(vips=("fd00::2",)) == [2] and find(("alice@example.org",), vips=("10.3.0.2",)) == []
    assert find(("alice@example.org", "bob@example.org"), vips=("10.3.0.1", "10.3.0.2")) == [1, 2]
    # the station attributes: as accounting's Start sent them, not where the IKE SA is now
    assert find(calling=("198.51.100.5[4500]",)) == [1] and find(calling=("198.51.100.7[4500]",)) == []
    assert find(nas_ports=(0x62626262,), nas_port_ids=("rw",), called=("192.0.2.1[4500]",)) == [2]
    assert find(("alice@example.org",), nas_ports=(0x62626262,)) == []
    # without accounting: the IKE SA's own (its SPI's first 4 bytes as NAS-Port, as the Start would)
    svc.accounting = None
    assert find(calling=("198.51.100.7[4500]",)) == [1, 2]
    assert find(nas_ports=(int.from_bytes(b"bbbb"),), nas_port_ids=("rw",)) == [2]


def test_a_request_answered_before_a_reload_that_recreates_the_listener_is_not_taken_again() -> None:
    """Only the listener's port changes (the secret stays): the new listener takes the old one's
    answer cache, so the same bytes sent to it (a captured request, replayed) are dropped."""
    async def main() -> None:
        first, second = two_free_ports()
        svc = service(settings(first))
        svc._dae_open()
        await svc._dae_serve()
        req, answer = await disconnect(first, "alice")
        assert nak_cause(req, answer) == 503
        svc._reload_radius(settings(second))
        for _ in range(5):
            await asyncio.sleep(0)   # the new one is served by a task
        assert (await disconnect(second, "alice", wait=2.0))[1] is None
        stats = svc.status(None)["radius"]["dae"]   # type: ignore[arg-type]
        assert (stats["requests"], stats["replayed"]) == (0, 1), stats
        svc.close()

    asyncio.run(main())


def test_a_request_captured_before_a_restart_is_refused_after_it_even_from_the_start_second(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The real listener on a real UDP socket, restarted (the service closed, a new one bound to the same
    port: nothing of the first survives). Two requests the first one answered, captured on the wire:
    one stamped seconds before the restart, one in the very second the new listener starts (the wall
    clock the listener reads is a fake one, the test's to set: real ones cannot be put in a given
    second). Replayed to the new listener, neither is answered; a new request and one without
    Event-Timestamp sent after them are (NAK 503 and 402): on one socket, to one single-threaded
    listener, an answer to a replay would come first."""
    from tunsec.services.ike import radius_edge

    wall = [float(int(time.time())) + 0.25]
    # its monotonic clock the same one: the time the test lets pass passes on both (the listener keeps
    # its start on the monotonic clock too, against a wall clock stepped after it)
    monkeypatch.setattr(radius_edge, "DaeServer",
                        functools.partial(DaeServer, clock=lambda: wall[0], monotonic=lambda: wall[0]))
    start = int(wall[0])

    async def main() -> None:
        port = two_free_ports()[0]
        first = service(settings(port))
        first._dae_open()
        await first._dae_serve()
        wall[0] += 5
        before, before_raw = disconnect_request("alice", start + 5, ident=11)
        wall[0] += 4   # start + 9.25
        in_start, in_start_raw = disconnect_request("alice", start + 9, ident=12)
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as dac:
            dac.setblocking(False)
            dac.connect(("127.0.0.1", port))
            for req, raw in ((before, before_raw), (in_start, in_start_raw)):
                await loop.sock_sendall(dac, raw)
                assert nak_cause(req, await asyncio.wait_for(loop.sock_recv(dac, 4096), 10)) == 503   # acted on
        first.close()
        for _ in range(5):
            await asyncio.sleep(0)   # the transport closes its socket on the next turn of the loop

        wall[0] += 0.5   # the restart: start + 9.75, in the second in_start was stamped in
        second = service(settings(port))
        second._dae_open()
        await second._dae_serve()
        wall[0] += 20
        fresh, fresh_raw = disconnect_request("alice", start + 29, ident=13)
        unstamped, unstamped_raw = disconnect_request("alice", None, ident=14)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as eavesdropper:
            eavesdropper.setblocking(False)
            eavesdropper.connect(("127.0.0.1", port))
            for raw in (before_raw, in_start_raw, fresh_raw, unstamped_raw):
                await loop.sock_sendall(eavesdropper, raw)
            assert nak_cause(fresh, await asyncio.wait_for(loop.sock_recv(eavesdropper, 4096), 10)) == 503
            assert nak_cause(unstamped, await asyncio.wait_for(loop.sock_recv(eavesdropper, 4096), 10)) == 402
        stats = second.status(None)["radius"]["dae"]   # type: ignore[arg-type]
        assert (stats["requests"], stats["replayed"], stats["unstamped"]) == (1, 2, 1), stats
        second.close()

    asyncio.run(main())
