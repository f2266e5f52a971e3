"""A reload that changes ``radius { }`` while requests are under way (real UDP on loopback, ports
the kernel picks): an accounting record sent before it is answered and counted (not lost, its
IKE SA not closed by accounting_close_on_timeout), with the settings it was sent with; a record
sent after it uses the new ones, and the two do not close each other's links; an Access-Request
of the EAP relay under way is answered too. The server holds its answers until the test has
reloaded: no timing is involved."""
from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
from typing import Any

from pyrad import packet as rp
from test_radius_accounting import Worker, settings, until
from test_radius_messages import SECRET, STATION, reply
from test_radius_relay import ask

from tunsec.ike.eap.relay import RelayOutcome, RelayReply
from tunsec.ike.secret import Secret
from tunsec.radius.accounting import Accounting
from tunsec.radius.causes import Cause
from tunsec.radius.messages import ACCESS_ACCEPT, DICTIONARY
from tunsec.radius.relay import RadiusRelay
from tunsec.radius.settings import RadiusServer, RadiusSettings

NEW_SECRET = b"the new shared secret"


class HoldingServer(asyncio.DatagramProtocol):
    """Answers each request, with whichever of ``secrets`` it verifies with, once released."""

    def __init__(self, accounting: bool = True) -> None:
        self.accounting = accounting
        self.secrets = (SECRET, NEW_SECRET)
        self.held: list[tuple[bytes, Any]] = []
        self.got: list[tuple[str, bytes]] = []   # (Acct-Status-Type or "Access-Request", secret)
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.held.append((data, addr))

    def release(self) -> None:
        held, self.held = self.held, []
        for data, addr in held:
            self.transport.sendto(self._answer(data), addr)

    def _answer(self, data: bytes) -> bytes:
        if not self.accounting:
            return reply(ACCESS_ACCEPT, data, [(79, b"\x03\x07\x00\x04")])
        for secret in self.secrets:
            req = rp.AcctPacket(packet=data, secret=secret, dict=DICTIONARY)
            if req.VerifyAcctRequest():
                if (req["Acct-Status-Type"][0], secret) not in self.got:   # a retransmission once
                    self.got.append((req["Acct-Status-Type"][0], secret))
                answer: bytes = req.CreateReply().ReplyPacket()
                return answer
        raise AssertionError("a request that verifies with no secret")


async def holding(accounting: bool = True) -> tuple[HoldingServer, int]:
    server = HoldingServer(accounting)
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: server,
                                                                             local_addr=("127.0.0.1", 0))
    return server, transport.get_extra_info("sockname")[1]


def conf(port: int) -> RadiusSettings:
    # a round of 10 s: the held answer is released long before it ends, on a loaded machine too
    return dataclasses.replace(settings(port, timeout=5.0), retransmit_tries=1)


def with_secret(radius: RadiusSettings, secret: bytes) -> RadiusSettings:
    return dataclasses.replace(radius, servers=tuple(dataclasses.replace(s, secret=Secret(secret))
                                                    for s in radius.servers))


def test_a_start_under_way_across_a_reload_is_answered_and_closes_nothing() -> None:
    async def main() -> tuple[Accounting, list[Any]]:
        server, port = await holding()
        closed: list[Any] = []
        worker = Worker()
        acct = Accounting(conf(port), worker.dump, worker.children, close=closed.append)
        acct.start("ike-1", "alice", STATION, [])
        await until(lambda: server.held)   # the Start is at the server
        acct.reconfigure(dataclasses.replace(acct.settings, nas_identifier="gw-2"))   # a reload
        server.release()
        await until(lambda: acct.stats.responses + acct.stats.failed >= 1, timeout=30)
        await asyncio.sleep(0.05)   # a close would follow the loss at once
        acct.close()
        server.transport.close()
        return acct, closed

    acct, closed = asyncio.run(main())
    assert (acct.stats.responses, acct.stats.failed, closed) == (1, 0, [])


def test_a_stop_under_way_across_a_reload_is_answered() -> None:
    async def main() -> tuple[Accounting, HoldingServer]:
        server, port = await holding()
        worker = Worker()
        acct = Accounting(conf(port), worker.dump, worker.children)
        acct.start("ike-1", "alice", STATION, [])
        await until(lambda: server.held)
        server.release()
        await until(lambda: acct.stats.responses == 1)
        acct.stop("ike-1", Cause.USER_REQUEST)
        await until(lambda: server.held)   # the Stop is at the server
        acct.reconfigure(dataclasses.replace(acct.settings, accounting_interval=600))
        server.release()
        await until(lambda: acct.stats.responses + acct.stats.failed >= 2, timeout=30)
        acct.close()
        server.transport.close()
        return acct, server

    acct, server = asyncio.run(main())
    assert (acct.stats.responses, acct.stats.failed) == (2, 0)
    assert server.got == [("Start", SECRET), ("Stop", SECRET)]


def test_records_before_and_after_a_secret_change_are_both_answered_each_with_its_secret() -> None:
    async def main() -> tuple[Accounting, HoldingServer, list[Any], list[RadiusServer]]:
        server, port = await holding()
        closed: list[Any] = []
        worker = Worker()
        acct = Accounting(conf(port), worker.dump, worker.children, close=closed.append)
        acct.start("ike-1", "alice", STATION, [])
        await until(lambda: len(server.held) == 1)
        acct.reconfigure(with_secret(acct.settings, NEW_SECRET))   # the same server r0, a new secret
        acct.start("ike-2", "bob", STATION, [])
        await until(lambda: len(server.held) == 2)   # both under way at once
        server.release()
        await until(lambda: acct.stats.responses + acct.stats.failed >= 2, timeout=30)
        await asyncio.sleep(0.05)
        links = [link.server for link in acct._links.values()]   # the old one retired once idle
        acct.close()
        server.transport.close()
        return acct, server, closed, links

    acct, server, closed, links = asyncio.run(main())
    assert (acct.stats.responses, acct.stats.failed, closed) == (2, 0, [])
    assert server.got == [("Start", SECRET), ("Start", NEW_SECRET)]
    assert [s.secret for s in links] == [Secret(NEW_SECRET)]


def test_an_access_request_under_way_across_a_reload_gets_its_answer() -> None:
    """Through the IKE service's reload (radius_edge): the relay is reconfigured, not replaced."""
    from tunsec.services.ike.service import IkeService

    async def main() -> tuple[RelayReply, RadiusRelay]:
        server, port = await holding(accounting=False)
        radius = RadiusSettings((RadiusServer("fr", ipaddress.ip_address("127.0.0.1"), Secret(SECRET), port),),
                                retransmit_timeout=5.0, retransmit_tries=1)
        svc = IkeService([], lambda: None, {4: "192.0.2.1"}, radius=radius)  # type: ignore[arg-type]
        relay = svc.radius
        assert relay is not None
        task = asyncio.ensure_future(relay.round("ike-1", ask(b"\x02\x07\x00\x0a\x01alice", True), STATION))
        await until(lambda: server.held)
        svc._reload_radius(with_secret(dataclasses.replace(radius, nas_identifier="gw-2"), NEW_SECRET))
        server.release()
        answer = await asyncio.wait_for(task, 30)
        svc.close()
        server.transport.close()
        return answer, relay

    answer, relay = asyncio.run(main())
    assert answer.outcome is RelayOutcome.ACCEPT, answer.reason
    assert (relay.stats.accepts, relay.stats.timeouts) == (1, 0)


def test_a_request_that_outlives_its_closed_client_opens_no_socket() -> None:
    """radius { } removed while a conversation tries its servers: the next one gets a closed link
    (no answer can come: the round fails), not a socket nobody would close."""
    async def main() -> tuple[RelayReply, Any]:
        server, port = await holding(accounting=False)
        radius = RadiusSettings((RadiusServer("fr", ipaddress.ip_address("127.0.0.1"), Secret(SECRET), port),),
                                retransmit_timeout=0.2, retransmit_base=1.0, retransmit_tries=0)
        relay = RadiusRelay(radius)
        relay.close()
        answer = await relay.round("ike-1", ask(b"\x02\x07\x00\x0a\x01alice", True), STATION)
        link = relay.client.link(radius.servers[0])
        server.transport.close()
        return answer, link

    answer, link = asyncio.run(main())
    assert answer.outcome is RelayOutcome.FAILED
    assert [s.transport for s in link.sockets] in ([], [None])
