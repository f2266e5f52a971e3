"""Connections on different IKE ports (swanctl ``local_port``): each port has its own socket on
loopback, each answers IKE from the port it was asked on, and a socket is closed when no
connection uses its port any more (reload) and at shutdown (its port can be bound again)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
from typing import Any

import pytest
from test_ikeservice_peers import GW, Gateway, InProcessWorker, psk_ike, run, site_ip, site_net

from tunsec.conf.config import parse_config
from tunsec.dataplane import pipe
from tunsec.ike.config import RemoteAuth
from tunsec.ike.constants import NON_ESP_MARKER, ExchangeType
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.identity import Identity
from tunsec.ike.message import decode_header
from tunsec.policy.ids import IdSpace
from tunsec.services.base import StartupError
from tunsec.services.ike import IkeService

LO = "127.0.0.1"


def free_ports(n: int) -> list[int]:
    """n different UDP ports of LO that nothing is bound to (the kernel picks them): all held until
    the last is picked, as a port closed again may be picked again (1 in ~28000 drawn one by one)."""
    with contextlib.ExitStack() as held:
        ports = []
        for _ in range(n):
            s = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            s.bind((LO, 0))
            ports.append(int(s.getsockname()[1]))
        return ports


def free_port() -> int:
    (port,) = free_ports(1)
    return port


def conf(ports: dict[str, int]) -> str:
    conns = "".join(f"""  {name} {{ local_addrs = {LO}
       local_port = {port}
       local {{ auth = psk
               id = gw.example }}
       remote {{ auth = psk
                id = {name}.example }}
       children {{ net {{ local_ts = 10.1.0.0/16
                        remote_ts = 10.2.0.0/16
                        esp_proposals = aes128gcm16 }} }} }}
""" for name, port in ports.items())
    return ("connections {\n" + conns + "}\n"
            "secrets { ike { secret = \"a shared secret of some length\" } }\n")


def can_bind(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((LO, port))
        except OSError:
            return False
        return True


async def answer_from(port: int, name: str, marked: bool = True) -> tuple[int, Any]:
    """An IKE_SA_INIT request from a site's engine to LO:port over real UDP: the header of the
    gateway's answer and the port it came from.  Neither port is 500, so both ways carry the
    non-ESP marker, as strongSwan's sender and receiver have it; a request without it (``marked``
    False: a client that sent from 500 through a NAT) is answered without it."""
    cfg = psk_ike(name, f"{name}.example", RemoteAuth("psk", Identity.parse("gw.example")), LO, LO,
                  "10.2.0.0/16", "10.1.0.0/16")
    site = IkeEndpoint([cfg])
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LO, 0))
        s.setblocking(False)
        site.initiate(name, "net", loop.time())
        (request,) = site.datagrams_to_send(loop.time())
        s.sendto(NON_ESP_MARKER + request.data if marked else request.data, (LO, port))
        data, src = await asyncio.wait_for(loop.sock_recvfrom(s, 65535), 10)
    assert data.startswith(NON_ESP_MARKER) is marked
    return src[1], decode_header(data[len(NON_ESP_MARKER):] if marked else data)


def test_each_local_port_has_its_socket_answers_and_is_closed_when_unused() -> None:
    async def body() -> None:
        ports = dict(zip(("one", "two"), free_ports(2), strict=True))
        cfg = parse_config(conf(ports), "ports.conf")
        worker = InProcessWorker(asyncio.get_running_loop(), lambda msg: None)
        svc = IkeService(cfg.connections, lambda: worker, {4: LO}, IdSpace())  # type: ignore[arg-type,return-value]
        svc.open_sockets()
        await svc.start()
        try:
            for name, port in ports.items():
                for marked in (True, False):
                    src_port, hdr = await answer_from(port, name, marked)
                    assert src_port == port                       # answered from the port it was asked on
                    assert hdr.exchange == ExchangeType.IKE_SA_INIT and hdr.is_response
            assert not can_bind(ports["one"]) and not can_bind(ports["two"])

            # reload without "two": its socket is closed (the port is free), "one" still answers
            await svc.reload(parse_config(conf({"one": ports["one"]}), "ports.conf"))
            assert can_bind(ports["two"])
            src_port, hdr = await answer_from(ports["one"], "one")
            assert src_port == ports["one"] and hdr.is_response
            assert not can_bind(ports["one"])
        finally:
            svc.close()     # what the daemon's close_network does at exit (after shutdown's DELETEs)
        assert can_bind(ports["one"]) and svc.sockets.by_key == {}

    run(body())


def initiator_conf(ports: dict[str, int], peer_port: int) -> str:
    """Connections that initiate to a peer on LO:peer_port, each from its own local_port."""
    return conf(ports).replace("       local {", f"       remote_addrs = {LO}\n       remote_port = {peer_port}\n"
                                                 "       local {")


def test_initiator_sends_ike_sa_init_from_its_local_port() -> None:
    """As strongSwan: an initiator's first datagram leaves from the connection's local_port, not from
    whichever IKE socket happens to be first (the peer would answer to, and expect, the wrong port)."""
    async def body() -> None:
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.bind((LO, 0))
            peer.setblocking(False)
            ports = dict(zip(("one", "two"), sorted(free_ports(2)), strict=True))
            cfg = parse_config(initiator_conf(ports, peer.getsockname()[1]), "init.conf")
            worker = InProcessWorker(loop, lambda msg: None)
            svc = IkeService(cfg.connections, lambda: worker, {4: LO}, IdSpace())  # type: ignore[arg-type,return-value]
            svc.open_sockets()
            await svc.start()
            try:
                for name in ("two", "one"):     # "two" is not the first socket
                    svc.initiate(name, "net")
                    data, src = await asyncio.wait_for(loop.sock_recvfrom(peer, 65535), 10)
                    assert data.startswith(NON_ESP_MARKER)     # neither port is 500
                    hdr = decode_header(data[len(NON_ESP_MARKER):])
                    assert hdr.exchange == ExchangeType.IKE_SA_INIT and not hdr.is_response
                    assert src == (LO, ports[name])
            finally:
                await svc.shutdown()
                svc.close()

    run(body())


def test_no_socket_for_an_initiators_local_port_is_a_startup_error() -> None:
    """The socket an initiator's IKE_SA_INIT would leave from is missing (here: the service listens
    on another address): a startup error naming the connection, address and port, before binding."""
    text = initiator_conf({"one": 4501}, 4502).replace(f"local_addrs = {LO}", "local_addrs = 192.0.2.1")
    cfg = parse_config(text, "init.conf")
    svc = IkeService(cfg.connections, lambda: None, {4: "192.0.2.7"}, IdSpace())  # type: ignore[arg-type,return-value]
    with pytest.raises(StartupError) as err:
        svc.open_sockets()
    msg = str(err.value)
    assert "connection one" in msg and "192.0.2.1 port 4501" in msg and "192.0.2.7 port 4501" in msg
    assert svc.sockets.by_key == {}


def test_esp_on_a_custom_ike_port_is_a_counted_drop(caplog: pytest.LogCaptureFixture) -> None:
    """Between custom ports a datagram without the non-ESP marker is ESP in UDP (strongSwan's
    receiver); only the worker's port 4500 carries ESP here, so it is dropped, counted and said
    (not parsed as IKE); a NAT keepalive is dropped silently; marked IKE is still answered."""
    async def body() -> None:
        port = free_port()
        cfg = parse_config(conf({"one": port}), "ports.conf")
        worker = InProcessWorker(asyncio.get_running_loop(), lambda msg: None)
        svc = IkeService(cfg.connections, lambda: worker, {4: LO}, IdSpace())  # type: ignore[arg-type,return-value]
        svc.open_sockets()
        await svc.start()
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                esp = bytes.fromhex("c0ffee01 00000001") + bytes(40)     # SPI, sequence number, payload
                s.sendto(esp, (LO, port))
                s.sendto(b"\xff", (LO, port))
                src_port, hdr = await answer_from(port, "one")           # sent after both: read after both
            assert src_port == port and hdr.is_response
            assert svc.status(pipe.Reply(1, pipe.MsgType.DUMP, pipe.Errno.OK))["ike_drops"]["esp_on_ike_port"] == 1
            assert sum("ESP in UDP" in r.message and f"IKE port {port}" in r.message for r in caplog.records) == 1
        finally:
            await svc.shutdown()
            svc.close()

    run(body())



class _Recording(list[tuple[tuple[str, int], tuple[str, int], bytes]]):
    """The in-memory wire, keeping a copy of every datagram put on it."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[tuple[str, int], tuple[str, int], bytes]] = []

    def append(self, item: tuple[tuple[str, int], tuple[str, int], bytes]) -> None:
        self.seen.append(item)
        super().append(item)


def test_ike_sa_init_from_port_500_to_4500_is_answered_from_4500() -> None:
    """A peer with ``remote_port = 4500`` (strongSwan's, or ours) sends IKE_SA_INIT from 500 to the
    worker's 4500, which passes it up with no local address: the answer leaves from 4500 (the
    worker's SEND_IKE, unmarked towards 500), where the request came in, not from port 500."""
    async def go() -> None:
        gw = Gateway(1)
        await gw.start()
        cfg = psk_ike("site0", "site0.example", RemoteAuth("psk", Identity.parse("gw.example")),
                      site_ip(0), GW, site_net(0), "10.1.0.0/16")
        gw.sites[0] = IkeEndpoint([dataclasses.replace(cfg, remote_port=4500)])
        gw.wire = wire = _Recording()
        gw.service.sockets.by_key[(4, GW, 500)].wire = wire    # type: ignore[attr-defined]
        gw.connect(0)
        await gw.settle()
        assert gw.site_sa(0).remote_addr == (GW, 4500)
        init = [(src, dst) for src, dst, data in wire.seen if decode_header(data).exchange == ExchangeType.IKE_SA_INIT]
        assert init == [((site_ip(0), 500), (GW, 4500)), ((GW, 4500), (site_ip(0), 500))]
        sends = [m for m in gw.worker.log if isinstance(m, pipe.SendIke)]
        assert sends[0].remote.port == 500 and all(m.remote.port == 4500 for m in sends[1:])
    run(go())


def test_marked_ike_sa_init_from_a_custom_port_to_4500_is_answered_from_4500() -> None:
    """A tunsec initiator on a custom local_port with ``remote_port = 4500`` (what docs/configuration.md
    tells it to use towards a tunsec peer) sends its IKE_SA_INIT, marked, from that port to the worker's
    4500: the answer must leave from 4500 too (RFC 7296 §2.11), not from port 500, which a NAT or
    stateful firewall in front of the initiator drops (its mapping is for our 4500)."""
    async def go() -> None:
        gw = Gateway(1)
        await gw.start()
        cfg = psk_ike("site0", "site0.example", RemoteAuth("psk", Identity.parse("gw.example")),
                      site_ip(0), GW, site_net(0), "10.1.0.0/16")
        gw.sites[0] = IkeEndpoint([dataclasses.replace(cfg, local_port=5000, remote_port=4500)])
        gw.wire = wire = _Recording()
        gw.service.sockets.by_key[(4, GW, 500)].wire = wire    # type: ignore[attr-defined]
        gw.connect(0)
        await gw.settle()
        init = [(src, dst) for src, dst, data in wire.seen if decode_header(data).exchange == ExchangeType.IKE_SA_INIT]
        assert init == [((site_ip(0), 5000), (GW, 4500)), ((GW, 4500), (site_ip(0), 5000))]
    run(go())
