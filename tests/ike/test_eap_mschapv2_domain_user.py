"""Review reveapimpl F1: the user name in EAP-MSCHAPv2's ChallengeHash keeps its domain.

RFC 2759 §8.2 (ChallengeHash): "Only the user name (as presented by the peer and excluding any
prepended domain name) is used as input to SHAUpdate()". Windows clients and NPS, and
strongSwan's eap-mschapv2 (extract_username(): the part after the first backslash, on the server
and on the peer alike) hash "bob" for the user "CORP\\bob"; tunsec hashes "CORP\\bob" whole on
both sides. So a gateway account named with a domain cannot log in from such a client (its
right password is "wrong EAP-MSCHAPv2 password", counted as a failed guess), and a tunsec client
with ``eap_id = CORP\\bob`` is refused by such a gateway.

Both tests fail on main (b0ed2386)."""
from __future__ import annotations

import itertools
from collections.abc import Callable

from tunsec.ike.eap import mschapv2 as ms
from tunsec.ike.eap.packet import EapCode, EapPacket, EapType

DOMAIN_USER = b"CORP\\bob"
USER = b"bob"   # what RFC 2759 §8.2 hashes: the name without its prepended domain
PASSWORD = "bobs-Pass-1"


def _rand() -> Callable[[int], bytes]:
    counter = itertools.count(1)
    return lambda n: bytes([next(counter) & 0xFF]) * n


def _rfc_response(challenge_request: bytes, peer_challenge: bytes) -> tuple[bytes, bytes]:
    """An RFC 2759 peer's (Windows', strongSwan's) Response to ``challenge_request``: the Name field
    is the whole user name, the NT-Response hashes the name without the domain. Also returns the
    S= it expects of the server."""
    req = EapPacket.decode(challenge_request)
    assert req.type == EapType.MSCHAPV2 and req.data[0] == ms.OpCode.CHALLENGE
    ms_id, auth_ch = req.data[1], req.data[5:21]
    nt = ms.generate_nt_response(auth_ch, peer_challenge, USER, PASSWORD)
    expect_s = ms.authenticator_response(PASSWORD, nt, peer_challenge, auth_ch, USER)
    value = bytes([49]) + peer_challenge + b"\x00" * 8 + nt + b"\x00"
    body = value + DOMAIN_USER
    data = bytes([ms.OpCode.RESPONSE, ms_id]) + (4 + len(body)).to_bytes(2, "big") + body
    return EapPacket(EapCode.RESPONSE, req.ident, EapType.MSCHAPV2, data).encode(), expect_s


def test_gateway_accepts_an_rfc2759_peer_whose_user_name_has_a_domain() -> None:
    server = ms.EapAuthenticator(lambda user: PASSWORD if user == DOMAIN_USER else None, DOMAIN_USER,
                                 rand=_rand())
    response, expect_s = _rfc_response(server.start(), b"\x42" * 16)
    out, result = server.process(response)
    assert result is None, f"the right password refused: {result.reason if result else ''}"
    success = EapPacket.decode(out)
    assert success.code == EapCode.REQUEST and success.data[0] == ms.OpCode.SUCCESS
    assert success.data[4:46] == expect_s, "the S= the RFC 2759 peer checks"


def test_client_hashes_the_user_name_without_its_domain() -> None:
    peer = ms.EapPeer(DOMAIN_USER, PASSWORD, rand=lambda n: b"\x42" * n)
    auth_ch = bytes(range(16))
    body = bytes([16]) + auth_ch + b"gw"
    data = bytes([ms.OpCode.CHALLENGE, 7]) + (4 + len(body)).to_bytes(2, "big") + body
    answer = peer.process(EapPacket(EapCode.REQUEST, 9, EapType.MSCHAPV2, data).encode())
    assert answer is not None
    resp = EapPacket.decode(answer)
    value = resp.data[4:]
    assert value[50:] == DOMAIN_USER, "the Name field carries the whole user name"
    assert value[25:49] == ms.generate_nt_response(auth_ch, b"\x42" * 16, USER, PASSWORD), \
        "the NT-Response of RFC 2759 §8.2 (user name without the domain), as strongSwan's and NPS's check it"
