"""The worker process over the real pipe (AF_UNIX SOCK_SEQPACKET), with a
real TUN device and a real UDP socket inside a network namespace: every
message answered, concurrent GETSPI unique, malformed messages refused
without changing anything, events reported upward."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import random
import re
import secrets
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import netns_unavailable
from esp_ref import esp_seal, ike_message, ipv4_udp
from pipe_batches import Unbatched
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from pytun_pmd3 import TunTapDevice
from pytun_pmd3.linux import IFF_NO_PI, IFF_TUN
from tunsec.dataplane._fastpath import ffi

from tunsec import exposition, status
from tunsec.bench.netns import in_netns, netns_socket
from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Action, Alg, Direction, Endpoint, Errno, Lifetime, Policy, SaSpec, Selector
from tunsec.metrics import sa_families

WHY = netns_unavailable()
pytestmark = pytest.mark.skipif(WHY is not None, reason=f"NETNS UNAVAILABLE: {WHY}")

A, B = ipaddress.ip_network("10.1.0.0/24"), ipaddress.ip_network("10.2.0.0/24")
LOCAL = Endpoint(ipaddress.ip_address("127.0.0.1"), 4500)
PEER = Endpoint(ipaddress.ip_address("127.0.0.2"), 4500)


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    chan: socket.socket
    udp: socket.socket
    ns: str
    log: Path
    next_id: int = 1

    def send(self, build: object) -> int:
        req_id = self.next_id
        self.next_id += 1
        self.chan.send(pipe.encode(build(req_id)))  # type: ignore[operator]
        return req_id

    def recv(self) -> pipe.Message:
        return pipe.decode(self.chan.recv(65536))

    def ask(self, build: object) -> list[pipe.Reply]:
        req_id = self.send(build)
        out: list[pipe.Reply] = []
        while True:
            msg = self.recv()
            if isinstance(msg, pipe.Reply) and msg.req_id == req_id:
                out.append(msg)
                if not msg.more:
                    return out

    def dump(self) -> pipe.Reply:
        return pipe.join_dump_replies(self.ask(lambda r: pipe.Dump(r)))


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Worker]:
    ns = f"tsw-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
    try:
        with in_netns(ns):
            tun = TunTapDevice(name="tsw0", flags=IFF_TUN | IFF_NO_PI)
        os.set_blocking(tun.fileno(), False)   # as tun.py opens it: the loop reads until EAGAIN
        udp = netns_socket(ns, socket.AF_INET, socket.SOCK_DGRAM)
        udp.setsockopt(socket.SOL_SOCKET, 33, 4 << 20)   # SO_RCVBUFFORCE, as the daemon sets it
        udp.bind(("127.0.0.1", 4500))
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.settimeout(10)
        log = tmp_path / "worker.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "tunsec.dataplane.worker", "--pipe-fd", str(theirs.fileno()),
             "--tun-fd", str(tun.fileno()), "--udp4-fd", str(udp.fileno()), "--larval-timeout", "1"],
            pass_fds=(theirs.fileno(), tun.fileno(), udp.fileno()),
            stderr=log.open("wb"),
        )
        theirs.close()
        w = Worker(proc, Unbatched(ours), udp, ns, log)   # type: ignore[arg-type]   # answers may come batched
        yield w
        ours.close()
        assert proc.wait(timeout=10) == 0, "the worker must exit cleanly when the pipe closes"
        tun.close()
        udp.close()
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def sa(spi: int, direction: Direction, **kw: object) -> SaSpec:
    args: dict[str, object] = dict(
        spi=spi, direction=direction, alg=Alg.AES128GCM16, key=os.urandom(20), esn=False,
        replay_window=64 if direction is Direction.IN else 0, reqid=7, local=LOCAL,
        remote=PEER, soft=Lifetime(), hard=Lifetime(),
        selectors=(Selector.from_networks(B, A) if direction is Direction.IN else Selector.from_networks(A, B),),
    )
    args.update(kw)
    return SaSpec(**args)  # type: ignore[arg-type]


def test_every_request_is_answered(worker: Worker) -> None:
    (r,) = worker.ask(lambda i: pipe.GetSpi(i, 0x1000, 0x1FFF))
    assert r.errno is Errno.OK and r.spi is not None and 0x1000 <= r.spi <= 0x1FFF
    spi = r.spi
    assert worker.ask(lambda i: pipe.Update(i, sa(spi, Direction.IN)))[0].errno is Errno.OK
    assert worker.ask(lambda i: pipe.Add(i, sa(0x2222, Direction.OUT)))[0].errno is Errno.OK
    pol = Policy(id=5, priority=1, action=Action.PROTECT, reqid=7, selector=Selector.from_networks(A, B))
    assert worker.ask(lambda i: pipe.SpdAdd(i, pol))[0].errno is Errno.OK
    d = worker.dump()
    assert {(s.spi, s.direction, s.state) for s in d.sas} == {(spi, Direction.IN, "mature"),
                                                             (0x2222, Direction.OUT, "mature")}
    assert [(p.id, p.out_spi) for p in d.policies] == [(5, 0x2222)]
    assert dict(d.drops)["replay"] == 0
    # answers that refuse: the state they name is checked
    assert worker.ask(lambda i: pipe.Update(i, sa(spi, Direction.IN)))[0].errno is Errno.ESTATE
    assert worker.ask(lambda i: pipe.Add(i, sa(0x2222, Direction.OUT)))[0].errno is Errno.EEXIST
    assert worker.ask(lambda i: pipe.Delete(i, 0x9999, Direction.IN))[0].errno is Errno.ENOENT
    assert worker.ask(lambda i: pipe.SpdDelete(i, 5))[0].errno is Errno.OK
    assert worker.ask(lambda i: pipe.SpdFlush(i))[0].errno is Errno.OK
    assert worker.ask(lambda i: pipe.Delete(i, 0x2222, Direction.OUT, PEER))[0].errno is Errno.OK
    assert worker.ask(lambda i: pipe.Flush(i))[0].errno is Errno.OK
    d = worker.dump()
    assert d.sas == () and d.policies == ()


def test_send_ike_goes_out_with_the_non_esp_marker(worker: Worker) -> None:
    peer = netns_socket(worker.ns, socket.AF_INET, socket.SOCK_DGRAM)
    with peer:
        peer.bind(("127.0.0.2", 4500))
        peer.settimeout(5)
        remote = Endpoint(ipaddress.ip_address("127.0.0.2"), 4500)
        assert worker.ask(lambda i: pipe.SendIke(i, b"ike-message", remote))[0].errno is Errno.OK
        data, src = peer.recvfrom(2048)
        assert data == b"\0\0\0\0ike-message" and src == ("127.0.0.1", 4500)
        # and IKE arriving on 4500 comes up the pipe without the marker
        peer.sendto(b"\0\0\0\0" + ike_message(b"answer"), ("127.0.0.1", 4500))
        msg = worker.recv()
        assert isinstance(msg, pipe.Ike) and msg.data == ike_message(b"answer") and msg.remote == remote
        # ESP for an SPI nobody has: INVALID_SPI, a hint upward
        peer.sendto((0x4242).to_bytes(4, "big") + bytes(40), ("127.0.0.1", 4500))
        msg = worker.recv()
        assert isinstance(msg, pipe.InvalidSpi) and msg.spi == 0x4242 and msg.remote == remote


def _ike_sa_init(length: int) -> bytes:
    """An IKE_SA_INIT request header padded to ``length`` bytes (its length field says so)."""
    head = bytes(range(0xA0, 0xA8)) + bytes(8) + bytes([33, 0x20, 34, 0x08]) + bytes(4)
    return head + length.to_bytes(4, "big") + bytes(length - 28)


def _ike(exchange: int, flags: int) -> bytes:
    """A bare IKE header of an established IKE SA (both SPIs): an exchange, its flags."""
    return bytes(range(0xA0, 0xB0)) + bytes([0, 0x20, exchange, flags]) + struct.pack("!II", 1, 28)


INIT_RESPONSE, AUTH_RESPONSE = _ike(34, 0x20), _ike(35, 0x20)


def test_ike_from_port_500_on_4500_needs_no_marker(worker: Worker) -> None:
    # strongSwan with remote_port = 4500 sends its IKE_SA_INIT from 500 to 4500 without the
    # marker (its sender marks only when neither port is 500); its receiver takes unmarked
    # IKE there, and the answer goes back to 500 unmarked; it floats to 4500 after it.  The IKE
    # event says it came unmarked; the control process says the answer leaves so (SEND_IKE's
    # unmarked: review revcsmall F1), from any port (a NAT may give the client's 500 another: F3)
    ike = _ike_sa_init(120)
    from500 = netns_socket(worker.ns, socket.AF_INET, socket.SOCK_DGRAM)
    from4500 = netns_socket(worker.ns, socket.AF_INET, socket.SOCK_DGRAM)
    with from500, from4500:
        from500.bind(("127.0.0.2", 500))
        from4500.bind(("127.0.0.2", 4500))
        from500.settimeout(5)
        from500.sendto(ike, ("127.0.0.1", 4500))
        msg = worker.recv()
        remote = Endpoint(ipaddress.ip_address("127.0.0.2"), 500)
        assert isinstance(msg, pipe.Ike) and msg.data == ike and msg.remote == remote and msg.unmarked
        assert worker.ask(lambda i: pipe.SendIke(i, INIT_RESPONSE, remote, unmarked=True))[0].errno is Errno.OK
        data, src = from500.recvfrom(2048)
        assert data == INIT_RESPONSE and src == ("127.0.0.1", 4500)
        # the worker marks what the control process does not say otherwise, to port 500 too
        assert worker.ask(lambda i: pipe.SendIke(i, INIT_RESPONSE, remote))[0].errno is Errno.OK
        data, src = from500.recvfrom(2048)
        assert data == b"\0\0\0\0" + INIT_RESPONSE and src == ("127.0.0.1", 4500)
        # from 500, a datagram that is no whole IKE header is taken as ESP: too short, counted
        before = dict(worker.dump().drops)["malformed"]
        from500.sendto(ike[:27], ("127.0.0.1", 4500))
        # the whole request from 4500 is IKE too, said unmarked
        from4500.sendto(ike, ("127.0.0.1", 4500))
        msg = worker.recv()
        assert isinstance(msg, pipe.Ike) and msg.data == ike and msg.unmarked
        assert msg.remote == Endpoint(ipaddress.ip_address("127.0.0.2"), 4500)
        # a header that is no IKE_SA_INIT request (a responder SPI) from 4500 is ESP (here for an
        # SPI nobody has: INVALID_SPI)
        from4500.sendto(ike[:12] + b"\1" + ike[13:], ("127.0.0.1", 4500))
        msg = worker.recv()
        assert isinstance(msg, pipe.InvalidSpi) and msg.spi == 0xA0A1A2A3
        assert msg.remote == Endpoint(ipaddress.ip_address("127.0.0.2"), 4500)
        assert dict(worker.dump().drops)["malformed"] == before + 1


def test_a_natt_client_on_public_port_500_gets_its_esp_and_marked_ike_through(worker: Worker) -> None:
    """Review revcpath R2: a NAT that maps a client's port 4500 to public port 500.  Its ESP and its
    marked IKE come from port 500; before, the worker took every datagram from port 500 for unmarked
    IKE (both were malformed drops) and sent our IKE there unmarked (the client's kernel reads that
    as ESP).  The marker decides, from any port; only an IKE_SA_INIT response goes to 500 unmarked."""
    key = os.urandom(20)
    assert worker.ask(lambda i: pipe.GetSpi(i, 0x7300, 0x7300))[0].spi == 0x7300
    assert worker.ask(lambda i: pipe.Update(i, sa(0x7300, Direction.IN, key=key)))[0].errno is Errno.OK
    client = netns_socket(worker.ns, socket.AF_INET, socket.SOCK_DGRAM)
    with client:
        client.bind(("127.0.0.2", 500))
        client.settimeout(5)
        remote = Endpoint(ipaddress.ip_address("127.0.0.2"), 500)
        for seq in (1, 2, 3):
            client.sendto(esp_seal(key, 0x7300, seq, ipv4_udp("10.2.0.5", "10.1.0.5", b"esp"), 4),
                          ("127.0.0.1", 4500))
        auth = ike_message(b"IKE_AUTH, marked", message_id=1)
        client.sendto(b"\0\0\0\0" + auth, ("127.0.0.1", 4500))
        msg = worker.recv()
        assert isinstance(msg, pipe.Ike) and msg.data == auth and msg.remote == remote and not msg.unmarked
        (ours,) = [s for s in worker.dump().sas if s.spi == 0x7300]
        assert (ours.counters["packets"], ours.counters["auth_drops"]) == (3, 0)
        assert dict(worker.dump().drops)["malformed"] == 0
        # our answer goes back marked, as the client's own port 4500 takes IKE
        assert worker.ask(lambda i: pipe.SendIke(i, AUTH_RESPONSE, remote))[0].errno is Errno.OK
        data, src = client.recvfrom(2048)
        assert data == b"\0\0\0\0" + AUTH_RESPONSE and src == ("127.0.0.1", 4500)


def getspi_kept(i: int) -> pipe.GetSpi:
    # larval_seconds=0: none of them expires (and frees its SPI) however slow the machine
    return pipe.GetSpi(i, 0x10000, 0x107FF, larval_seconds=0)


def test_concurrent_getspi_are_unique(worker: Worker) -> None:
    # 1000 requests in flight at once: a thread sends while we read
    ids = list(range(worker.next_id, worker.next_id + 1000))
    sender = threading.Thread(target=lambda: [worker.send(getspi_kept) for _ in ids])
    sender.start()
    spis = {}
    while len(spis) < len(ids):
        msg = worker.recv()
        if isinstance(msg, pipe.Reply):
            assert msg.errno is Errno.OK
            spis[msg.req_id] = msg.spi
    sender.join()
    assert set(spis) == set(ids)
    assert len(set(spis.values())) == 1000
    # the range has 2048 SPIs; 1000 taken, so 1048 more fit and then it is full
    for _ in range(1048):
        assert worker.ask(getspi_kept)[0].errno is Errno.OK
    assert worker.ask(getspi_kept)[0].errno is Errno.ENOSPC


def test_malformed_messages_are_refused_and_change_nothing(worker: Worker) -> None:
    assert worker.ask(lambda i: pipe.Add(i, sa(0x3333, Direction.OUT)))[0].errno is Errno.OK
    before = worker.dump()
    good = pipe.encode(pipe.Delete(99, 0x3333, Direction.OUT, PEER))
    for bad in (good[:-4], good[:16] + b"\xff" * 20, b"\x01" * 3, good[:1] + b"\x63" + good[2:],
                b"\x07" + good[1:]):
        worker.chan.send(bad)
    # each readable header gets an answer (each awaited up to the channel's 10 s, a bound for a hang),
    # then 2 s of silence: the 3-byte datagram has no header to answer
    answers = [worker.chan.recv(65536) for _ in range(4)]
    worker.chan.settimeout(2)
    with pytest.raises(TimeoutError):
        worker.chan.recv(65536)
    worker.chan.settimeout(10)
    # flagged REPLY, with an error code (not OK)
    for a in answers:
        _version, _type, errno, _req_id, flags = struct.unpack("!BBHIB", a[:9])
        assert flags & 1 and errno != 0
    after = worker.dump()
    assert [(s.spi, s.state) for s in after.sas] == [(s.spi, s.state) for s in before.sas]


def test_larval_sa_that_is_never_updated_expires(worker: Worker) -> None:
    (r,) = worker.ask(lambda i: pipe.GetSpi(i, 0x5000, 0x5000))
    assert r.spi == 0x5000
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        msg = worker.recv()
        if isinstance(msg, pipe.Expire):
            assert (msg.spi, msg.hard, msg.reason) == (0x5000, True, pipe.ExpireReason.LARVAL_TIMEOUT)
            break
    else:
        pytest.fail("no EXPIRE for the larval SA")
    assert worker.dump().sas == ()
    # its SPI is free again
    assert worker.ask(lambda i: pipe.GetSpi(i, 0x5000, 0x5000))[0].spi == 0x5000


def test_garbage_on_the_esp_socket_is_counted_and_survived(worker: Worker) -> None:
    """Random and mutated datagrams at the worker's real UDP socket: each one a counted
    drop (or, with the non-ESP marker, an IKE event), the worker still answering."""
    spi = worker.ask(lambda i: pipe.GetSpi(i, 0x7000, 0x7000))[0].spi
    assert spi is not None
    assert worker.ask(lambda i: pipe.Update(i, sa(spi, Direction.IN)))[0].errno is Errno.OK
    rng = random.Random(1234)
    sender = netns_socket(worker.ns, socket.AF_INET, socket.SOCK_DGRAM)
    sent = 0
    with sender:
        sender.bind(("127.0.0.2", 4500))
        for n in range(2000):
            size = rng.choice([1, 2, 7, 8, 35, 36, 60, 200, 1400])
            data = bytearray(rng.randbytes(size))
            if n % 3 == 0 and size >= 8:
                data[:4] = spi.to_bytes(4, "big")       # our SPI, garbage after it: ICV failure or malformed
            if data[:4] == b"\0\0\0\0":
                data[0] = 1                              # keep the non-ESP marker out of this test
            sender.sendto(bytes(data), ("127.0.0.1", 4500))
            sent += 1
        deadline = time.monotonic() + 10
        total = 0
        while time.monotonic() < deadline:
            drops = dict(worker.dump().drops)
            # an INVALID_SPI event withheld or without room is counted on top of its packet's no_sa
            on_top = drops["queue_full"] + drops["invalid_spi_source_limit"] + drops["invalid_spi_rate_limit"]
            total = sum(drops.values()) - on_top
            if total >= sent:
                break
            time.sleep(0.1)
    assert total == sent, drops
    assert drops["auth"] > 0 and drops["malformed"] > 0 and drops["no_sa"] > 0
    assert drops["invalid_spi_source_limit"] > 0   # one sender: one hint a second at most
    assert worker.proc.poll() is None
    (info,) = [s for s in worker.dump().sas if s.spi == spi]
    assert info.counters["packets"] == 0 and info.counters["auth_drops"] == drops["auth"]


def test_a_larval_sa_asked_never_to_expire_is_not_expired(worker: Worker) -> None:
    """The IKE service's pool asks for larval_seconds=0: such an SPI is never
    expired under the negotiation it is handed to.  One asked for first with 0
    and one after it with the worker's default (1 s here): the second expires,
    the first is still there, larval, and can be completed."""
    assert worker.ask(lambda i: pipe.GetSpi(i, 0x5100, 0x5100, larval_seconds=0))[0].spi == 0x5100
    assert worker.ask(lambda i: pipe.GetSpi(i, 0x5101, 0x5101))[0].spi == 0x5101
    deadline = time.monotonic() + 10
    expired = []
    while time.monotonic() < deadline and 0x5101 not in expired:
        msg = worker.recv()
        if isinstance(msg, pipe.Expire):
            expired.append(msg.spi)
    assert expired == [0x5101]
    assert [(s.spi, s.state) for s in worker.dump().sas] == [(0x5100, "larval")]
    assert "00005100" not in worker.log.read_text() and "00005101 never completed" in worker.log.read_text()
    assert worker.ask(lambda i: pipe.Update(i, sa(0x5100, Direction.IN)))[0].errno is Errno.OK


def test_an_empty_non_esp_marker_is_a_counted_drop(worker: Worker) -> None:
    """Four zero bytes on port 4500: the non-ESP marker with no IKE message
    after it; or bytes after it that are no whole IKE header of their length.
    Counted malformed drops, no event, no traceback; the next IKE message
    still comes up."""
    peer = netns_socket(worker.ns, socket.AF_INET, socket.SOCK_DGRAM)
    with peer:
        peer.bind(("127.0.0.2", 4500))
        before = dict(worker.dump().drops)["malformed"]
        peer.sendto(b"\0\0\0\0", ("127.0.0.1", 4500))
        peer.sendto(b"\0\0\0\0junk", ("127.0.0.1", 4500))
        peer.sendto(b"\0\0\0\0" + ike_message(b"after"), ("127.0.0.1", 4500))
        msg = worker.recv()
        assert isinstance(msg, pipe.Ike) and msg.data == ike_message(b"after")
    assert dict(worker.dump().drops)["malformed"] == before + 2
    assert worker.proc.poll() is None
    assert "Traceback" not in worker.log.read_text()


def test_the_first_authenticated_packet_of_an_armed_sa_is_reported_once(worker: Worker) -> None:
    """UPDATE with report_first_use arms an inbound SA: the first ESP packet that passes
    its ICV raises one FIRST_USE on the pipe (a rekey responder's proof that the peer sends
    on the new SA).  A forgery, an unarmed SA and the packets after the first raise none."""
    key = os.urandom(20)
    armed, plain, barrier = 0x7100, 0x7101, 0x7102
    for spi in (armed, plain, barrier):
        assert worker.ask(lambda i, s=spi: pipe.GetSpi(i, s, s))[0].spi == spi  # type: ignore[misc]
        spec = sa(spi, Direction.IN, key=key, report_first_use=spi != plain)
        assert worker.ask(lambda i, s=spec: pipe.Update(i, s))[0].errno is Errno.OK  # type: ignore[misc]
    inner = ipv4_udp("10.2.0.5", "10.1.0.5", b"first")
    events: list[pipe.Message] = []

    def until(done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 10
        while not done() and time.monotonic() < deadline:
            msg = worker.recv()
            if not isinstance(msg, pipe.Reply):
                events.append(msg)

    peer = netns_socket(worker.ns, socket.AF_INET, socket.SOCK_DGRAM)
    with peer:
        peer.bind(("127.0.0.2", 4500))
        forged = bytearray(esp_seal(key, armed, 1, inner, 4))
        forged[-1] ^= 1
        peer.sendto(bytes(forged), ("127.0.0.1", 4500))
        for seq in (1, 2, 3):
            peer.sendto(esp_seal(key, plain, seq, inner, 4), ("127.0.0.1", 4500))
            peer.sendto(esp_seal(key, armed, seq, inner, 4), ("127.0.0.1", 4500))
        until(lambda: any(isinstance(e, pipe.FirstUse) for e in events))
        # events come up in order: once the barrier SA's report is here, any second report of
        # the armed one would be too
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            counts = {s.spi: (s.counters["packets"], s.counters["auth_drops"]) for s in worker.dump().sas}
            if counts[armed][0] + counts[plain][0] == 6:
                break
            time.sleep(0.05)
        assert counts[armed] == (3, 1) and counts[plain] == (3, 0)
        peer.sendto(esp_seal(key, barrier, 1, inner, 4), ("127.0.0.1", 4500))
        until(lambda: pipe.FirstUse(spi=barrier) in events)
    assert [e for e in events if isinstance(e, pipe.FirstUse)] == [pipe.FirstUse(spi=armed),
                                                                   pipe.FirstUse(spi=barrier)]


def test_migrate_moves_an_outbound_sa_to_its_peers_new_endpoint(worker: Worker) -> None:
    """NAT rebinding / MOBIKE: after MIGRATE the worker's ESP for the SA goes to the peer's
    new address and port, with the same keys and the sequence numbers going on; the old
    endpoint gets nothing more.  The SA is then known by its new peer only."""
    key = os.urandom(20)
    assert worker.ask(lambda i: pipe.Add(i, sa(0x7200, Direction.OUT, key=key)))[0].errno is Errno.OK
    pol = Policy(id=9, priority=1, action=Action.PROTECT, reqid=7, selector=Selector.from_networks(A, B))
    assert worker.ask(lambda i: pipe.SpdAdd(i, pol))[0].errno is Errno.OK
    for cmd in (["addr", "add", "10.1.0.1/24", "dev", "tsw0"], ["link", "set", "tsw0", "up"],
                ["route", "add", str(B), "dev", "tsw0"]):
        subprocess.run(["ip", "-n", worker.ns, *cmd], check=True)
    moved = Endpoint(ipaddress.ip_address("127.0.0.3"), 40001)
    old_peer = netns_socket(worker.ns, socket.AF_INET, socket.SOCK_DGRAM)
    new_peer = netns_socket(worker.ns, socket.AF_INET, socket.SOCK_DGRAM)
    app = netns_socket(worker.ns, socket.AF_INET, socket.SOCK_DGRAM)
    with old_peer, new_peer, app:
        old_peer.bind(("127.0.0.2", 4500))
        new_peer.bind(("127.0.0.3", 40001))
        for s in (old_peer, new_peer):
            s.settimeout(5)
        app.sendto(b"before", ("10.2.0.5", 9))
        esp, src = old_peer.recvfrom(2048)
        assert src == ("127.0.0.1", 4500) and esp[:8] == struct.pack("!II", 0x7200, 1)
        assert worker.ask(lambda i: pipe.Migrate(i, 0x7200, Direction.OUT, moved, PEER))[0].errno is Errno.OK
        app.sendto(b"after", ("10.2.0.5", 9))
        esp, src = new_peer.recvfrom(2048)
        assert src == ("127.0.0.1", 4500) and esp[:8] == struct.pack("!II", 0x7200, 2)
        old_peer.settimeout(0.2)
        with pytest.raises(TimeoutError):
            old_peer.recvfrom(2048)
    # the old name is gone, the new one answers; an SA that is not there is ENOENT
    assert worker.ask(lambda i: pipe.Migrate(i, 0x7200, Direction.OUT, moved, PEER))[0].errno is Errno.ENOENT
    assert worker.ask(lambda i: pipe.Delete(i, 0x7200, Direction.OUT, moved))[0].errno is Errno.OK


def test_every_per_sa_counter_of_the_header_reaches_status_and_metrics(worker: Worker) -> None:
    """Nothing between the C header and the user names a per-SA counter: each member of
    enum ts_sa_counter is in a real worker's DUMP, in `tunsec status` (JSON and text) and
    in a metric, with the SA's own count (an ICV failure counted in C shows as 1)."""
    header = [n.removeprefix("TS_CTR_").lower()
              for n, v in sorted(ffi.typeof("enum ts_sa_counter").relements.items(), key=lambda kv: kv[1])
              if n != "TS_CTR__COUNT"]
    (r,) = worker.ask(lambda i: pipe.GetSpi(i, 0x1000, 0x1FFF))
    assert r.spi is not None
    spi = r.spi
    assert worker.ask(lambda i: pipe.Update(i, sa(spi, Direction.IN)))[0].errno is Errno.OK
    assert worker.ask(lambda i: pipe.Add(i, sa(0x2222, Direction.OUT)))[0].errno is Errno.OK
    with netns_socket(worker.ns, socket.AF_INET, socket.SOCK_DGRAM) as sender:
        esp = spi.to_bytes(4, "big") + (1).to_bytes(4, "big") + bytes(56)   # our SPI, sequence 1, a bad ICV
        sender.sendto(esp, ("127.0.0.1", 4500))
    deadline = time.monotonic() + 10
    dump = worker.dump()
    while not dict(dump.drops)["auth"] and time.monotonic() < deadline:
        time.sleep(0.05)
        dump = worker.dump()
    assert [list(s.counters) for s in dump.sas] == [header, header]
    doc = {"sas": [status.sa_status(s) for s in dump.sas], "tunnels": [], "policies": []}
    inbound = next(s for s in doc["sas"] if s["direction"] == "in")
    assert {n: inbound[n] for n in header} == next(s.counters for s in dump.sas if s.spi == spi)
    assert inbound["auth_drops"] == 1
    text = status.sa_counters_text(inbound)
    families = scraped_sa_families(doc)
    metrics = {s.name: s for f in families for s in f.samples if s.labels["spi"] == f"{spi:08x}"}
    for name in header:
        shown = name.removesuffix("_drops") if name.endswith("_drops") else name
        assert re.search(rf"\b{inbound[name]} {shown}\b|\b{shown} {inbound[name]}\b", text), (name, text)
        if name.endswith("_drops"):
            (sample,) = [s for f in families for s in f.samples
                         if s.labels["spi"] == f"{spi:08x}" and s.labels.get("reason") == shown]
            assert sample.name == "tunsec_child_sa_drops_total" and sample.value == inbound[name]
        else:
            assert metrics[f"tunsec_child_sa_{name}_total"].value == inbound[name]


def scraped_sa_families(doc: dict[str, Any]) -> list[Metric]:
    """The per-SA families as a scraper reads them: written as the exposition text, parsed by
    prometheus_client's own parser."""
    body = exposition.encode(generate_latest, asyncio.run(sa_families(doc)), CollectorRegistry())
    return list(text_string_to_metric_families(body.decode()))


def _pipe_ike_drops(drops: dict[str, int]) -> int:
    """IKE events the worker's pipe writer dropped: over their sender's share, or over its bounds."""
    return drops.get("pipe_ike_full", 0) + drops.get("pipe_ike_source_full", 0)


def test_an_ike_flood_the_control_process_does_not_read_loses_no_expire(worker: Worker) -> None:
    """Unauthenticated IKE datagrams to port 4500 while the control process reads nothing: the
    worker keeps a bounded number of them (the rest dropped and counted), answers DUMP ahead of
    them, and every peer's soft and hard EXPIRE, time (outbound) and packet (inbound) lifetimes,
    comes up ahead of them too."""
    key = os.urandom(20)
    assert worker.ask(lambda i: pipe.GetSpi(i, 0x7300, 0x7300))[0].spi == 0x7300
    by_packets = sa(0x7300, Direction.IN, key=key, soft=Lifetime(packets=2), hard=Lifetime(packets=3))
    assert worker.ask(lambda i: pipe.Update(i, by_packets))[0].errno is Errno.OK
    events: list[pipe.Message] = []

    def dump() -> pipe.Reply:
        """DUMP, keeping the events read before its answer."""
        req_id = worker.send(lambda r: pipe.Dump(r))
        replies: list[pipe.Reply] = []
        while not replies or replies[-1].more:
            msg = worker.recv()
            if isinstance(msg, pipe.Reply) and msg.req_id == req_id:
                replies.append(msg)
            elif not isinstance(msg, pipe.Reply):
                events.append(msg)
        return pipe.join_dump_replies(replies)

    # from 8 addresses: the fast path queues at most 32 IKE datagrams per sender address, and the
    # backlog this is about is the pipe's (where each again keeps 32: pipe_ike_source_full)
    flooders = [netns_socket(worker.ns, socket.AF_INET, socket.SOCK_DGRAM) for _ in range(8)]
    peer = netns_socket(worker.ns, socket.AF_INET, socket.SOCK_DGRAM)
    sent = 0

    def flood(count: int) -> None:
        nonlocal sent
        for _ in range(count):
            datagram = bytearray(_ike_sa_init(1200))
            datagram[:4] = sent.to_bytes(4, "big")   # distinct, as a flood's are
            flooders[sent % len(flooders)].sendto(datagram, ("127.0.0.1", 4500))
            sent += 1
            if sent % 200 == 0:
                time.sleep(0.002)   # the worker's socket buffer empties: the backlog is the pipe's

    with contextlib.ExitStack() as stack:
        for i, flooder in enumerate(flooders):
            stack.enter_context(flooder).bind((f"127.0.0.{10 + i}", 500))
        stack.enter_context(peer).bind(("127.0.0.2", 4500))
        flood(10_000)   # more than the worker held before (8,192 events of any kind)
        deadline = time.monotonic() + 30
        while not _pipe_ike_drops(dict(dump().drops)) and time.monotonic() < deadline:
            flood(500)
        by_time = sa(0x2222, Direction.OUT, soft=Lifetime(seconds=1), hard=Lifetime(seconds=2))
        assert worker.ask(lambda i: pipe.Add(i, by_time))[0].errno is Errno.OK
        seq = 0

        def esp(count: int) -> None:   # soft at the 2nd packet, hard at the first past 3
            nonlocal seq
            for _ in range(count):
                seq += 1
                peer.sendto(esp_seal(key, 0x7300, seq, ipv4_udp("10.2.0.5", "10.1.0.5", b"x"), 4),
                            ("127.0.0.1", 4500))
        esp(4)
        # the flood goes on until both SAs reached their hard lifetime (removed: their EXPIREs were sent); the
        # peer's ESP goes on too, one a round: the flood keeps the worker's socket full, which may drop one
        while {s.spi for s in dump().sas} & {0x7300, 0x2222} and time.monotonic() < deadline:
            flood(300)
            esp(1)
    expires = [(e.spi, e.hard, e.reason) for e in events if isinstance(e, pipe.Expire)]
    time_, packets = pipe.ExpireReason.TIME, pipe.ExpireReason.PACKETS
    assert sorted(expires) == [(0x2222, False, time_), (0x2222, True, time_),
                               (0x7300, False, packets), (0x7300, True, packets)]
    drops = dict(dump().drops)
    ike = sum(isinstance(e, pipe.Ike) for e in events)
    assert _pipe_ike_drops(drops) > 0 and drops["pipe_event_full"] == 0
    assert ike + _pipe_ike_drops(drops) + drops["queue_full"] + drops["ike_source_limit"] <= sent
    assert "Traceback" not in worker.log.read_text()
