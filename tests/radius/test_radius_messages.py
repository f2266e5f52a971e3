"""RADIUS messages of the EAP relay, checked against RFC 2865/3579/2548 computed here by hand
(not with pyrad, which the code under test uses): attribute layout and splitting, the
Message-Authenticator, MPPE key decryption, and refusal of answers that do not authenticate."""
from __future__ import annotations

import hashlib
import hmac
import struct

import pytest

from tunsec.ike.secret import Secret
from tunsec.radius.messages import (
    ACCESS_ACCEPT,
    ACCESS_CHALLENGE,
    ACCESS_REJECT,
    BadReply,
    Station,
    TooLarge,
    access_request,
    read_reply,
    split_eap,
)

SECRET = b"radius-test-secret"
STATION = Station("tunsec-gw", "192.0.2.1", "192.0.2.1[4500]", "198.51.100.7[4500]", 42)


def attributes(raw: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 20
    while pos < len(raw):
        t, length = raw[pos], raw[pos + 1]
        out.append((t, raw[pos + 2:pos + length]))
        pos += length
    return out


def md5(data: bytes) -> bytes:
    return hashlib.md5(data).digest()


def mppe_encrypt(key: bytes, secret: bytes, request_auth: bytes, salt: bytes) -> bytes:
    """RFC 2548 §2.4.2: P = len || key || zeros to 16n; b1 = MD5(S + R + A), bi = MD5(S + c(i-1))."""
    plain = bytes([len(key)]) + key
    plain += bytes(-len(plain) % 16)
    out, last = b"", request_auth + salt
    for i in range(0, len(plain), 16):
        block = bytes(x ^ y for x, y in zip(plain[i:i + 16], md5(secret + last), strict=True))
        out, last = out + block, block
    return salt + out


def vsa(vendor: int, vtype: int, value: bytes) -> bytes:
    return struct.pack("!IBB", vendor, vtype, len(value) + 2) + value


def reply(code: int, request: bytes, attrs: list[tuple[int, bytes]], *, secret: bytes = SECRET,
          message_authenticator: bool = True, ident: int | None = None) -> bytes:
    """An answer as a RADIUS server builds it (RFC 2865 §3 Response Authenticator, RFC 3579 §3.2)."""
    req_auth = request[4:20]
    if message_authenticator:
        attrs = [(80, bytes(16)), *attrs]
    body = b"".join(bytes([t, len(v) + 2]) + v for t, v in attrs)
    hdr = struct.pack("!BBH", code, request[1] if ident is None else ident, 20 + len(body))
    if message_authenticator:
        mac = hmac.new(secret, hdr + req_auth + body, "md5").digest()
        body = body[:2] + mac + body[18:]
    return hdr + md5(hdr + req_auth + body + secret) + body


def request(eap: bytes = b"\x02\x07\x00\x0a\x01alice", state: bytes | None = None) -> tuple[object, bytes]:
    pkt = access_request(Secret(SECRET), 9, b"alice", eap, state, STATION)
    return pkt, pkt.RequestPacket()


def test_eap_message_is_split_into_253_byte_attributes_in_order() -> None:
    eap = bytes([2, 3]) + struct.pack("!H", 600) + bytes(range(256)) * 2 + bytes(84)
    assert [len(p) for p in split_eap(eap)] == [253, 253, 94]
    _, raw = request(eap, state=b"server-state")
    attrs = attributes(raw)
    kinds = [t for t, _ in attrs]
    first = kinds.index(79)
    assert kinds[first:first + 3] == [79, 79, 79] and kinds.count(79) == 3   # consecutive (RFC 3579 §3.1)
    assert b"".join(v for t, v in attrs if t == 79) == eap
    assert dict(attrs)[24] == b"server-state"   # State echoed
    assert struct.unpack("!H", raw[2:4])[0] == len(raw)


def test_access_request_carries_strongswans_attributes_and_a_valid_message_authenticator() -> None:
    _, raw = request()
    attrs = attributes(raw)
    assert attrs[0][0] == 80 and len(attrs[0][1]) == 16   # Message-Authenticator first (BlastRADIUS)
    found = dict(attrs)
    assert found[1] == b"alice" and found[32] == b"tunsec-gw" and found[4] == bytes([192, 0, 2, 1])
    assert found[30] == b"192.0.2.1[4500]" and found[31] == b"198.51.100.7[4500]"
    assert found[5] == struct.pack("!I", 42) and found[61] == struct.pack("!I", 5) and found[6] == struct.pack("!I", 2)
    zeroed = raw[:22] + bytes(16) + raw[38:]
    assert hmac.new(SECRET, zeroed, "md5").digest() == attrs[0][1]


def test_an_eap_packet_too_large_for_radius_is_refused() -> None:
    with pytest.raises(TooLarge):
        access_request(Secret(SECRET), 1, b"alice", bytes(5000), None, STATION)


def test_access_accept_mppe_keys_are_decrypted_and_make_the_msk_recv_then_send() -> None:
    pkt, raw = request()
    recv, send = bytes(range(32)), bytes(range(100, 132))
    req_auth = raw[4:20]
    answer = read_reply(pkt, reply(ACCESS_ACCEPT, raw, [
        (79, b"\x03\x07\x00\x04"),
        (26, vsa(311, 17, mppe_encrypt(recv, SECRET, req_auth, b"\x80\x01"))),
        (26, vsa(311, 16, mppe_encrypt(send, SECRET, req_auth, b"\x93\x45"))),
    ]))
    assert answer.code == ACCESS_ACCEPT and answer.eap == b"\x03\x07\x00\x04"
    assert answer.msk is not None and answer.msk.reveal() == recv + send


def test_mschapv2_length_keys_of_16_bytes_are_taken_too() -> None:
    pkt, raw = request()
    recv, send = b"R" * 16, b"S" * 16
    req_auth = raw[4:20]
    answer = read_reply(pkt, reply(ACCESS_ACCEPT, raw, [
        (26, vsa(311, 17, mppe_encrypt(recv, SECRET, req_auth, b"\x81\x00"))),
        (26, vsa(311, 16, mppe_encrypt(send, SECRET, req_auth, b"\x82\x00"))),
    ]))
    assert answer.msk is not None and answer.msk.reveal() == recv + send


def test_challenge_state_and_split_eap_are_read() -> None:
    pkt, raw = request()
    eap = b"\x01\x08" + struct.pack("!H", 300) + b"\x1a" + bytes(295)
    answer = read_reply(pkt, reply(ACCESS_CHALLENGE, raw, [(79, eap[:253]), (79, eap[253:]), (24, b"st-1"),
                                                            (18, b"hello\x07world")]))
    assert (answer.eap, answer.state, answer.msk) == (eap, b"st-1", None)
    assert answer.message == "hello?world"   # printable for the log


@pytest.mark.parametrize("case", ["wrong secret", "tampered", "no message authenticator", "wrong id",
                                  "not an answer", "truncated"])
def test_unauthenticated_or_malformed_answers_are_refused(case: str) -> None:
    pkt, raw = request()
    attrs = [(79, b"\x03\x07\x00\x04")]
    data = {
        "wrong secret": lambda: reply(ACCESS_ACCEPT, raw, attrs, secret=b"guessed"),
        "tampered": lambda: reply(ACCESS_REJECT, raw, attrs)[:-1] + b"\x05",
        "no message authenticator": lambda: reply(ACCESS_ACCEPT, raw, attrs, message_authenticator=False),
        "wrong id": lambda: reply(ACCESS_ACCEPT, raw, attrs, ident=10),
        "not an answer": lambda: reply(4, raw, attrs),
        "truncated": lambda: reply(ACCESS_ACCEPT, raw, attrs)[:30],
    }[case]()
    with pytest.raises(BadReply) as info:
        read_reply(pkt, data)
    assert SECRET.decode() not in str(info.value)


def test_a_forged_mppe_key_length_is_refused_not_crashed() -> None:
    pkt, raw = request()
    answer = reply(ACCESS_ACCEPT, raw, [(26, vsa(311, 17, b"\x80\x01" + bytes(5))),
                                        (26, vsa(311, 16, b"\x80\x01" + bytes(16)))])
    with pytest.raises(BadReply):
        read_reply(pkt, answer)


GROUP_ATTRS = [
    (25, b"staff"),                     # Class: a group name
    (25, b"\x00\x17\xff\xfe-session"),  # Class: an opaque value (a server's session cookie)
    (25, b"g" * 44),                    # Class of 44 bytes: left alone, as strongSwan does (NPS)
    (25, b"vpn\tusers"),                # not printable
    (11, b"old-filter"), (11, b"guests"),   # the last Filter-Id counts
    (64, b"\x00\x00\x00\x03"),          # Tunnel-Type L2TP, then (tag 1) ESP: the last one counts
    (64, b"\x01\x00\x00\x09"),
]


def test_an_accepts_group_memberships_are_its_printable_class_names_and_its_esp_filter_id() -> None:
    pkt, raw = request()
    answer = read_reply(pkt, reply(ACCESS_ACCEPT, raw, GROUP_ATTRS))
    assert (answer.class_groups, answer.filter_group) == (("staff",), "guests")
    assert answer.groups(class_group=True, filter_id=True) == ("staff", "guests")
    assert answer.groups(class_group=True, filter_id=False) == ("staff",)
    assert answer.groups(class_group=False, filter_id=True) == ("guests",)
    assert answer.groups(class_group=False, filter_id=False) == ()
    # accounting still echoes every Class, the opaque ones included (RFC 2865 §5.25)
    assert answer.classes[:2] == (b"staff", b"\x00\x17\xff\xfe-session")


@pytest.mark.parametrize("tunnel_types", [[], [b"\x00\x00\x00\x09", b"\x00\x00\x00\x03"], [b"\x00\x00\x09"]])
def test_a_filter_id_is_a_group_only_when_the_tunnel_type_says_esp(tunnel_types: list[bytes]) -> None:
    pkt, raw = request()
    answer = read_reply(pkt, reply(ACCESS_ACCEPT, raw, [(11, b"guests"), *((64, t) for t in tunnel_types)]))
    assert answer.filter_group is None and answer.groups(True, True) == ()


def test_a_challenge_or_reject_gives_no_groups() -> None:
    for code in (ACCESS_CHALLENGE, ACCESS_REJECT):
        pkt, raw = request()
        answer = read_reply(pkt, reply(code, raw, [(79, b"\x01\x07\x00\x04"), *GROUP_ATTRS]))
        assert (answer.class_groups, answer.filter_group, answer.classes) == ((), None, ())


@pytest.mark.parametrize(("values", "taken"), [([b"\x00\x00\x00\x3c"], 60), ([b"\x00\x00\x00\x00"], None),
                                               ([b"\x3c", b"\x00\x00\x0e\x10"], 3600), ([], None)])
def test_an_accepts_session_timeout_is_its_first_4_byte_value_and_0_is_none(values: list[bytes],
                                                                             taken: int | None) -> None:
    pkt, raw = request()
    answer = read_reply(pkt, reply(ACCESS_ACCEPT, raw, [(27, v) for v in values]))
    assert answer.session_timeout == taken
    assert read_reply(pkt, reply(ACCESS_CHALLENGE, raw, [(27, v) for v in values])).session_timeout is None
