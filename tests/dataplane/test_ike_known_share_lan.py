"""The established IKE SAs' per-sender share counts an IPv6 sender by its whole address, in the fast
path (csrc/dp.c address_hash) and in the pipe writer (_wait_known), where unknown and tagged IKE
count by the /64 (review revfastfix F1 of h/fixfast).  A known datagram needs an authenticated
identity, which its peer's share (16) bounds whatever address it sends from; by /64, 40 road
warriors of one office LAN, each with ONE DPD waiting while the control process is behind, lost 8
in C and 8 in the pipe writer, and an insider with two identities sending its own SPIs from one
address of the LAN had every established client's DPD, rekey and DELETE there dropped."""

from __future__ import annotations

import ipaddress
import socket

from esp_ref import c_addr
from tunsec.dataplane._fastpath import lib

from tunsec.dataplane import pipe
from tunsec.dataplane.fastpath import Dataplane, Drop
from tunsec.dataplane.pipe import Endpoint
from tunsec.dataplane.pipeio import PipeWriter

N = 40   # > TS_IKE_KNOWN_PER_SOURCE / MAX_IKE_KNOWN_PER_SENDER (32), < the known reserve (128)
PEER_SPI = bytes(range(0xC0, 0xC8))


def _lan(k: int) -> Endpoint:
    return Endpoint(ipaddress.ip_address(0x2001_0DB8_0001_0002_0000_0000_0000_1000 + k), 4500)


def _known(spi: bytes, n: int) -> bytes:
    """An INFORMATIONAL (DPD) of an established IKE SA from its initiator: our SPI is SPIr."""
    return PEER_SPI + spi + bytes((46, 0x20, 37, 0x08)) + n.to_bytes(4, "big") + (28).to_bytes(4, "big")


def _known_slot(dp: Dataplane, ep: Endpoint) -> int:
    return int(lib.ts_test_ike_known_source_slot(dp._dp, c_addr(ep)))


def _peers_apart(dp: Dataplane, n: int, taken: list[int], first: int = 1) -> list[int]:
    """n peer ids from first on whose shares are apart from each other's and taken's: the peer
    slots are a keyed hash (a random key per context), and peers in one slot share one share."""
    slots = {int(lib.ts_test_ike_peer_slot(dp._dp, p)) for p in taken}
    ids: list[int] = []
    while len(ids) < n:
        if (slot := int(lib.ts_test_ike_peer_slot(dp._dp, first))) not in slots:
            slots.add(slot)
            ids.append(first)
        first += 1
    return ids


def test_c_known_share_forty_peers_on_one_lan_64() -> None:
    dp = Dataplane()
    verdicts = []
    peers = _peers_apart(dp, N, [])
    for k in range(N):
        spi = (0x5000 + k).to_bytes(8, "big")
        dp.ike_spi_add(spi, peer=peers[k])   # 40 identities, each its own IKE SA
        verdicts.append(dp.inbound(b"\0\0\0\0" + _known(spi, 1), _lan(k))[1])
    # per address, 40 addresses share a slot only by a keyed hash's chance: one slot holding 33 of
    # them never happens
    assert verdicts.count(Drop.NONE) == N, {str(v) for v in verdicts}


def test_c_the_known_slot_is_the_address_the_unknown_one_the_64() -> None:
    dp = Dataplane()
    lan = [_lan(k) for k in range(64)]
    assert len({int(lib.ts_test_ike_source_slot(dp._dp, c_addr(ep))) for ep in lan}) == 1
    assert len({_known_slot(dp, ep) for ep in lan}) > 1   # 64 addresses in one of 256 slots: 256^-63


def test_pipe_writer_known_share_forty_peers_on_one_lan_64() -> None:
    control, chan = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        control.setblocking(False)
        chan.setblocking(False)

        class _Loop:   # the writer only asks to be woken when the pipe drains
            def add_writer(self, *a: object) -> None: ...
            def remove_writer(self, *a: object) -> None: ...

        writer = PipeWriter(chan, _Loop(), lambda _pause: None)  # type: ignore[arg-type]
        n = 0
        while not writer.queue:   # fill the pipe: what follows waits
            writer.send(b"old answer %d" % n)
            n += 1
        writer.queue.clear()
        for k in range(N):
            spi = (0x5000 + k).to_bytes(8, "big")
            data = pipe.encode(pipe.Ike(data=_known(spi, 1), remote=_lan(k)))
            writer.send(data, is_event=True, known=True, peer=k + 1)
        assert len(writer.ike_known) == N and writer.dropped_ike_known_source == 0
        # one address's share still holds: 40 more SAs' from one address of the LAN keep to 32
        for k in range(N):
            spi = (0x6000 + k).to_bytes(8, "big")
            data = pipe.encode(pipe.Ike(data=_known(spi, 1), remote=_lan(1000)))
            writer.send(data, is_event=True, known=True, peer=100 + k)
        assert len(writer.ike_known) == 2 * N - (N - PipeWriter.MAX_IKE_KNOWN_PER_SENDER)
        assert writer.dropped_ike_known_source == N - PipeWriter.MAX_IKE_KNOWN_PER_SENDER
    finally:
        control.close()
        chan.close()


def test_c_two_identities_do_not_block_a_whole_lan_64s_established_sas() -> None:
    """As an attacker: an authenticated peer with two identities (each its per-peer share, 16) sends
    its own SPIs from ONE spoofed address of a victim LAN's /64 while the queue backs up.  That
    address's share is spent and no one else's; by /64 every established client of the LAN had its
    DPD/rekey/DELETE dropped IKE_KNOWN_SOURCE in C (the newcomer paid)."""
    dp = Dataplane()
    victims = [_lan(k) for k in range(N)]
    slots = {_known_slot(dp, v) for v in victims}
    # an address of the LAN's /64 whose slot is none of the victims' (slots are a keyed hash: a
    # chance collision would share a share, which is what the 256 slots make rare); by /64 every
    # address of it has the victims' one slot, and any of them does
    candidates = [Endpoint(ipaddress.ip_address(0x2001_0DB8_0001_0002_0000_0000_0000_F000 + i), 4500)
                  for i in range(1, 4096)]
    spoofed = next((ep for ep in candidates if _known_slot(dp, ep) not in slots), candidates[0])
    attacker = _peers_apart(dp, 3, [], first=1000)
    peers = _peers_apart(dp, N, attacker)
    for a in range(2):   # the attacker's two identities, 16 each (TS_IKE_PER_PEER)
        spi = (0x9000 + a).to_bytes(8, "big")
        dp.ike_spi_add(spi, peer=attacker[a])
        for n in range(16):
            assert dp.inbound(b"\0\0\0\0" + _known(spi, n), spoofed)[1] is Drop.NONE
    # the attacker's address's share is full (32): a third identity from there is queued, and the
    # biggest peer there (one of the attacker's own two) loses its oldest (csrc/events.c evict_known)
    dp.ike_spi_add((0x9002).to_bytes(8, "big"), peer=attacker[2])
    assert dp.inbound(b"\0\0\0\0" + _known((0x9002).to_bytes(8, "big"), 0), spoofed)[1] is Drop.NONE
    assert dp.drops()["ike_known_source"] == 1
    lost = 0
    for k, v in enumerate(victims):
        spi = (0x5000 + k).to_bytes(8, "big")
        dp.ike_spi_add(spi, peer=peers[k])
        lost += dp.inbound(b"\0\0\0\0" + _known(spi, 1), v)[1] is not Drop.NONE
    assert lost == 0, f"{lost} of {N} established clients of the LAN lost their datagram"


def test_c_a_full_address_share_costs_its_biggest_peer_not_the_newcomer() -> None:
    """As an attacker behind (or spoofing) a NAT's one address: two identities fill that address's
    share (16 each).  Each other client of the NAT then still gets its DPD up, and the insider's
    oldest goes (the pipe writer's rule, now the fast path's too); with the newcomer paying, all 20
    were dropped IKE_KNOWN_SOURCE until the queue drained."""
    dp = Dataplane()
    nat = Endpoint(ipaddress.ip_address("203.0.113.9"), 4500)
    insider = _peers_apart(dp, 2, [], first=1000)
    clients = _peers_apart(dp, 20, insider)
    for a in range(2):
        spi = (0x9000 + a).to_bytes(8, "big")
        dp.ike_spi_add(spi, peer=insider[a])
        for n in range(16):
            assert dp.inbound(b"\0\0\0\0" + _known(spi, a << 8 | n), nat)[1] is Drop.NONE
    for k in range(20):
        spi = (0x5000 + k).to_bytes(8, "big")
        dp.ike_spi_add(spi, peer=clients[k])
        assert dp.inbound(b"\0\0\0\0" + _known(spi, 0x10000 | k), nat)[1] is Drop.NONE
    assert dp.drops()["ike_known_source"] == 20
    # in order: each identity's newest 6 (they lost their oldest in turn), then the 20 clients'
    waiting = [int.from_bytes(e.data[20:24], "big") for e in dp.events()]
    assert waiting == [*range(10, 16), *range(0x10A, 0x110), *range(0x10000, 0x10014)]
