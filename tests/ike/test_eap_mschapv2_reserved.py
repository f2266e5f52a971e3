"""EAP-MSCHAPv2's Response: its Reserved (8 octets) and Flags (1 octet) fields, which RFC 2759 §4
says MUST be zero (review reveapimpl remark).

strongSwan's eap-mschapv2 (process_server_response) reads the Peer-Challenge, the NT-Response and
the Name and never looks at Reserved or Flags; hostapd's server likewise only reads Flags for its
debug log. tunsec's gateway does the same: a Response whose Reserved or Flags is not zero is
judged by its NT-Response alone (a right password logs in, a wrong one fails as any wrong one),
and says so in a DEBUG line (the user's name escaped; a peer can send one per attempt, so not at
INFO, past the AUTHENTICATION_FAILED lines' limit). tunsec's own client sends both as zero.

The tests of the DEBUG line failed before h/fixsmall (nothing was said); the others are guards."""
from __future__ import annotations

import itertools
import logging
from collections.abc import Callable

import pytest

from tests.ike.test_engine_eap_client import NOW, A, B, client, gateway
from tunsec.ike.eap import mschapv2 as ms
from tunsec.ike.eap.packet import EapCode, EapPacket, EapType
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaUp, IkeSaUp
from tunsec.ike.testing import Network

USER = b"alice"
PASSWORD = "alices-Pass-1"
PEER_CHALLENGE = b"\x42" * 16
LOGGER = "tunsec.ike.eap.mschapv2"


def _rand() -> Callable[[int], bytes]:
    counter = itertools.count(1)
    return lambda n: bytes([next(counter) & 0xFF]) * n


def _response(challenge_request: bytes, password: str, reserved: bytes, flags: int,
              name: bytes = USER) -> tuple[bytes, bytes]:
    """A peer's Response to ``challenge_request`` with the Reserved and Flags given, and the S= it
    expects of the server."""
    req = EapPacket.decode(challenge_request)
    assert req.type == EapType.MSCHAPV2 and req.data[0] == ms.OpCode.CHALLENGE
    ms_id, auth_ch = req.data[1], req.data[5:21]
    nt = ms.generate_nt_response(auth_ch, PEER_CHALLENGE, name, password)
    expect_s = ms.authenticator_response(password, nt, PEER_CHALLENGE, auth_ch, name)
    body = bytes([49]) + PEER_CHALLENGE + reserved + nt + bytes([flags]) + name
    data = bytes([ms.OpCode.RESPONSE, ms_id]) + (4 + len(body)).to_bytes(2, "big") + body
    return EapPacket(EapCode.RESPONSE, req.ident, EapType.MSCHAPV2, data).encode(), expect_s


def _server(user: bytes = USER) -> ms.EapAuthenticator:
    return ms.EapAuthenticator(lambda u: PASSWORD if u == user else None, user, rand=_rand())


def _noted(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and "Reserved" in r.getMessage()]


@pytest.mark.parametrize(("reserved", "flags"), [(b"\x00" * 7 + b"\x01", 0), (b"\x00" * 8, 1),
                                                 (b"\xff" * 8, 0xff)])
def test_gateway_ignores_nonzero_reserved_or_flags_as_strongswan_and_says_so(
        caplog: pytest.LogCaptureFixture, reserved: bytes, flags: int) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    server = _server()
    response, expect_s = _response(server.start(), PASSWORD, reserved, flags)
    out, result = server.process(response)
    assert result is None, f"a right password refused: {result.reason if result else ''}"
    success = EapPacket.decode(out)
    assert success.code == EapCode.REQUEST and success.data[0] == ms.OpCode.SUCCESS
    assert success.data[4:46] == expect_s
    out, result = server.process(EapPacket(EapCode.RESPONSE, success.ident, EapType.MSCHAPV2,
                                           bytes([ms.OpCode.SUCCESS])).encode())
    assert result is not None and result.ok and len(result.msk) == ms.MSK_LEN
    [line] = _noted(caplog)
    assert f"Reserved {reserved.hex()}" in line and f"Flags {flags:#04x}" in line and "'alice'" in line
    assert [r.levelno for r in caplog.records if r.name == LOGGER] == [logging.DEBUG]


def test_gateway_judges_a_nonzero_reserved_response_by_its_nt_response(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    server = _server()
    response, _ = _response(server.start(), "not-the-password", b"\x01" * 8, 1)
    out, result = server.process(response)
    assert result is not None and not result.ok and result.reason == "wrong EAP-MSCHAPv2 password"
    assert EapPacket.decode(out).code == EapCode.FAILURE
    assert len(_noted(caplog)) == 1


def test_the_line_escapes_the_peers_user_name(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    name = b"eve\nINFO fake line\x1b[2J"
    server = _server(name)
    response, _ = _response(server.start(), PASSWORD, b"\x00" * 8, 2, name=name)
    server.process(response)
    [line] = _noted(caplog)
    assert "\n" not in line and "\x1b" not in line and "\\n" in line


def test_gateway_says_nothing_of_zero_fields(caplog: pytest.LogCaptureFixture) -> None:
    """Guard: the fields as every client sends them."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    server = _server()
    response, _ = _response(server.start(), PASSWORD, b"\x00" * 8, 0)
    _, result = server.process(response)
    assert result is None and _noted(caplog) == []


def test_client_sends_zero_reserved_and_flags() -> None:
    """Guard: tunsec's client, as RFC 2759 §4 says and strongSwan's peer does (memset)."""
    peer = ms.EapPeer(USER, PASSWORD, rand=lambda n: PEER_CHALLENGE[:n])
    body = bytes([16]) + bytes(range(16)) + b"gw"
    data = bytes([ms.OpCode.CHALLENGE, 7]) + (4 + len(body)).to_bytes(2, "big") + body
    answer = peer.process(EapPacket(EapCode.REQUEST, 9, EapType.MSCHAPV2, data).encode())
    assert answer is not None
    value = EapPacket.decode(answer).data[4:]
    assert value[0] == 49 and value[1:17] == PEER_CHALLENGE
    assert value[17:25] == b"\x00" * 8, "Reserved"
    assert value[49] == 0, "Flags"
    assert value[50:] == USER


def test_engines_a_client_setting_the_fields_gets_its_ike_sa_and_the_gateway_says_so(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both ends as engines over the in-memory network: a client whose Response sets Reserved and
    Flags (as an old or odd client might) is judged by its password alone and gets its IKE SA and
    Child SA; the gateway's DEBUG line names it."""
    real = ms.EapPeer._on_challenge

    def odd(self: ms.EapPeer, ident: int, ms_id: int, body: bytes) -> bytes:
        pkt = EapPacket.decode(real(self, ident, ms_id, body))
        data = bytearray(pkt.data)
        data[4 + 17:4 + 25] = b"\x5a" * 8   # Reserved (after the 4-octet MSCHAPv2 header)
        data[4 + 49] = 0x80                 # Flags
        return EapPacket(pkt.code, pkt.ident, pkt.type, bytes(data)).encode()

    monkeypatch.setattr(ms.EapPeer, "_on_challenge", odd)
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    net = Network()
    a = net.add(A, IkeEndpoint([client()], wall_clock=lambda: NOW))
    net.add(B, IkeEndpoint([gateway()], wall_clock=lambda: NOW))
    a.initiate("rw", "net", net.now)
    net.run(until=30.0)
    for side in (A, B):
        events = net.take(side)
        assert any(isinstance(e, IkeSaUp) for e in events) and any(isinstance(e, ChildSaUp) for e in events)
    [line] = _noted(caplog)
    assert "Reserved 5a5a5a5a5a5a5a5a" in line and "Flags 0x80" in line and "'bob'" in line
