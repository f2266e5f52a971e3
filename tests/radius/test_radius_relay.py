"""One EAP conversation per IKE SA over RADIUS, against a scripted RADIUS server on loopback
(ephemeral ports: safe in parallel): the State is echoed, the conversation stays with the server
that answered, a silent server is skipped for a new conversation, and nothing stays behind."""
from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from test_radius_messages import SECRET, STATION, attributes, reply

from tunsec.ike.eap.relay import RelayOutcome, RelayReply
from tunsec.ike.events import Accepted, EapRelayRequest
from tunsec.ike.secret import Secret
from tunsec.radius.messages import ACCESS_ACCEPT, ACCESS_CHALLENGE, ACCESS_REJECT
from tunsec.radius.relay import RadiusRelay
from tunsec.radius.settings import RadiusServer, RadiusSettings


class ScriptedServer(asyncio.DatagramProtocol):
    """Answers the n-th request with ``script[n]`` (code, attributes) and keeps what it got."""

    def __init__(self, script: list[tuple[int, list[tuple[int, bytes]]]]) -> None:
        self.script = script
        self.got: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.got.append(data)
        code, attrs = self.script[len(self.got) - 1]
        assert self.transport is not None
        self.transport.sendto(reply(code, data, attrs), addr)


@pytest.fixture
def quiet_port() -> Iterator[int]:
    """A loopback UDP port nobody answers on (bound, so no other test takes it meanwhile)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def server(name: str, port: int) -> RadiusServer:
    return RadiusServer(name, ipaddress.ip_address("127.0.0.1"), Secret(SECRET), port)


def ask(eap: bytes, first: bool) -> EapRelayRequest:
    return EapRelayRequest("gw", b"alice", eap, ("198.51.100.7", 4500), first)


async def scripted(script: list[tuple[int, list[tuple[int, bytes]]]]) -> tuple[ScriptedServer, int]:
    loop = asyncio.get_running_loop()
    proto = ScriptedServer(script)
    transport, _ = await loop.create_datagram_endpoint(lambda: proto, local_addr=("127.0.0.1", 0))
    return proto, transport.get_extra_info("sockname")[1]


def test_a_conversation_echoes_state_stays_with_its_server_and_ends_with_the_accept(quiet_port: int) -> None:
    async def main() -> tuple[list[RelayReply], ScriptedServer, RadiusRelay]:
        fr, port = await scripted([
            (ACCESS_CHALLENGE, [(79, b"\x01\x10\x00\x06\x1a\x01"), (24, b"state-1")]),
            (ACCESS_ACCEPT, [(79, b"\x03\x11\x00\x04")]),
        ])
        relay = RadiusRelay(RadiusSettings((server("quiet", quiet_port), server("fr", port)),
                                           retransmit_timeout=0.05, retransmit_base=1.0, retransmit_tries=1))
        replies = [await relay.round("sa-1", ask(b"\x02\x0f\x00\x0a\x01alice", True), STATION),
                   await relay.round("sa-1", ask(b"\x02\x10\x00\x06\x1a\x02", False), STATION)]
        relay.close()
        return replies, fr, relay

    (challenge, accept), fr, relay = asyncio.run(main())
    assert (challenge.outcome, challenge.eap) == (RelayOutcome.CHALLENGE, b"\x01\x10\x00\x06\x1a\x01")
    assert accept.outcome is RelayOutcome.ACCEPT and accept.eap == b"\x03\x11\x00\x04"
    assert accept.msk is None   # no MPPE keys in this script: the engine refuses such an accept
    first, second = (dict(attributes(raw)) for raw in fr.got)
    assert 24 not in first and second[24] == b"state-1"   # the State of the challenge, echoed
    # the silent server was tried for the new conversation only: 2 sends, then never again
    stats = relay.stats
    assert (stats.requests, stats.timeouts, stats.challenges, stats.accepts) == (3, 1, 1, 1)
    assert relay.conversations == 0


def test_a_reject_names_the_server_and_ends_the_conversation() -> None:
    async def main() -> tuple[RelayReply, RadiusRelay]:
        _, port = await scripted([(ACCESS_REJECT, [(79, b"\x04\x0f\x00\x04"), (18, b"bad password")])])
        relay = RadiusRelay(RadiusSettings((server("fr", port),)))
        out = await relay.round("sa-2", ask(b"\x02\x0f\x00\x0a\x01alice", True), STATION)
        relay.close()
        return out, relay

    out, relay = asyncio.run(main())
    assert out.outcome is RelayOutcome.REJECT and out.eap == b"\x04\x0f\x00\x04"
    assert out.reason == f"RADIUS server fr (127.0.0.1:{relay.settings.servers[0].auth_port}) rejected it " \
                         "(Access-Reject: 'bad password')"
    assert relay.conversations == 0 and relay.stats.rejects == 1


def test_no_server_answering_fails_and_nothing_stays(quiet_port: int) -> None:
    async def main() -> tuple[RelayReply, RadiusRelay]:
        relay = RadiusRelay(RadiusSettings((server("quiet", quiet_port),), retransmit_timeout=0.05,
                                           retransmit_tries=0))
        task = asyncio.ensure_future(relay.round("sa-3", ask(b"\x02\x01\x00\x0a\x01alice", True), STATION))
        await asyncio.sleep(0)
        assert relay.conversations == 1
        out = await task
        relay.close()
        return out, relay

    out, relay = asyncio.run(main())
    assert out.outcome is RelayOutcome.FAILED and "no answer from RADIUS server quiet" in out.reason
    assert relay.conversations == 0 and relay.client.outstanding() == 0


@pytest.mark.parametrize("accounting", [True, False])
def test_the_accepts_class_and_interim_interval_go_to_the_ike_sa_in_the_reply(accounting: bool) -> None:
    """Whether accounting is on now or not: a reload that turns it on echoes the Class (_acct_open)."""
    async def main() -> tuple[RelayReply, RelayReply]:
        _, port = await scripted([(ACCESS_ACCEPT, [(79, b"\x03\x11\x00\x04"), (25, b"vpn-gold"), (25, b"cc-7"),
                                                   (85, (600).to_bytes(4, "big"))]),
                                  (ACCESS_ACCEPT, [(79, b"\x03\x12\x00\x04")])])
        relay = RadiusRelay(RadiusSettings((server("fr", port),), retransmit_timeout=0.5, accounting=accounting))
        said = await relay.round("sa-1", ask(b"\x02\x0f\x00\x0a\x01alice", True), STATION)
        nothing = await relay.round("sa-2", ask(b"\x02\x10\x00\x0a\x01alice", True), STATION)
        relay.close()
        return said, nothing

    said, nothing = asyncio.run(main())
    assert said.accepted == Accepted((b"vpn-gold", b"cc-7"), 600)
    assert nothing.outcome is RelayOutcome.ACCEPT and nothing.accepted is None


def test_nothing_of_an_access_accept_stays_with_the_relay() -> None:
    """What an Accept said goes to its IKE SA in the reply (review revradius F2): the relay keeps no
    conversation and no table of them after it, whether the IKE SA comes up or not."""
    async def main() -> RadiusRelay:
        _, port = await scripted([(ACCESS_ACCEPT, [(79, b"\x03\x11\x00\x04"), (25, b"vpn-gold"),
                                                   (27, (3600).to_bytes(4, "big"))])])
        relay = RadiusRelay(RadiusSettings((server("fr", port),), retransmit_timeout=0.5, accounting=True))
        reply = await relay.round("sa-1", ask(b"\x02\x0f\x00\x0a\x01alice", True), STATION)
        assert reply.accepted == Accepted((b"vpn-gold",), None, 3600)
        relay.close()
        return relay

    relay = asyncio.run(main())
    assert relay.conversations == 0
    assert not [v for v in vars(relay).values() if isinstance(v, dict) and v]


def test_status_tells_each_servers_health_and_prometheus_gets_it(quiet_port: int) -> None:
    from tunsec.metrics import state_families

    async def main() -> tuple[dict[str, Any], dict[str, Any]]:
        _, port = await scripted([(ACCESS_CHALLENGE, [(79, b"\x01\x10\x00\x06\x1a\x01")])])
        relay = RadiusRelay(RadiusSettings((server("quiet", quiet_port), server("fr", port), server("spare", 9)),
                                           retransmit_timeout=0.05, retransmit_base=1.0, retransmit_tries=1))
        before = relay.status()
        await relay.round("sa-1", ask(b"\x02\x0f\x00\x0a\x01alice", True), STATION)
        after = relay.status()
        relay.close()
        return before, after

    before, after = asyncio.run(main())
    assert {name: s["auth"]["state"] for name, s in before["servers"].items()} == \
        {"quiet": "unknown", "fr": "unknown", "spare": "unknown"}
    quiet, fr, spare = (after["servers"][n]["auth"] for n in ("quiet", "fr", "spare"))
    assert (quiet["state"], quiet["unanswered_in_row"], quiet["last_answer_seconds_ago"]) == ("down", 1, None)
    assert quiet["address"] == f"127.0.0.1:{quiet_port}"
    assert (fr["state"], fr["unanswered_in_row"]) == ("up", 0) and fr["last_answer_seconds_ago"] >= 0
    assert spare["state"] == "unknown"   # a new conversation stopped at the server that answered
    (up,) = [f for f in state_families({"radius": after}, False) if f.name == "tunsec_radius_server_up"]
    assert {(s.labels["server"], s.labels["port"]): s.value for s in up.samples} == \
        {("quiet", "auth"): 0, ("fr", "auth"): 1}


def test_an_accept_gives_the_groups_the_settings_take_and_the_log_names_only_those(
        caplog: pytest.LogCaptureFixture) -> None:
    accept = [(79, b"\x03\x11\x00\x04"), (25, b"staff"), (25, b"\x8a\x01opaque"), (11, b"guests"),
              (64, b"\x00\x00\x00\x09")]

    async def main(class_group: bool, filter_id: bool) -> RelayReply:
        _, port = await scripted([(ACCESS_ACCEPT, accept)])
        relay = RadiusRelay(RadiusSettings((server("fr", port),), retransmit_timeout=0.5,
                                           class_group=class_group, filter_id=filter_id))
        out = await relay.round("sa-1", ask(b"\x02\x0f\x00\x0a\x01alice", True), STATION)
        relay.close()
        return out

    with caplog.at_level("INFO", logger="tunsec.radius"):
        both = asyncio.run(main(True, True))
    assert both.groups == ("staff", "guests")
    (line,) = [r.getMessage() for r in caplog.records if "accepted user" in r.getMessage()]
    assert "accepted user 'alice' (" in line and line.endswith(", member of 'staff', 'guests'"), line
    assert "opaque" not in caplog.text
    assert asyncio.run(main(False, False)).groups == ()   # the defaults: no groups from an Accept
    assert asyncio.run(main(False, True)).groups == ("guests",)
