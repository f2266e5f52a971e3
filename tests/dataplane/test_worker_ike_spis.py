"""IKE_SPI_ADD / IKE_SPI_DELETE through the worker's request handling and the real fast path: an IKE
datagram that names an added SPI as ours (SPIr from the initiator, SPIi from the responder) goes up
marked for the pipe writer's reserve, one that no longer does (deleted) like anyone's; the errnos;
the DUMP gauge; IKE_SPI_KEY and the tagged SPIs of half-open SAs."""

from __future__ import annotations

import asyncio
import ipaddress
import os
from collections.abc import Iterator

import pytest

from tunsec.dataplane import pipe
from tunsec.dataplane.fastpath import Dataplane
from tunsec.dataplane.pipe import Endpoint, Errno
from tunsec.dataplane.worker import Worker
from tunsec.ike.constants import NON_ESP_MARKER
from tunsec.ike.spi_tag import IkeSpiTag, make_ike_spi

PEER = Endpoint(ipaddress.ip_address("198.51.100.7"), 4500)
OURS = bytes.fromhex("5e1f00d2c3b4a596")
THEIRS = bytes.fromhex("0102030405060708")


def informational(ours: bytes, from_initiator: bool) -> bytes:
    spis = THEIRS + ours if from_initiator else ours + THEIRS
    flags = 0x08 if from_initiator else 0x20
    return spis + bytes((46, 0x20, 37, flags)) + bytes(4) + (36).to_bytes(4, "big") + bytes(8)


class Setup:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.plain: list[bytes] = []
        self.known: list[bytes] = []
        self.peers: list[int] = []   # of each known one
        self.worker = Worker(Dataplane(), self.plain.append, {}, loop)
        self.worker.send_known_ike = self._known
        self.ids = iter(range(1, 1000))

    def _known(self, data: bytes, peer: int) -> None:
        self.known.append(data)
        self.peers.append(peer)

    def ask(self, msg_type: type[pipe.IkeSpiAdd] | type[pipe.IkeSpiDelete], spi: bytes, peer: int = 0) -> Errno:
        msg = pipe.IkeSpiAdd(next(self.ids), spi, peer) if msg_type is pipe.IkeSpiAdd else msg_type(next(self.ids), spi)
        [answer] = self.worker.handle_datagram(pipe.encode(msg))
        reply = pipe.decode(answer)
        assert isinstance(reply, pipe.Reply) and reply.type is msg_type.TYPE
        return reply.errno

    def arrive(self, ike: bytes) -> None:
        self.worker.dp.inbound(NON_ESP_MARKER + ike, PEER)
        self.worker.drain_events()


@pytest.fixture
def setup() -> Iterator[Setup]:
    loop = asyncio.new_event_loop()
    try:
        yield Setup(loop)
    finally:
        loop.close()


def test_added_spis_ike_goes_to_the_reserve_until_deleted(setup: Setup) -> None:
    for side in (True, False):
        setup.arrive(informational(OURS, side))
    assert setup.known == [] and len(setup.plain) == 2
    assert setup.ask(pipe.IkeSpiAdd, OURS) is Errno.OK
    assert setup.ask(pipe.IkeSpiAdd, OURS) is Errno.EEXIST
    for side in (True, False):
        setup.arrive(informational(OURS, side))
    assert [pipe.decode(d) for d in setup.known] == [
        pipe.Ike(data=informational(OURS, side), remote=PEER) for side in (True, False)]
    assert len(setup.plain) == 2
    # the peer's SPI is not ours: an IKE_SA_INIT or a flood naming it in our place gets no reserve
    setup.arrive(OURS + THEIRS + informational(OURS, True)[16:])   # SPIi ours, yet the I flag set
    assert len(setup.known) == 2 and len(setup.plain) == 3
    assert setup.worker.dp.gauges()["ike_spis"] == 1
    assert setup.ask(pipe.IkeSpiDelete, OURS) is Errno.OK
    assert setup.ask(pipe.IkeSpiDelete, OURS) is Errno.ENOENT
    setup.arrive(informational(OURS, True))
    assert len(setup.known) == 2 and len(setup.plain) == 4
    assert setup.worker.dp.gauges()["ike_spis"] == 0


def test_the_peer_named_in_the_add_comes_with_its_sas_ike(setup: Setup) -> None:
    """Two IKE SAs of one peer (IKE_PEER) and one of its own: each known event carries the peer the
    pipe writer shares the reserve by (the SA's own SPI in C when none was named)."""
    other = bytes.fromhex("77" * 8)
    assert setup.ask(pipe.IkeSpiAdd, OURS, 0xFEED) is Errno.OK
    assert setup.ask(pipe.IkeSpiAdd, THEIRS, 0xFEED) is Errno.OK
    assert setup.ask(pipe.IkeSpiAdd, other) is Errno.OK
    for spi in (OURS, THEIRS, other):
        setup.arrive(informational(spi, False))
    assert setup.peers == [0xFEED, 0xFEED, int.from_bytes(other, "big")] and len(setup.known) == 3


def test_a_zero_spi_is_refused_by_the_codec(setup: Setup) -> None:
    with pytest.raises(ValueError):
        pipe.IkeSpiAdd(1, bytes(8))
    bad = bytearray(pipe.encode(pipe.IkeSpiAdd(1, OURS)))
    bad[-8:] = bytes(8)
    [answer] = setup.worker.handle_datagram(bytes(bad))
    reply = pipe.decode(answer)
    assert isinstance(reply, pipe.Reply) and reply.errno is Errno.EINVAL


def test_ike_auths_with_our_tag_for_their_sender_go_up_marked_once_the_key_is_there(setup: Setup) -> None:
    """IKE_SPI_KEY through the worker and the real fast path, with an SPI the control process's
    make_ike_spi made: before the key an IKE_AUTH naming it is anyone's; after, it goes up marked for
    the writer's proven shares from the address it was made for, and from no other; the key never
    shows in the message's repr (it is a secret the two processes share)."""
    proven: list[bytes] = []
    setup.worker.send_proven_ike = proven.append
    tag = IkeSpiTag.new()
    ours = make_ike_spi(os.urandom, tag, str(PEER.addr))
    setup.arrive(informational(ours, True))
    assert proven == [] and len(setup.plain) == 1
    msg = pipe.IkeSpiKey(7, tag.key)
    assert tag.key.hex() not in repr(msg) and str(tag.key) not in repr(msg)
    [answer] = setup.worker.handle_datagram(pipe.encode(msg))
    reply = pipe.decode(answer)
    assert isinstance(reply, pipe.Reply) and reply.errno is Errno.OK
    setup.arrive(informational(ours, True))
    assert [pipe.decode(d) for d in proven] == [pipe.Ike(data=informational(ours, True), remote=PEER)]
    elsewhere = Endpoint(ipaddress.ip_address("198.51.100.8"), 4500)
    setup.worker.dp.inbound(NON_ESP_MARKER + informational(ours, True), elsewhere)
    setup.worker.drain_events()
    assert len(proven) == 1 and len(setup.plain) == 2
    # an established SA's datagram is known, not proven, even with the tag
    assert setup.ask(pipe.IkeSpiAdd, ours) is Errno.OK
    setup.arrive(informational(ours, True))
    assert len(proven) == 1 and len(setup.known) == 1
