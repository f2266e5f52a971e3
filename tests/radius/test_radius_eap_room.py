"""The relay bounds a client's EAP response by the room this conversation's next Access-Request leaves
(review revlate8 F3): messages.eap_room measures the request with its User-Name, State and station, the
RADIUS edge tells it with each Access-Challenge (RelayReply.room), and the engine's relay refuses a longer
response as the client's failure.  MAX_EAP, the worst case of the rest, refused what a conversation's
own request carries (a client's 3.5 KiB EAP-TLS fragment); limits.most_eap bounds what comes before any
room was said.  Checked against messages.access_request itself, and through the real RadiusRelay over
loopback UDP against a scripted server."""
from __future__ import annotations

import asyncio

import pytest
from test_radius_eap_bound import LONGEST, _eap
from test_radius_messages import SECRET, STATION
from test_radius_relay import ask, scripted, server

from tunsec.ike.eap.packet import EapCode, EapPacket
from tunsec.ike.eap.relay import EapRelay, RelayAsk, RelayOutcome, RelayReply
from tunsec.ike.secret import Secret
from tunsec.radius.limits import MAX_ATTR, MAX_EAP, MAX_PACKET, most_eap
from tunsec.radius.messages import ACCESS_CHALLENGE, ACCESS_REJECT, Station, TooLarge, access_request, eap_room
from tunsec.radius.relay import RadiusRelay
from tunsec.radius.settings import RadiusSettings

V4_STATION = Station("gw", "192.0.2.1", "192.0.2.1[4500]", "198.51.100.7[4500]", 1)


@pytest.mark.parametrize(("user", "state", "station"), [
    (b"alice", bytes(16), STATION), (b"alice", None, STATION), (b"bob@example.org", b"s" * 40, V4_STATION),
    (b"u" * MAX_ATTR, b"s" * MAX_ATTR, LONGEST)])
def test_the_room_is_what_this_request_carries(user: bytes, state: bytes | None, station: Station) -> None:
    room = eap_room(user, state, station)
    assert MAX_EAP <= room <= most_eap(user)
    assert len(access_request(Secret(SECRET), 1, user, _eap(room), state, station).RequestPacket()) <= MAX_PACKET
    with pytest.raises(TooLarge):
        access_request(Secret(SECRET), 1, user, _eap(room + 1), state, station)


def test_the_worst_case_room_is_max_eap() -> None:
    assert eap_room(b"u" * MAX_ATTR, b"s" * MAX_ATTR, LONGEST) == MAX_EAP


def _relay_told(room: int | None) -> EapRelay:
    relay = EapRelay(b"alice")
    assert isinstance(relay.start(), RelayAsk)
    challenge = EapPacket(EapCode.REQUEST, 7, 13, b"\x20").encode()   # EAP-TLS Start
    _, result = relay.reply(RelayReply(RelayOutcome.CHALLENGE, challenge, reason="backend", room=room))
    assert result is None
    return relay


def test_the_relay_refuses_beyond_the_room_its_back_end_said() -> None:
    assert isinstance(_relay_told(3000).process(_eap(3000)), RelayAsk)
    step = _relay_told(3000).process(_eap(3001))
    assert not isinstance(step, RelayAsk)
    out, result = step
    assert EapPacket.decode(out).code is EapCode.FAILURE and not result.ok
    assert result.reason == "EAP response of 3001 bytes, more than this conversation's Access-Request carries (3000)"


def test_the_radius_edge_tells_the_room_and_a_response_that_fills_it_reaches_the_server() -> None:
    state = b"freeradius-state"   # 16 bytes, as FreeRADIUS's
    challenge = EapPacket(EapCode.REQUEST, 7, 13, b"\x20").encode()

    async def main() -> tuple[list[RelayReply], list[bytes]]:
        fr, port = await scripted([(ACCESS_CHALLENGE, [(79, challenge), (24, state)]), (ACCESS_REJECT, [])])
        radius = RadiusRelay(RadiusSettings((server("fr", port),), retransmit_timeout=0.5, retransmit_base=1.0,
                                            retransmit_tries=2))
        relay = EapRelay(b"alice")
        first = relay.start()
        assert isinstance(first, RelayAsk)
        replies = [await radius.round("sa-1", ask(first.eap, True), STATION)]
        relay.reply(replies[0])
        room = replies[0].room
        assert room is not None
        step = relay.process(_eap(room))   # a client's EAP-TLS fragment that fills the request
        assert isinstance(step, RelayAsk), step
        replies.append(await radius.round("sa-1", ask(step.eap, False), STATION))
        radius.close()
        return replies, fr.got

    (challenge_reply, last), got = asyncio.run(main())
    assert challenge_reply.room == eap_room(b"alice", state, STATION) > MAX_EAP + 900
    assert last.outcome is RelayOutcome.REJECT, last.reason   # the server had it: no TooLarge of ours
    assert len(got) == 2 and len(got[1]) <= MAX_PACKET
