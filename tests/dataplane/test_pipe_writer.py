"""The worker's pipe writer (pipeio.PipeWriter) over a real SOCK_SEQPACKET socketpair whose control end
is not read: IKE events (unauthenticated datagrams) wait in their own bounded queue, each sender to
its share, the oldest dropped and counted, behind answers and the other events, which are never
dropped for them; only waiting answers stop the reading of requests."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Direction, Endpoint, ExpireReason
from tunsec.dataplane.pipeio import PipeWriter
from tunsec.ike.constants import MAX_IKE_MESSAGE

PEER = Endpoint(ipaddress.ip_address("203.0.113.9"), 4500)


class Pair:
    """The control process's end (never read until a test says so), a writer on the worker's end,
    and the writer's calls to pause the reading of requests."""

    def __init__(self) -> None:
        self.control, chan = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.control.setblocking(False)
        chan.setblocking(False)
        self.loop = asyncio.new_event_loop()
        self.pauses: list[bool] = []
        self.writer = PipeWriter(chan, self.loop, self.pauses.append)

    def fill_pipe(self) -> int:
        """Fill the socket with answers the control process has not read yet: what follows waits."""
        n = 0
        while not self.writer.queue:
            self.writer.send(b"old answer %d" % n)
            n += 1
        self.writer.queue.clear()   # the one that did not fit: forgotten, the queue starts empty
        self.writer.answers_waiting = 0
        self.pauses.clear()
        return n - 1

    def read_all(self) -> list[bytes]:
        """The control process reads until the writer has nothing left."""
        out: list[bytes] = []
        while True:
            try:
                out.append(self.control.recv(70000))
            except BlockingIOError:
                if not (self.writer.queue or self.writer.ike or self.writer.ike_known or self.writer.ike_proven):
                    return out
                self.writer._drain()

    def close(self) -> None:
        self.loop.close()
        self.control.close()
        self.writer.chan.close()


@pytest.fixture
def pair() -> Iterator[Pair]:
    p = Pair()
    yield p
    p.close()


def ike(n: int, size: int = 100, remote: Endpoint | None = None) -> bytes:
    """IKE event n; from a sender of its own unless ``remote`` says (the global bounds' tests)."""
    if remote is None:
        remote = Endpoint(ipaddress.ip_address(0x0A000000 + n), 4500)
    return pipe.encode(pipe.Ike(data=n.to_bytes(4, "big") + bytes(size - 4), remote=remote))


# what IKE events of unknown IKE SAs may fill: the rest of MAX_IKE is the established SAs' reserve and
# the tagged ones' (proven)
UNKNOWN = PipeWriter.MAX_IKE - PipeWriter.MAX_IKE_RESERVED - PipeWriter.MAX_IKE_PROVEN_RESERVED
NO_DROPS = {"pipe_event_full": 0, "pipe_ike_full": 0, "pipe_ike_source_full": 0, "pipe_ike_known_full": 0,
            "pipe_ike_known_share": 0, "pipe_ike_known_source": 0, "pipe_ike_proven_full": 0,
            "pipe_ike_proven_source": 0}


def known_ike(n: int, spi: bytes, from_initiator: bool, remote: Endpoint = PEER) -> bytes:
    """IKE event n of an established IKE SA whose SPI of ours is spi: SPIr if the initiator sent it."""
    peers = bytes(range(0xC0, 0xC8))
    spis = peers + spi if from_initiator else spi + peers
    header = spis + bytes((46, 0x20, 37, 0x08 if from_initiator else 0x20)) + bytes(4) + (32).to_bytes(4, "big")
    return pipe.encode(pipe.Ike(data=header + n.to_bytes(4, "big"), remote=remote))


def known_number(data: bytes) -> int:
    msg = pipe.decode(data)
    assert isinstance(msg, pipe.Ike)
    return int.from_bytes(msg.data[28:32], "big")


def expire(spi: int, hard: bool) -> bytes:
    return pipe.encode(pipe.Expire(spi=0x1000 + spi, direction=Direction.OUT, hard=hard, reason=ExpireReason.TIME,
                                   remote=PEER))


def ike_number(data: bytes) -> int:
    msg = pipe.decode(data)
    assert isinstance(msg, pipe.Ike)
    return int.from_bytes(msg.data[:4], "big")


def test_expires_are_not_dropped_for_ike_and_overtake_its_backlog(pair: Pair) -> None:
    """The reviewer's case: more IKE events than anything may hold, then another peer's soft and
    hard EXPIRE.  Both arrive, ahead of every IKE event still waiting; the IKE events lost are
    counted, the oldest of those that waited."""
    old = pair.fill_pipe()
    flood = 3 * PipeWriter.MAX_IKE
    for n in range(flood):
        pair.writer.send(ike(n), is_event=True)
    pair.writer.send(expire(0x1234, hard=False), is_event=True)
    pair.writer.send(expire(0x1234, hard=True), is_event=True)
    got = pair.read_all()[old:]
    assert got[:2] == [expire(0x1234, hard=False), expire(0x1234, hard=True)]
    assert [ike_number(d) for d in got[2:]] == list(range(flood - UNKNOWN, flood))
    assert dict(pair.writer.drops()) == {**NO_DROPS, "pipe_ike_full": flood - UNKNOWN}
    assert pair.pauses == []   # no answer waited: requests were read all along


def test_ike_waiting_is_bounded_in_bytes(pair: Pair) -> None:
    """Datagrams of the largest size the pipe carries, longer than the fast path passes up: the
    bytes held stay within MAX_IKE_BYTES, which MAX_IKE of the longest it passes up fit."""
    assert PipeWriter.MAX_IKE * len(ike(0, MAX_IKE_MESSAGE)) <= PipeWriter.MAX_IKE_BYTES
    pair.fill_pipe()
    size = pipe.MAX_IKE_DATA
    sent = 2 * PipeWriter.MAX_IKE_BYTES // size
    for n in range(sent):
        pair.writer.send(ike(n, size), is_event=True)
        assert pair.writer.ike_bytes <= PipeWriter.MAX_IKE_BYTES
    held = len(pair.writer.ike)
    assert held == PipeWriter.MAX_IKE_BYTES // len(ike(0, size)) < PipeWriter.MAX_IKE
    assert pair.writer.ike_bytes == sum(len(w.data) for w in pair.writer.ike)
    assert pair.writer.dropped_ike == sent - held
    assert [ike_number(w.data) for w in pair.writer.ike] == list(range(sent - held, sent))


def test_answers_go_before_waiting_ike_and_pause_reading_only_while_they_wait(pair: Pair) -> None:
    old = pair.fill_pipe()
    backlog = [ike(n, 2000) for n in range(UNKNOWN)]   # more than the socket holds
    for data in backlog:
        pair.writer.send(data, is_event=True)
    assert pair.pauses == []                       # IKE events wait: requests are still read
    pair.writer.send(b"answer")
    assert pair.pauses == [True]                   # an answer waits: no more requests until it left
    pair.writer.send(expire(1, hard=False), is_event=True)
    while True:                                    # the control process reads what the socket holds
        try:
            pair.control.recv(70000)
        except BlockingIOError:
            break
    pair.writer._drain()
    assert pair.pauses == [True, False] and pair.writer.ike   # reading again while IKE still waits
    assert pair.read_all()[:2] == [b"answer", expire(1, hard=False)]
    assert pair.writer.dropped_ike == 0 and old > 0


def test_answers_and_other_events_keep_their_order(pair: Pair) -> None:
    old = pair.fill_pipe()
    sent = [b"answer 1", expire(1, hard=False), b"answer 2", expire(2, hard=True), b"answer 3"]
    for data in sent:
        pair.writer.send(data, is_event=data.startswith(b"\x01"))
    assert pair.read_all()[old:] == sent


def test_other_events_beyond_max_queued_are_dropped_answers_never(pair: Pair) -> None:
    old = pair.fill_pipe()
    pair.writer.MAX_QUEUED = 3   # type: ignore[misc]
    for spi in range(5):
        pair.writer.send(expire(spi, hard=False), is_event=True)
    for n in range(5):
        pair.writer.send(b"answer %d" % n)
    pair.writer.send(ike(0), is_event=True)        # a full queue of other events does not stop IKE
    got = pair.read_all()[old:]
    assert got == [*(expire(spi, hard=False) for spi in range(3)), *(b"answer %d" % n for n in range(5)), ike(0)]
    assert dict(pair.writer.drops()) == {**NO_DROPS, "pipe_event_full": 2}


def test_with_room_everything_goes_at_once(pair: Pair) -> None:
    pair.writer.send(ike(1), is_event=True)
    pair.writer.send(expire(1, hard=True), is_event=True)
    pair.writer.send(b"answer")
    assert not pair.writer.queue and not pair.writer.ike and pair.pauses == []
    assert pair.read_all() == [ike(1), expire(1, hard=True), b"answer"]


def test_a_backlog_that_drops_says_so_once_and_what_it_cost_when_it_ends(
        pair: Pair, caplog: pytest.LogCaptureFixture) -> None:
    pair.fill_pipe()
    with caplog.at_level(logging.WARNING, "tunsec.worker"):
        for n in range(UNKNOWN + 100):
            pair.writer.send(ike(n), is_event=True)
        assert [r.getMessage() for r in caplog.records] == [
            "the control process does not keep up: dropping events (IKE ones first)"]
        pair.read_all()
    assert caplog.records[-1].getMessage() == "the control process caught up; 100 IKE and 0 other events were dropped"
    assert len(caplog.records) == 2


def test_a_flooding_sender_keeps_its_share_and_pushes_out_no_other_peers_ike(pair: Pair) -> None:
    """The reviewer's case: a peer's IKE event waits, then one sender's 2,000 (from many ports, as a
    NAT or a flooder has), then another peer's.  The flood drops its own oldest, so both peers'
    events arrive, and the flooder's newest MAX_IKE_PER_SENDER with them; the drops are counted apart."""
    share = PipeWriter.MAX_IKE_PER_SENDER
    old = pair.fill_pipe()
    flood = 2000
    pair.writer.send(ike(0, remote=Endpoint(ipaddress.ip_address("198.51.100.7"), 4500)), is_event=True)
    for n in range(1, flood + 1):
        pair.writer.send(ike(n, remote=Endpoint(PEER.addr, 1024 + n)), is_event=True)
        assert len(pair.writer.ike) <= 1 + share
    pair.writer.send(ike(flood + 1, remote=Endpoint(ipaddress.ip_address("2001:db8::7"), 4500)), is_event=True)
    got = [ike_number(d) for d in pair.read_all()[old:]]
    assert got == [0, *range(flood + 1 - share, flood + 1), flood + 1]
    assert dict(pair.writer.drops()) == {**NO_DROPS, "pipe_ike_source_full": flood - share}
    assert pair.writer.ike_bytes == 0 and not pair.writer.ike_by_sender


def test_shares_drop_only_their_senders_oldest_in_a_mixed_backlog(pair: Pair) -> None:
    """Senders interleaved: the one over its share loses its own oldest, wherever it waits; the
    others keep all theirs, and the order of what is kept is the order it came in."""
    share = PipeWriter.MAX_IKE_PER_SENDER
    flooder = Endpoint(ipaddress.ip_address("2001:db8::1"), 4500)
    pair.fill_pipe()
    sent: list[tuple[int, bool]] = []   # (number, from the flooder)
    for n in range(4 * share):
        by_flooder = n % 4 != 0
        pair.writer.send(ike(n, remote=flooder if by_flooder else None), is_event=True)
        sent.append((n, by_flooder))
    flooders = [n for n, by in sent if by]
    kept = set(flooders[-share:]) | {n for n, by in sent if not by}
    assert [ike_number(w.data) for w in pair.writer.ike] == sorted(kept)
    assert pair.writer.dropped_ike_source == len(flooders) - share and pair.writer.dropped_ike == 0
    assert pair.writer.ike_bytes == sum(len(w.data) for w in pair.writer.ike)
    assert [len(q) for q in pair.writer.ike_by_sender.values()].count(share) == 1


def test_the_share_is_the_fast_paths(pair: Pair) -> None:
    """One figure in two languages: the fast path's per-source share before the writer's, and so
    the established IKE SAs' reserve and each one's share of it."""
    header = (Path(__file__).parents[2] / "csrc" / "internal.h").read_text()
    for name, value in (("TS_IKE_PER_SOURCE", PipeWriter.MAX_IKE_PER_SENDER),
                        ("TS_IKE_RESERVED", PipeWriter.MAX_IKE_RESERVED),
                        ("TS_IKE_PER_PEER", PipeWriter.MAX_IKE_PER_PEER),
                        ("TS_IKE_KNOWN_PER_SOURCE", PipeWriter.MAX_IKE_KNOWN_PER_SENDER),
                        ("TS_IKE_PROVEN_RESERVED", PipeWriter.MAX_IKE_PROVEN_RESERVED),
                        ("TS_IKE_PROVEN_PER_SOURCE", PipeWriter.MAX_IKE_PROVEN_PER_SENDER),
                        ("TS_IKE_PROVEN_MAX", PipeWriter.MAX_IKE_PROVEN)):
        found = re.search(rf"#define {name} (\d+)", header)
        assert found is not None and int(found[1]) == value, name


def test_established_sas_ike_keeps_its_reserve_through_a_flood_and_goes_first(pair: Pair) -> None:
    """A flood from more senders than MAX_IKE has shares for fills what unknown IKE may; the DPDs of
    three established IKE SAs (either side the initiator) still wait, every one, and leave first."""
    old = pair.fill_pipe()
    flood = 3 * PipeWriter.MAX_IKE
    spis = [bytes([0x80 + k]) * 8 for k in range(3)]
    for n in range(flood):
        pair.writer.send(ike(n), is_event=True)
        if n % 200 == 0:
            for k, spi in enumerate(spis):
                pair.writer.send(known_ike(n + k, spi, k % 2 == 0), is_event=True, known=True)
    assert len(pair.writer.ike) == UNKNOWN and len(pair.writer.ike_known) == 3 * len(range(0, flood, 200))
    got = pair.read_all()[old:]
    dpds = 3 * len(range(0, flood, 200))
    assert [known_number(d) for d in got[:dpds]] == [n + k for n in range(0, flood, 200) for k in range(3)]
    assert [ike_number(d) for d in got[dpds:]] == list(range(flood - UNKNOWN, flood))
    assert dict(pair.writer.drops()) == {**NO_DROPS, "pipe_ike_full": flood - UNKNOWN}
    assert pair.writer.ike_bytes == 0


def sender(k: int) -> Endpoint:
    return Endpoint(ipaddress.ip_address(0xC6336400 + k), 4500)   # 198.51.100.k


def shares(pair: Pair) -> list[int]:
    return [len(q) for q in pair.writer._known.by_key.values()]


def test_one_peer_keeps_to_its_share_and_the_biggest_pay_when_all_is_full(pair: Pair) -> None:
    """An authenticated peer flooding with its own SPI keeps its newest MAX_IKE_PER_PEER (its share);
    many peers together take the reserve and what unknown IKE leaves free of MAX_IKE, no more: when
    it is full the peer with the most waiting loses its oldest, so every peer keeps some."""
    share = PipeWriter.MAX_IKE_PER_PEER
    pair.fill_pipe()
    mine = b"\x11" * 8
    for n in range(500):
        pair.writer.send(known_ike(n, mine, True), is_event=True, known=True)
    assert [known_number(w.data) for w in pair.writer.ike_known] == list(range(500 - share, 500))
    assert dict(pair.writer.drops()) == {**NO_DROPS, "pipe_ike_known_share": 500 - share}
    pair.writer.send(ike(0), is_event=True)   # the unknown: what the flood has
    peers = PipeWriter.MAX_IKE // share + 4
    for k in range(peers):
        for n in range(share):
            pair.writer.send(known_ike(n, (0x2000 + k).to_bytes(8, "big"), False, sender(k)), is_event=True,
                             known=True, peer=0x5000 + k)
    assert len(pair.writer.ike_known) == PipeWriter.MAX_IKE - 1 and len(pair.writer.ike) == 1
    assert pair.writer.dropped_ike_known == share + peers * share - (PipeWriter.MAX_IKE - 1)
    assert max(shares(pair)) <= share
    # a flood takes its room back: established SAs keep the reserve, every peer some of it
    before = pair.writer.dropped_ike_known
    for n in range(1, 2 * UNKNOWN):
        pair.writer.send(ike(n), is_event=True)
    # (and the tagged IKE_AUTHs' reserve, none of which wait yet)
    assert len(pair.writer.ike) == UNKNOWN and len(pair.writer.ike_known) == PipeWriter.MAX_IKE - UNKNOWN
    assert pair.writer.dropped_ike == UNKNOWN   # of the 2 * UNKNOWN sent
    # ... which IKE_AUTHs with our tag take back
    for n in range(PipeWriter.MAX_IKE_PROVEN_RESERVED):
        pair.writer.send(ike(n, remote=sender(100 + n % 2)), is_event=True, proven=True)
    assert len(pair.writer.ike_proven) == PipeWriter.MAX_IKE_PROVEN_RESERVED
    assert len(pair.writer.ike) == UNKNOWN and len(pair.writer.ike_known) == PipeWriter.MAX_IKE_RESERVED
    assert pair.writer.dropped_ike_known - before == PipeWriter.MAX_IKE - 1 - PipeWriter.MAX_IKE_RESERVED
    assert len(shares(pair)) == peers + 1 and max(shares(pair)) - min(shares(pair)) <= 1
    assert pair.writer.ike_bytes == sum(len(w.data) for w in (*pair.writer.ike, *pair.writer.ike_known,
                                                              *pair.writer.ike_proven))


def test_forty_sas_from_one_sender_keep_to_its_share_and_others_pass(pair: Pair) -> None:
    """40 IKE SAs (no peer named: each its own), 40 datagrams each from one address: that address's
    known share waits, no more; another peer's datagram from its own address and a new client's
    IKE_SA_INIT still wait, nothing of theirs pushed out."""
    pair.fill_pipe()
    for k in range(40):
        for n in range(40):
            pair.writer.send(known_ike(n, (0x3000 + k).to_bytes(8, "big"), True), is_event=True, known=True)
    assert len(pair.writer.ike_known) == PipeWriter.MAX_IKE_KNOWN_PER_SENDER
    drops = dict(pair.writer.drops())
    kept = PipeWriter.MAX_IKE_KNOWN_PER_SENDER
    assert drops["pipe_ike_known_share"] + drops["pipe_ike_known_source"] == 40 * 40 - kept
    assert drops["pipe_ike_known_full"] == drops["pipe_ike_full"] == 0
    victim = known_ike(7, b"\x77" * 8, False, sender(9))
    pair.writer.send(victim, is_event=True, known=True, peer=0x7777)
    pair.writer.send(ike(1), is_event=True)
    assert victim in [w.data for w in pair.writer.ike_known] and len(pair.writer.ike) == 1
    assert dict(pair.writer.drops()) == drops


def test_one_peers_forty_sas_from_spoofed_senders_keep_to_the_peers_share(pair: Pair) -> None:
    """The same peer's 40 IKE SAs, each datagram from another (spoofed) address: the peer's share."""
    pair.fill_pipe()
    for k in range(40):
        for n in range(40):
            data = known_ike(n, (0x3000 + k).to_bytes(8, "big"), True, sender(n))
            pair.writer.send(data, is_event=True, known=True, peer=0xABC)
    assert len(pair.writer.ike_known) == PipeWriter.MAX_IKE_PER_PEER
    assert dict(pair.writer.drops()) == {**NO_DROPS, "pipe_ike_known_share": 40 * 40 - PipeWriter.MAX_IKE_PER_PEER}


def test_a_full_reserve_costs_the_flooding_peers_not_the_first_victim(pair: Pair) -> None:
    """A victim's two DPD answers wait first; a spoofed flood fills the others' part; eight flooding
    identities fill the reserve and go on: they lose their own oldest, the victim keeps both."""
    pair.fill_pipe()
    victim = [known_ike(n, b"\x77" * 8, False, sender(200)) for n in range(2)]
    for data in victim:
        pair.writer.send(data, is_event=True, known=True, peer=0x7777)
    for n in range(UNKNOWN + 100):
        pair.writer.send(ike(n, remote=Endpoint(ipaddress.ip_address(0x0A000000 + n % 16), 500)), is_event=True)
    assert len(pair.writer.ike) == UNKNOWN
    for n in range(PipeWriter.MAX_IKE_PROVEN_RESERVED):   # and clients' IKE_AUTHs their reserve
        pair.writer.send(ike(n, remote=sender(100)), is_event=True, proven=True)
    floods = PipeWriter.MAX_IKE_RESERVED // PipeWriter.MAX_IKE_PER_PEER
    for k in range(floods):
        for n in range(3 * PipeWriter.MAX_IKE_PER_PEER):
            data = known_ike(n, (0x4000 + k).to_bytes(8, "big"), True, sender(k))
            pair.writer.send(data, is_event=True, known=True, peer=0x9000 + k)
    assert len(pair.writer.ike_known) == PipeWriter.MAX_IKE_RESERVED
    kept = [w.data for w in pair.writer.ike_known]
    assert kept[:2] == victim and pair.writer.dropped_ike_known > 0


def test_our_spi_is_read_by_the_initiator_flag() -> None:
    spi = bytes.fromhex("0102030405060708")
    assert pipe.ike_event_own_spi(known_ike(1, spi, True)) == spi
    assert pipe.ike_event_own_spi(known_ike(1, spi, False)) == spi
    assert pipe.ike_event_own_spi(expire(1, hard=True)) is None


def test_the_sender_is_read_alike_from_either_encoding() -> None:
    """ike_event_sender: family and address, not the port, from both ways an IKE event is encoded;
    None for bytes not so laid out."""
    v4 = Endpoint(ipaddress.ip_address("192.0.2.1"), 4500)
    v6 = Endpoint(ipaddress.ip_address("2001:db8::2"), 61000)
    local = Endpoint(ipaddress.ip_address("192.0.2.254"), 4500)
    for data in (b"x", bytes(5), bytes(1000)):
        general = pipe.encode(pipe.Ike(data=data, remote=v4, local=local))
        fast = pipe.encode_ike_event(data, 4, v4.addr.packed + bytes(12), 4500, 4, local.addr.packed + bytes(12), 4500)
        assert fast == general
        assert pipe.ike_event_sender(general) == b"\x04" + v4.addr.packed + bytes(12)
        six = pipe.encode(pipe.Ike(data=data, remote=v6))
        assert pipe.ike_event_sender(six) == b"\x06" + v6.addr.packed
        assert pipe.ike_event_sender(six) == pipe.ike_event_sender(
            pipe.encode(pipe.Ike(data=data, remote=Endpoint(v6.addr, 500))))
    assert pipe.ike_event_sender(expire(1, hard=True)) is None
    assert pipe.ike_event_sender(b"") is None
    assert pipe.ike_event_sender(pipe.encode(pipe.Ike(data=b"x", remote=v4))[:-4]) is None


def test_tagged_ike_auths_from_one_nat_have_four_shares_and_take_turns_with_unknown_ike(pair: Pair) -> None:
    """Road warriors behind one NAT: its IKE_SA_INITs fill the address's unknown share, and their
    IKE_AUTHs (our tag for the NAT's address in them) wait in a share of their own four times as big,
    the newest kept; they leave after established IKE SAs' and in turn with the unknown ones."""
    pair.fill_pipe()
    nat = sender(9)
    for n in range(40):
        pair.writer.send(ike(n, remote=nat), is_event=True)
    for n in range(1000, 1200):
        pair.writer.send(ike(n, remote=nat), is_event=True, proven=True)
    pair.writer.send(known_ike(7, b"\x42" * 8, True), is_event=True, known=True)
    share, proven_share = PipeWriter.MAX_IKE_PER_SENDER, PipeWriter.MAX_IKE_PROVEN_PER_SENDER
    assert [ike_number(w.data) for w in pair.writer.ike_proven] == list(range(1200 - proven_share, 1200))
    assert len(pair.writer.ike) == share
    assert dict(pair.writer.drops()) == {**NO_DROPS, "pipe_ike_source_full": 40 - share,
                                         "pipe_ike_proven_source": 200 - proven_share}
    out = [d for d in pair.read_all() if not d.startswith(b"old answer")]
    assert known_number(out[0]) == 7   # the established SA's first
    # then the tagged and the unknown ones in turn (a tag may be a flooder's: IKE_SA_INITs do not wait
    # behind all of it), each in order
    tagged, unknown = list(range(1200 - proven_share, 1200)), list(range(40 - share, 40))
    turns = [n for pair_ in zip(tagged, unknown, strict=False) for n in pair_] + tagged[len(unknown):]
    assert [ike_number(d) for d in out[1:]] == turns


def test_a_spoofed_flood_leaves_tagged_ike_auths_their_reserve(pair: Pair) -> None:
    """Spoofed IKE from more senders than there are shares fills what unknown IKE may; clients'
    IKE_AUTHs from two addresses still wait, up to their reserve, and when it is full the address
    with the most waiting pays, so both keep about half; the flood never pushes them out."""
    pair.fill_pipe()
    for n in range(2 * UNKNOWN):
        pair.writer.send(ike(n), is_event=True)
    assert len(pair.writer.ike) == UNKNOWN
    reserve = PipeWriter.MAX_IKE_PROVEN_RESERVED
    for n in range(reserve):   # one address first: it fills the reserve alone
        pair.writer.send(ike(5000 + n, remote=sender(1)), is_event=True, proven=True)
    for n in range(reserve):   # then another: the first pays until they hold as many
        pair.writer.send(ike(6000 + n, remote=sender(2)), is_event=True, proven=True)
    by_sender = [len(q) for q in pair.writer._proven.by_key.values()]
    assert sum(by_sender) == reserve and max(by_sender) - min(by_sender) <= 2   # ties: the older pays
    assert pair.writer.dropped_ike_proven == reserve and pair.writer.dropped_ike_proven_source == 0
    before = pair.writer.dropped_ike
    for n in range(UNKNOWN):
        pair.writer.send(ike(n), is_event=True)
    assert len(pair.writer.ike_proven) == reserve and pair.writer.dropped_ike - before == UNKNOWN


def test_one_tagged_flooder_does_not_starve_other_senders_ike_sa_inits(pair: Pair) -> None:
    """A tag proves only that its sender once got our answer: one real address floods with the tag it
    earned, faster than the control process reads (3 events for every 2 it reads from a full pipe),
    while other clients send IKE_SA_INITs: the two queues leave in turn, so the clients' IKE_SA_INITs
    keep getting through (with the tagged queue first none did)."""
    pair.fill_pipe()
    flooder, got = sender(1), 0
    for n in range(2000):
        for k in range(3):
            pair.writer.send(ike(3 * n + k, remote=flooder), is_event=True, proven=True)
        pair.writer.send(ike(100_000 + n, remote=sender(2 + n % 200)), is_event=True)
        for _ in range(2):
            data = pair.control.recv(70000)
            got += not data.startswith(b"old answer") and ike_number(data) >= 100_000
        pair.writer._drain()
    assert got >= 500, got


def test_the_unknown_ones_take_back_their_room_and_ipv6_senders_share_their_64(pair: Pair) -> None:
    """Three tagged senders fill their reserve and the unknown ones' room: new senders' IKE_SA_INITs
    push out the tagged ones beyond the reserve, the biggest sender's first; and tags earned by 512
    addresses of one /64 share one sender's share."""
    pair.fill_pipe()
    for n in range(600):
        pair.writer.send(ike(n, remote=sender(1 + n % 3)), is_event=True, proven=True)
    assert len(pair.writer.ike_proven) == PipeWriter.MAX_IKE_PROVEN
    shared, before = PipeWriter.MAX_IKE - PipeWriter.MAX_IKE_RESERVED, pair.writer.dropped_ike_proven
    for n in range(shared - PipeWriter.MAX_IKE_PROVEN + 50):   # the room left, and 50 more
        pair.writer.send(ike(10_000 + n), is_event=True)
    assert len(pair.writer.ike) == shared - PipeWriter.MAX_IKE_PROVEN + 50 and pair.writer.dropped_ike == 0
    assert len(pair.writer.ike_proven) == PipeWriter.MAX_IKE_PROVEN - 50
    assert pair.writer.dropped_ike_proven - before == 50
    held = [len(q) for q in pair.writer._proven.by_key.values()]
    assert max(held) - min(held) <= 1   # the biggest paid
    pair.writer._clear()
    pair.fill_pipe()
    for n in range(512):
        v6 = Endpoint(ipaddress.ip_address(0x2001_0DB8_0000_0001_0000_0000_0000_0000 + n), 4500)
        pair.writer.send(ike(n, remote=v6), is_event=True, proven=True)
    assert len(pair.writer.ike_proven) == PipeWriter.MAX_IKE_PROVEN_PER_SENDER
    assert pair.writer.dropped_ike_proven_source == 512 - PipeWriter.MAX_IKE_PROVEN_PER_SENDER


def test_an_ipv6_senders_unknown_share_is_its_64s_its_known_share_its_address(pair: Pair) -> None:
    """As the fast path counts them (csrc/dp.c source_hash, address_hash): 600 untagged IKE events
    from as many addresses of one /64 wait as one sender's share, and another client's still waits
    (review revfast F1); an established SA's count by their whole address, so 40 IKE SAs' from 40
    addresses of one /64 all wait (review revfastfix F1: a LAN's road warriors are not one sender)."""
    pair.fill_pipe()
    for n in range(600):
        v6 = Endpoint(ipaddress.ip_address(0x2001_0DB8_0001_0002_0000_0000_0000_0000 + n + 1), 4500)
        pair.writer.send(ike(n, remote=v6), is_event=True)
    assert len(pair.writer.ike) == PipeWriter.MAX_IKE_PER_SENDER
    assert pair.writer.dropped_ike_source == 600 - PipeWriter.MAX_IKE_PER_SENDER
    pair.writer.send(ike(1000, remote=Endpoint(ipaddress.ip_address("198.51.100.7"), 4500)), is_event=True)
    assert len(pair.writer.ike) == PipeWriter.MAX_IKE_PER_SENDER + 1 and pair.writer.dropped_ike == 0
    pair.writer._clear()
    pair.fill_pipe()
    for k in range(40):   # 40 IKE SAs (no peer named: each its own), each from another address
        v6 = Endpoint(ipaddress.ip_address(0x2001_0DB8_0001_0002_0000_0000_0001_0000 + k), 4500)
        pair.writer.send(known_ike(k, (0x3000 + k).to_bytes(8, "big"), True, v6), is_event=True, known=True)
    assert len(pair.writer.ike_known) == 40 and pair.writer.dropped_ike_known_source == 0
