"""The RADIUS client's per-server bookkeeping, with a fake transport (no network): what is
sent and retransmitted, which datagrams end a wait, and what is dropped and counted; and the
socket it opens itself (to a silent port on loopback the kernel picks): one per link, closed
with it."""
from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

import pytest
from test_radius_messages import SECRET, STATION, reply

from tunsec.ike.secret import Secret
from tunsec.radius.client import IDS, Busy, NoAnswer, RadiusStats, ServerLink
from tunsec.radius.messages import ACCESS_ACCEPT, ACCESS_CHALLENGE, Answer, access_request
from tunsec.radius.settings import RadiusServer, RadiusSettings

SERVER = RadiusServer("r1", ipaddress.ip_address("127.0.0.1"), Secret(SECRET))


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self.sent.append(data)

    def close(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default   # no socket: nothing to size or count


class FakeLink(ServerLink[Answer]):
    """A link whose sockets, opened as the real ones are, all send into one fake transport."""

    def __init__(self, settings: RadiusSettings, stats: RadiusStats) -> None:
        super().__init__(SERVER, settings, stats)
        self.fake = FakeTransport()

    async def _connect(self, sock: Any) -> asyncio.BaseTransport:
        sock.connection_made(self.fake)
        return self.fake  # type: ignore[return-value]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        """A datagram to its (first) socket."""
        self.sockets[0].datagram_received(data, addr)


def link(tries: int = 2, timeout: float = 0.05) -> tuple[FakeLink, FakeTransport, RadiusStats]:
    stats = RadiusStats()
    srv = FakeLink(RadiusSettings((SERVER,), retransmit_timeout=timeout, retransmit_base=1.0,
                                  retransmit_tries=tries), stats)
    return srv, srv.fake, stats


def build(ident: int) -> Any:
    return access_request(Secret(SECRET), ident, b"alice", b"\x02\x01\x00\x0a\x01alice", None, STATION)


async def sent_once(transport: FakeTransport, n: int = 1) -> bytes:
    while len(transport.sent) < n:
        await asyncio.sleep(0)
    return transport.sent[n - 1]


def test_an_authentic_answer_ends_the_wait_and_a_forged_one_does_not() -> None:
    async def main() -> tuple[Answer, RadiusStats, list[bytes]]:
        srv, transport, stats = link(tries=0, timeout=5.0)
        task = asyncio.ensure_future(srv.exchange(build))
        raw = await sent_once(transport)
        srv.datagram_received(reply(ACCESS_CHALLENGE, raw, [], secret=b"forger"), ("127.0.0.1", 1812))
        await asyncio.sleep(0)
        assert not task.done()   # still waiting for the real one
        srv.datagram_received(reply(ACCESS_CHALLENGE, raw, [(24, b"s")]), ("127.0.0.1", 1812))
        return await task, stats, transport.sent

    answer, stats, sent = asyncio.run(main())
    assert answer.code == ACCESS_CHALLENGE and answer.state == b"s"
    assert (stats.requests, stats.bad, stats.retransmissions) == (1, 1, 0) and len(sent) == 1


def test_no_answer_after_the_retransmissions_which_repeat_the_request() -> None:
    async def main() -> tuple[FakeLink, FakeTransport, RadiusStats]:
        srv, transport, stats = link(tries=2)
        with pytest.raises(NoAnswer, match=r"no answer from RADIUS server r1 \(127\.0\.0\.1:1812\) after 3 tries"):
            await srv.exchange(build)
        return srv, transport, stats

    srv, transport, stats = asyncio.run(main())
    assert len(transport.sent) == 3 and len(set(transport.sent)) == 1   # same identifier and authenticator
    assert (stats.requests, stats.retransmissions, stats.timeouts) == (1, 2, 1)
    assert srv.outstanding == 0


def test_a_late_answer_is_counted_as_late_and_junk_as_unmatched() -> None:
    async def main() -> tuple[FakeLink, RadiusStats]:
        srv, transport, stats = link(tries=0, timeout=5.0)
        task = asyncio.ensure_future(srv.exchange(build))
        raw = await sent_once(transport)
        task.cancel()   # the IKE SA went away: the service cancels the round
        with pytest.raises(asyncio.CancelledError):
            await task
        assert srv.outstanding == 0
        srv.datagram_received(reply(ACCESS_ACCEPT, raw, []), ("127.0.0.1", 1812))
        srv.datagram_received(reply(ACCESS_ACCEPT, raw, [], secret=b"forger"), ("127.0.0.1", 1812))
        srv.datagram_received(b"\x02", ("127.0.0.1", 1812))
        return srv, stats

    _, stats = asyncio.run(main())
    assert (stats.late, stats.unmatched, stats.bad) == (1, 2, 0)


def test_identifiers_are_bounded_per_socket_and_a_request_beyond_waits_its_round_then_is_busy() -> None:
    async def main() -> tuple[FakeLink, RadiusStats]:
        srv, transport, stats = link(tries=0, timeout=5.0)
        tasks = [asyncio.ensure_future(srv.exchange(build)) for _ in range(IDS)]
        await sent_once(transport, IDS)
        assert srv.outstanding == IDS and len({raw[1] for raw in transport.sent}) == IDS
        srv.settings = RadiusSettings((SERVER,), retransmit_timeout=0.05, retransmit_tries=0)
        with pytest.raises(Busy, match=r"all 256 identifiers of RADIUS server r1 \(127\.0\.0\.1:1812\) stayed"):
            await srv.exchange(build)   # waited its round (0.05 s): no identifier was freed
        assert srv.waiting == 0 and len(transport.sent) == IDS
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return srv, stats

    srv, stats = asyncio.run(main())
    assert (stats.waits, stats.busy) == (1, 1) and srv.outstanding == 0 and len(srv.sockets) == 1


def test_counters_reach_prometheus_without_the_gauges() -> None:
    from tunsec.metrics import state_families

    stats = RadiusStats(requests=3, late=1, rcvbuf_drops=2)
    doc = {"radius": {**stats.as_dict(), "conversations": 2, "outstanding": 1, "waiting": 1, "parked": 1}}
    (family,) = [f for f in state_families(doc, False) if f.name == "tunsec_radius_packets"]
    values = {s.labels["kind"]: s.value for s in family.samples}
    assert values["requests"] == 3 and values["late"] == 1 and values["unmatched"] == 0
    assert values["rcvbuf_drops"] == 2
    assert not {"conversations", "outstanding", "waiting", "parked"} & set(values)


def test_only_an_authentic_answer_changes_a_servers_health() -> None:
    """The health new conversations go by (health.in_order) is the server's, not an attacker's:
    a forged answer does not bring a down server back; a round cancelled because its IKE SA went
    away (anyone can start and drop EAP conversations) does not take an up one down; a late
    authentic answer to a request already given up does not bring it back either."""
    async def main() -> list[str]:
        seen = []
        srv, transport, _ = link(tries=0, timeout=0.05)
        with pytest.raises(NoAnswer):
            await srv.exchange(build)
        given_up = transport.sent[-1]
        seen.append(srv.health.state)
        srv.datagram_received(reply(ACCESS_ACCEPT, given_up, []), ("127.0.0.1", 1812))   # late, authentic
        seen.append(srv.health.state)
        srv.settings = RadiusSettings((SERVER,), retransmit_timeout=5.0, retransmit_tries=0)
        task = asyncio.ensure_future(srv.exchange(build))
        raw = await sent_once(transport, len(transport.sent) + 1)
        srv.datagram_received(reply(ACCESS_ACCEPT, raw, [], secret=b"forger"), ("127.0.0.1", 1812))
        seen.append(srv.health.state)
        srv.datagram_received(reply(ACCESS_ACCEPT, raw, []), ("127.0.0.1", 1812))
        await task
        seen.append(srv.health.state)
        task = asyncio.ensure_future(srv.exchange(build))
        await sent_once(transport, len(transport.sent) + 1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        seen.append(srv.health.state)
        return seen

    assert asyncio.run(main()) == ["down", "down", "down", "up", "up"]


class Sockets(ServerLink[Answer]):
    """A link that keeps every transport it was given, to tell whether each was closed."""

    def __init__(self, port: int) -> None:
        server = RadiusServer("r1", ipaddress.ip_address("127.0.0.1"), Secret(SECRET), auth_port=port)
        super().__init__(server, RadiusSettings((server,), retransmit_timeout=0.05, retransmit_base=1.0,
                                                retransmit_tries=0), RadiusStats())
        self.given: list[asyncio.BaseTransport] = []

    async def _connect(self, sock: Any) -> asyncio.BaseTransport:
        transport = await super()._connect(sock)
        self.given.append(transport)
        return transport


def silent_port() -> tuple[socket.socket, int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock, sock.getsockname()[1]


@pytest.mark.parametrize("turns", range(6))
def test_a_link_closed_while_its_socket_is_being_opened_closes_that_socket(turns: int) -> None:
    """close() (a reload replacing the relay) comes ``turns`` loop turns after an exchange began to
    open the socket: whichever turn that is (before, during or after the one in which the socket
    is handed over), no socket stays open and the exchange ends."""
    async def main() -> Sockets:
        sock, port = silent_port()
        srv = Sockets(port)
        task = asyncio.ensure_future(srv.exchange(build))
        for _ in range(turns):
            await asyncio.sleep(0)
        srv.close()
        with pytest.raises(NoAnswer):
            async with asyncio.timeout(5):
                await task
        sock.close()
        return srv

    srv = asyncio.run(main())
    assert all(s.transport is None for s in srv.sockets) and all(t.is_closing() for t in srv.given), srv.given


def test_exchanges_that_open_a_link_at_once_share_one_socket() -> None:
    async def main() -> Sockets:
        sock, port = silent_port()
        srv = Sockets(port)
        tasks = [asyncio.ensure_future(srv.exchange(build)) for _ in range(3)]
        await asyncio.wait(tasks)
        sock.close()
        srv.close()
        return srv

    srv = asyncio.run(main())
    assert len(srv.given) == 1 and srv.given[0].is_closing()
