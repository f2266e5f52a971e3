"""The non-ESP marker between custom IKE ports (services/ike/sockets.py ``unmark``): only the
answer to an unmarked IKE_SA_INIT request goes back unmarked.  A datagram anyone can send with a
marking peer's address (any unmarked IKE header) must not make our later messages to that peer
unmarked, which it would drop as ESP.  Real UDP sockets on loopback."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest

from tunsec.ike.constants import IKE_VERSION, NON_ESP_MARKER, ExchangeType, HeaderFlag
from tunsec.ike.endpoint import Datagram
from tunsec.services.ike.sockets import IkeSockets

LO = "127.0.0.1"


def header(exchange: int, flags: int) -> bytes:
    """A bare IKE header (28 bytes, no payloads) of the given exchange and flags."""
    return bytes(range(1, 9)) + bytes(8) + struct.pack("!BBBBII", 0, IKE_VERSION, exchange, flags, 0, 28)


@pytest.fixture
def pair() -> Iterator[tuple[IkeSockets, socket.socket, int]]:
    """Our IKE socket on a custom port, and a peer socket on another custom port."""
    ours = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ours.bind((LO, 0))
    peer.bind((LO, 0))
    peer.settimeout(5)
    port = int(ours.getsockname()[1])
    sockets = IkeSockets([], {4: LO}, worker=lambda: None, spawn=lambda c: None)  # type: ignore[arg-type,return-value]
    sockets.by_key[(4, LO, port)] = ours
    try:
        yield sockets, peer, port
    finally:
        ours.close()
        peer.close()


def sent(sockets: IkeSockets, peer: socket.socket, port: int, data: bytes, unmarked: bool = False) -> bytes:
    sockets.send(Datagram(data, (LO, peer.getsockname()[1]), port, None, unmarked))
    return peer.recv(2048)


def test_a_spoofed_unmarked_header_does_not_unmark_later_messages(pair: tuple[IkeSockets, socket.socket, int]) -> None:
    sockets, peer, port = pair
    addr = (LO, int(peer.getsockname()[1]))
    dpd = header(ExchangeType.INFORMATIONAL, HeaderFlag.INITIATOR)
    # the peer marks its IKE; someone sends an unmarked INFORMATIONAL header with its address
    assert sockets.unmark(NON_ESP_MARKER + dpd, addr, port) == (dpd, False)
    assert sockets.unmark(dpd, addr, port) == (dpd, True)    # still taken as IKE (the endpoint judges it)
    assert sent(sockets, peer, port, dpd) == NON_ESP_MARKER + dpd
    # an unmarked IKE_SA_INIT request (a NAT-moved port-500 client, or its forgery) leaves nothing
    # behind here: our later requests and answers go marked (only the engine unmarks, the answer to
    # that request: test_ike_natt_unmarked.py)
    init = header(ExchangeType.IKE_SA_INIT, HeaderFlag.INITIATOR)
    assert sockets.unmark(init, addr, port) == (init, True)
    assert sent(sockets, peer, port, dpd) == NON_ESP_MARKER + dpd
    assert sent(sockets, peer, port, header(ExchangeType.IKE_AUTH, HeaderFlag.RESPONSE)) \
        == NON_ESP_MARKER + header(ExchangeType.IKE_AUTH, HeaderFlag.RESPONSE)
    # a keepalive, and ESP (dropped: only port 4500 carries it)
    assert sockets.unmark(b"\xff", addr, port) == (None, False)
    assert sockets.unmark(b"\x00\x00\x10\x00" + bytes(40), addr, port) == (None, False)
    assert sockets.esp_on_ike_port == 1


def test_the_answer_to_an_unmarked_ike_sa_init_goes_back_unmarked(pair: tuple[IkeSockets, socket.socket, int]) -> None:
    sockets, peer, port = pair
    answer = header(ExchangeType.IKE_SA_INIT, HeaderFlag.RESPONSE)
    assert sent(sockets, peer, port, answer) == NON_ESP_MARKER + answer      # a marking peer's
    assert sent(sockets, peer, port, answer, unmarked=True) == answer        # an unmarked client's
