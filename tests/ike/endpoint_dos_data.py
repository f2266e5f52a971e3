"""What the responder DoS tests share: two endpoints' addresses, their config, IKE_SA_INIT requests
and the ways to change them, hostile datagrams, and getting a COOKIE."""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.constants import ExchangeType, HeaderFlag, NotifyType
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.identity import Identity
from tunsec.ike.message import NotifyPayload, decode_message
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.secret import Secret

A, B = "192.0.2.1", "192.0.2.2"
PSK = Secret(b"a shared secret of some length")
TIMEOUT = 30.0


def cfg(initiator: bool, peer: str | None = None, **kw: Any) -> IkeConfig:
    local_ts, remote_ts = ("10.1.0.0/16", "10.2.0.0/16") if initiator else ("10.2.0.0/16", "10.1.0.0/16")
    ids = ("moon.example", "sun.example") if initiator else ("sun.example", "moon.example")
    base = IkeConfig(
        "conn",
        LocalAuth("psk", Identity.parse(ids[0])),
        RemoteAuth("psk", Identity.parse(ids[1])),
        parse_proposals("aes128gcm16-prfsha256-curve25519"),
        (child_config("net", local_ts, remote_ts, "aes128gcm16"),),
        psk=PSK,
        local_addr=A if initiator else B,
        remote_addr=B if initiator else peer,
        half_open_timeout=TIMEOUT,
    )
    return dataclasses.replace(base, **kw)


def init_request() -> bytes:
    """A genuine IKE_SA_INIT request, as an initiator sends it."""
    a = IkeEndpoint([cfg(True)])
    a.initiate("conn", "net", 0.0)
    (first,) = a.datagrams_to_send(0.0)
    return first.data


def with_spi(request: bytes, i: int) -> bytes:
    """The same request under another SPIi (IKE_SA_INIT is not integrity protected)."""
    return struct.pack("!Q", 0x1000 + i) + request[8:]


def with_cookie(request: bytes, cookie: bytes) -> bytes:
    msg = decode_message(request)
    return dataclasses.replace(msg, payloads=(NotifyPayload(NotifyType.COOKIE, cookie), *msg.payloads)).encode()


def cookie_of(reply: bytes) -> bytes:
    msg = decode_message(reply)
    assert msg.is_response and msg.spi_r == bytes(8)
    (payload,) = msg.payloads
    assert isinstance(payload, NotifyPayload) and payload.type == NotifyType.COOKIE
    return payload.data


def patched(request: bytes, *, offset: int, data: bytes) -> bytes:
    out = bytearray(request)
    out[offset : offset + len(data)] = data
    return bytes(out)


def header(exchange: int, flags: int, msg_id: int = 0, spi_i: bytes = b"\x01" * 8, spi_r: bytes = bytes(8),
           next_payload: int = 0, body: bytes = b"") -> bytes:
    return spi_i + spi_r + struct.pack("!BBBBII", next_payload, 0x20, exchange, flags, msg_id, 28 + len(body)) + body


def hostile(request: bytes) -> dict[str, bytes]:
    """Datagrams of many shapes, none of them a well-formed IKE_SA_INIT request."""
    init = int(HeaderFlag.INITIATOR)
    msg = decode_message(request)
    no_ke = dataclasses.replace(msg, payloads=tuple(p for p in msg.payloads if type(p).__name__ != "KePayload"))
    no_nonce = dataclasses.replace(msg, payloads=tuple(p for p in msg.payloads if type(p).__name__ != "NoncePayload"))
    garbage = request + b"\x00" * 4
    return {
        "empty": b"",
        "truncated header": request[:20],
        "truncated body": request[:-5],
        "28 bytes, SA announced, no body": header(ExchangeType.IKE_SA_INIT, init, next_payload=33),
        "28 bytes, no payload": header(ExchangeType.IKE_SA_INIT, init),
        "28 bytes, bogus payload type": header(ExchangeType.IKE_SA_INIT, init, next_payload=200),
        "non-zero message id": patched(request, offset=20, data=struct.pack("!I", 1)),
        "non-zero SPIr": patched(request, offset=8, data=b"\x02" * 8),
        "zero SPIi": patched(request, offset=0, data=bytes(8)),
        "response flag": patched(request, offset=19, data=bytes([init | HeaderFlag.RESPONSE])),
        "IKEv1 version": patched(request, offset=17, data=b"\x10"),
        "no KE": no_ke.encode(),
        "no Nonce": no_nonce.encode(),
        "trailing bytes (length field covers them)": patched(
            garbage, offset=24, data=struct.pack("!I", len(garbage))
        ),
        "IKE_AUTH to an unknown SPI": header(ExchangeType.IKE_AUTH, init, 1, spi_r=b"\x03" * 8, next_payload=46,
                                             body=b"\x00\x00\x00\x14" + b"\x00" * 16),
        "INFORMATIONAL response to an unknown SPI": header(ExchangeType.INFORMATIONAL, HeaderFlag.RESPONSE, 5,
                                                           spi_r=b"\x04" * 8),
        "CREATE_CHILD_SA to an unknown SPI": header(ExchangeType.CREATE_CHILD_SA, init, 2, spi_r=b"\x05" * 8),
        "IKE_SA_INIT response to nothing": header(ExchangeType.IKE_SA_INIT, HeaderFlag.RESPONSE, spi_r=b"\x06" * 8),
    }


def cookie_for(b: IkeEndpoint, request: bytes, addr: tuple[str, int], now: float) -> bytes:
    b.datagrams_to_send(now)
    b.receive(request, addr, now)
    replies = b.datagrams_to_send(now)
    assert len(replies) == 1
    return cookie_of(replies[0].data)
