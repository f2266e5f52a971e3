"""EAP conversations past a dead RADIUS server, against two servers on loopback (real UDP, ports
the kernel picks: safe in parallel) and a fake clock for the health's hold: once the first
server left a conversation unanswered, new conversations go straight to the second one; after
DEAD_HOLD one conversation tries the first again while the others still pass it by; its answer
makes it the first server again. The same model (tunsec.radius.health) as accounting's."""
from __future__ import annotations

import asyncio
import ipaddress
import logging
from typing import Any

import pytest
from test_radius_messages import SECRET, STATION, attributes, reply

from tunsec.ike.eap.relay import RelayOutcome, RelayReply
from tunsec.ike.events import EapRelayRequest
from tunsec.ike.secret import Secret
from tunsec.radius.health import DEAD_HOLD
from tunsec.radius.messages import ACCESS_CHALLENGE
from tunsec.radius.relay import RadiusRelay
from tunsec.radius.settings import RadiusServer, RadiusSettings

USER_NAME = 1
TRIES = 2   # the request and one retransmission (settings below)


class Server(asyncio.DatagramProtocol):
    """Keeps the User-Name of every Access-Request; answers each with a challenge, or nothing."""

    def __init__(self, silent: bool) -> None:
        self.silent = silent
        self.users: list[str] = []
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.users.append(dict(attributes(data))[USER_NAME].decode())
        if not self.silent:
            self.transport.sendto(reply(ACCESS_CHALLENGE, data, [(79, b"\x01\x10\x00\x06\x1a\x01"),
                                                                 (24, b"state")]), addr)


async def serve(silent: bool) -> tuple[Server, int]:
    server = Server(silent)
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: server,
                                                                             local_addr=("127.0.0.1", 0))
    return server, transport.get_extra_info("sockname")[1]


def first_round(relay: RadiusRelay, user: str) -> asyncio.Task[RelayReply]:
    ev = EapRelayRequest("gw", user.encode(), b"\x02\x0f\x00\x06\x01" + user[:1].encode(), ("198.51.100.7", 4500),
                         True)
    return asyncio.ensure_future(relay.round(f"sa-{user}", ev, STATION))


def passed_by(relay: RadiusRelay) -> list[bool]:
    return [s["auth"]["passed_by"] for s in relay.status()["servers"].values()]


def test_new_conversations_pass_a_dead_first_server_by_and_one_tries_it_again_after_the_hold() -> None:
    async def main() -> tuple[Server, Server, RadiusRelay, list[int], list[RelayReply]]:
        dead, dead_port = await serve(silent=True)
        good, good_port = await serve(silent=False)
        now = [0.0]
        # exact counts of sends to the silent server; a retransmit timeout long enough that the
        # loopback answer of the live one is never late on a loaded machine
        servers = tuple(RadiusServer(f"r{i}", ipaddress.ip_address("127.0.0.1"), Secret(SECRET), port)
                        for i, port in enumerate((dead_port, good_port)))
        relay = RadiusRelay(RadiusSettings(servers, retransmit_timeout=0.3, retransmit_base=1.0,
                                           retransmit_tries=TRIES - 1), clock=lambda: now[0])
        seen = []
        replies = [await first_round(relay, "alice")]   # nobody knows yet: waits out the dead one
        seen.append(len(dead.users))
        assert passed_by(relay) == [True, False]
        replies += [await first_round(relay, user) for user in ("bob", "carol", "dave")]
        seen.append(len(dead.users))   # they went straight to the second server
        now[0] = DEAD_HOLD + 1
        probe, passer = first_round(relay, "probe"), first_round(relay, "passer")
        replies += [await probe, await passer]
        seen.append(len(dead.users))
        assert passed_by(relay) == [True, False]   # the probe found it silent: held again
        dead.silent = False
        now[0] = 2 * DEAD_HOLD + 2
        replies.append(await first_round(relay, "answered"))
        assert passed_by(relay) == [False, False]
        replies.append(await first_round(relay, "back"))
        relay.close()
        dead.transport.close()
        good.transport.close()
        return dead, good, relay, seen, replies

    dead, good, relay, seen, replies = asyncio.run(main())
    assert [r.outcome for r in replies] == [RelayOutcome.CHALLENGE] * 8
    assert seen == [TRIES, TRIES, 2 * TRIES], seen
    assert dead.users[:seen[-1]] == ["alice"] * TRIES + ["probe"] * TRIES
    # (a retransmission on a loaded machine may bring one twice)
    assert set(dead.users[seen[-1]:]) == {"answered", "back"}
    assert set(good.users) == {"alice", "bob", "carol", "dave", "probe", "passer"}
    assert relay.stats.timeouts == 2 and relay.stats.challenges == 8


def test_with_every_server_dead_the_failed_logins_do_not_flood_the_log(caplog: pytest.LogCaptureFixture) -> None:
    """Anyone can start an EAP conversation: 40 of them against a dead server each fail, and are
    counted, but the per-login warnings are rate limited."""
    logins = 40

    async def main() -> list[RelayReply]:
        dead, port = await serve(silent=True)
        server = RadiusServer("r0", ipaddress.ip_address("127.0.0.1"), Secret(SECRET), port)
        relay = RadiusRelay(RadiusSettings((server,), retransmit_timeout=0.05, retransmit_tries=0))
        replies = await asyncio.gather(*(first_round(relay, f"user{k}") for k in range(logins)))
        relay.close()
        dead.transport.close()
        assert relay.stats.timeouts == logins
        return replies

    with caplog.at_level(logging.WARNING, logger="tunsec.radius"):
        replies = asyncio.run(main())
    assert [r.outcome for r in replies] == [RelayOutcome.FAILED] * logins
    per_login = [r for r in caplog.records if r.getMessage().startswith("RADIUS: user")]
    assert 1 <= len(per_login) <= 10, len(per_login)


def test_new_conversations_go_to_the_preferred_server_and_equal_ones_share_the_load() -> None:
    """strongSwan's preference: a server written second with the higher preference takes every
    new conversation; of two equal ones (one socket each), a conversation that begins while the
    first has a request under way goes to the other."""
    async def main() -> tuple[list[str], list[str], list[str], list[str]]:
        (a, a_port), (b, b_port) = await serve(silent=False), await serve(silent=False)

        def relay(preference: int) -> RadiusRelay:
            servers = (RadiusServer("a", ipaddress.ip_address("127.0.0.1"), Secret(SECRET), a_port),
                       RadiusServer("b", ipaddress.ip_address("127.0.0.1"), Secret(SECRET), b_port,
                                    preference=preference))
            return RadiusRelay(RadiusSettings(servers, retransmit_timeout=5.0, retransmit_tries=0))
        preferring = relay(10)
        for user in ("alice", "bob"):   # one after the other: b is idle each time
            assert (await first_round(preferring, user)).outcome is RelayOutcome.CHALLENGE
        preferring.close()
        sequential = (list(a.users), list(b.users))
        a.users.clear()
        b.users.clear()
        sharing = relay(0)
        replies = await asyncio.gather(*(first_round(sharing, u) for u in ("carol", "dave")))
        assert [r.outcome for r in replies] == [RelayOutcome.CHALLENGE] * 2
        sharing.close()
        a.transport.close()
        b.transport.close()
        return *sequential, a.users, b.users

    a_before, b_before, a_shared, b_shared = asyncio.run(main())
    assert (a_before, b_before) == ([], ["alice", "bob"])
    assert (a_shared, b_shared) == (["carol"], ["dave"])
