"""EAP-MSCHAPv2: RFC 2759 §9.2 vectors, RFC 3079 MSK, and both state machines."""
from __future__ import annotations

import itertools

import pytest

from tunsec.ike.eap import mschapv2 as ms
from tunsec.ike.eap.md4 import md4
from tunsec.ike.eap.packet import EapCode, EapError, EapPacket

USER = b"User"
PASSWORD = "clientPass"
AUTH_CH = bytes.fromhex("5B5D7C7D7B3F2F3E3C2C602132262628")
PEER_CH = bytes.fromhex("21402324255E262A28295F2B3A337C7E")
NT_RESPONSE = bytes.fromhex("82309ECD8D708B5EA08FAA3981CD83544233114A3D85D6DF")


def test_md4_rfc1320_vectors() -> None:
    assert md4(b"").hex() == "31d6cfe0d16ae931b73c59d7e0c089c0"
    assert md4(b"message digest").hex() == "d9130a8164549fe818874806e1c7014b"
    assert md4(b"1234567890" * 8).hex() == "e33b4ddc9c38f2199c3e7b164fcc0536"


def test_rfc2759_section_9_2_vectors() -> None:
    assert ms.challenge_hash(PEER_CH, AUTH_CH, USER).hex() == "d02e4386bce91226"
    ph = ms.nt_password_hash(PASSWORD)
    assert ph.hex() == "44ebba8d5312b8d611474411f56989ae"
    assert ms.hash_nt_password_hash(ph).hex() == "41c00c584bd2d91c4017a2a12fa59f3f"
    assert ms.generate_nt_response(AUTH_CH, PEER_CH, USER, PASSWORD) == NT_RESPONSE
    assert (ms.authenticator_response(PASSWORD, NT_RESPONSE, PEER_CH, AUTH_CH, USER)
            == b"S=407A5589115FD0D6209F510FE9C04566932CDA56")


def test_msk_rfc3079_vectors() -> None:
    # RFC 3079 §3.5.3 uses the same password and NT-Response; its
    # SendStartKey128 (server side, Magic3) is 8B7CDC14...; the MSK is the
    # server's receive key (Magic2) then its send key, then 32 zero bytes.
    key = ms.msk(PASSWORD, NT_RESPONSE)
    assert key.hex() == ("d5f0e9521e3ea9589645e86051c82226"
                         "8b7cdc149b993a1ba118cb153f56dccb" + "00" * 32)


def _rand() -> object:
    counter = itertools.count(1)
    return lambda n: bytes([next(counter) & 0xFF]) * n


def _run(server: ms.EapAuthenticator, peer: ms.EapPeer) -> ms.EapResult:
    req = server.start()
    for _ in range(6):
        resp = peer.process(req)
        assert resp is not None
        req, result = server.process(resp)
        if result is not None:
            assert peer.process(req) is None
            return result
    raise AssertionError("EAP did not finish")


def _lookup(user: bytes) -> str | None:
    return {b"alice": "s3cret"}.get(user)


def test_success_with_identity_gives_both_sides_the_same_msk() -> None:
    server = ms.EapAuthenticator(_lookup, None, rand=_rand())  # type: ignore[arg-type]
    peer = ms.EapPeer(b"alice", "s3cret")
    result = _run(server, peer)
    assert result.ok and result.identity == b"alice"
    assert peer.result is not None and peer.result.ok
    assert result.msk == peer.result.msk and len(result.msk) == 64


def test_wrong_password_and_unknown_user_fail_without_secrets_in_reason() -> None:
    for ident, pw, why in ((b"alice", "Xyzzy-42", "wrong"), (b"mallory", "s3cret", "unknown")):
        server = ms.EapAuthenticator(_lookup, ident)
        peer = ms.EapPeer(ident, pw)
        result = _run(server, peer)
        assert not result.ok and why in result.reason
        assert "s3cret" not in result.reason and pw not in result.reason
        assert peer.result is not None and not peer.result.ok


def test_peer_refuses_a_server_that_does_not_know_the_password() -> None:
    server = ms.EapAuthenticator(lambda u: "other", b"alice")
    peer = ms.EapPeer(b"alice", "other")
    req = server.start()
    resp = peer.process(req)
    assert resp is not None
    success_req, _ = server.process(resp)
    impostor = ms.EapPeer(b"alice", "other")
    impostor.process(req)  # a different peer challenge: the S= proof cannot match
    with pytest.raises(EapError, match="proof"):
        impostor.process(success_req)


def test_server_rejects_garbage_and_replayed_identifiers() -> None:
    for junk in (b"", b"\x02", b"\x02\x00\x00\x03", b"\x07\x00\x00\x05\x1a",
                 b"\x02\x00\x00\x09\x1a\x02\x00\x00\x05"):
        server = ms.EapAuthenticator(_lookup, b"alice")
        server.start()
        out, result = server.process(junk)
        assert result is not None and not result.ok
        assert EapPacket.decode(out).code == EapCode.FAILURE


@pytest.mark.parametrize(("message", "words"), [
    (b"E=691 R=1 C=00112233445566778899AABBCCDDEEFF V=3 M=bad", "E=691 (authentication failure: wrong user name or "
     "password), retry allowed (R=1) but not attempted: the same password would fail again; the gateway says 'bad'"),
    (b"E=648 R=0 V=3", "E=648 (password expired: it must be changed at the server before this account can connect)"),
    (b"E=12345 R=0", "E=12345 (unknown error)"),
    # the gateway's text is its own: cut short, quoted, control characters escaped
    (b"junk M=\x1b[2J" + b"x" * 200, "without an error code; the gateway says '\\x1b[2J" + "x" * 76 + "'"),
])
def test_failure_packets_are_described_for_the_log(message: bytes, words: str) -> None:
    assert ms.describe_failure(message) == words


def test_peer_answers_one_challenge_and_nothing_but_eap_failure_after_a_failure() -> None:
    server = ms.EapAuthenticator(_lookup, b"alice")
    peer = ms.EapPeer(b"alice", "s3cret")
    challenge = server.start()
    assert peer.process(challenge) is not None
    with pytest.raises(EapError, match="second MSCHAPv2 Challenge"):
        peer.process(challenge)  # the same password is not tried twice
    failure = EapPacket(EapCode.REQUEST, 9, 26, bytes((4, 9, 0, 17)) + b"E=691 R=1 V=3").encode()
    ack = peer.process(failure)
    assert ack is not None and EapPacket.decode(ack).data == bytes((4,))
    with pytest.raises(EapError, match="after refusing us"):
        peer.process(EapPacket(EapCode.SUCCESS, 10).encode())
    assert peer.process(EapPacket(EapCode.FAILURE, 10).encode()) is None
    assert peer.result is not None and not peer.result.ok and peer.result.reason.startswith("E=691")
