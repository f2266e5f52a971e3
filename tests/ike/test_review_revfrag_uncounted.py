"""Review revfrag (s20) F2: what an IKE SA drops of the datagrams that name its SPIs is counted
nowhere when it does not decode, or is a fragment of a message ID it does not expect.

The endpoint counts a datagram it cannot parse (``malformed``) and one naming no SPI of ours
(``unknown_spi``), but once the SPIs route a datagram to an IKE SA, IkeSa.receive drops one that
decode_message refuses with a debug line only, and sa_fragments.on_fragment drops a fragment of a
message ID other than the one expected (a request's) without any count (before any cryptography,
as it should).  Anyone who ran IKE_SA_INIT knows the SPIs of its half-open SA and can send either
without end: neither shows in ``tunsec status`` (ike_drops, ike_fragments) nor in the metrics,
unlike the same junk sent without the SPIs.
"""

from __future__ import annotations

import dataclasses
import struct

from test_engine_init_skf import A, B, _cfg

from tunsec.ike.constants import ExchangeType, HeaderFlag, PayloadType
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.message import decode_message


def _half_open() -> tuple[IkeEndpoint, bytes, bytes]:
    """The responder with one half-open IKE SA, and that SA's SPIs (SPIi, SPIr), as its initiator knows them."""
    a = IkeEndpoint([_cfg(True)])
    a.initiate("c", "net", 0.0)
    b = IkeEndpoint([_cfg(False)])
    b.receive(a.datagrams_to_send(0.0)[0].data, (A, 500), 0.0, local_addr=(B, 500))
    (answer,) = b.datagrams_to_send(0.0)
    response = decode_message(answer.data)
    assert b.half_open == 1
    return b, response.spi_i, response.spi_r


def _datagram(spi_i: bytes, spi_r: bytes, message_id: int, first: int, body: bytes) -> bytes:
    head = struct.pack("!BBBBII", first, 0x20, ExchangeType.IKE_AUTH, HeaderFlag.INITIATOR, message_id, 28 + len(body))
    return spi_i + spi_r + head + body


def _counted(b: IkeEndpoint, datagram: bytes) -> dict[str, int]:
    """What moved in the endpoint's drop and fragment counters when ``datagram`` came from the initiator."""
    before = {**dataclasses.asdict(b.stats), **dataclasses.asdict(b.fragment_stats)}
    b.receive(datagram, (A, 4500), 1.0, local_addr=(B, 4500))
    assert b.datagrams_to_send(1.0) == []   # not answered (as on main)
    after = {**dataclasses.asdict(b.stats), **dataclasses.asdict(b.fragment_stats)}
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


def test_a_datagram_that_names_a_half_open_sa_and_does_not_decode_is_counted() -> None:
    b, spi_i, spi_r = _half_open()
    # a Notify payload whose length runs past the datagram: the codec refuses it
    junk = _datagram(spi_i, spi_r, 1, PayloadType.NOTIFY, struct.pack("!BBH", 0, 0, 200) + bytes(8))
    counted = _counted(b, junk)
    assert counted, "an undecodable datagram to a half-open IKE SA is dropped without a count"
    # the same bytes naming no SA of ours are counted (unknown_spi): the SPIs alone make the difference
    assert _counted(b, junk[:8] + bytes(8) + junk[16:]) == {"unknown_spi": 1}


def test_a_fragment_of_a_message_id_far_ahead_is_counted() -> None:
    b, spi_i, spi_r = _half_open()
    # an SKF payload (fragment 1 of 2) of message ID 1000: dropped before any cryptography, as it should be
    skf = struct.pack("!BBHHH", PayloadType.IDI, 0, 8 + 48, 1, 2) + bytes(48)
    counted = _counted(b, _datagram(spi_i, spi_r, 1000, PayloadType.SKF, skf))
    assert counted, "a fragment far ahead of the window is dropped without a count"
