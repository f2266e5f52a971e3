"""An established tunnel's IKE gets through a spoofed flood of IKE to port 4500 (the reserve of
established IKE SAs, IKE_SPI_ADD: docs/pipe.md).

tunsec A initiates (dpd_delay = 1s: it checks B's liveness whenever B was silent for a second) and
B responds.  B's control process is stopped (SIGSTOP: it reads nothing, so every IKE event waits in
B's worker, the situation a flood creates when the control process is slower than it), and a raw
socket in A's namespace floods B's port 4500 with well-formed IKE headers of unknown SPIs behind the
non-ESP marker, from 64 spoofed addresses.  A's DPD arrives in the middle of it (counted by an
nftables rule in B's namespace), and thousands more flood datagrams after it: far more than B's
queues hold, so without a reserve the DPD would be pushed out.  A retransmits only after 60 s
(retransmit_timeout), so an answer from B (counted by a second rule) can only be to the DPD that
arrived during the flood.  Then B's drop counters: the flood's were dropped, the established SA's
were not, and both sides keep the same IKE SA.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import replace

import pytest
from ike_peers import Conn, TunsecIke

from tunsec.bench.netns import Host, TwoHosts, wait_until

SPOOFED = [f"198.51.100.{n}" for n in range(1, 65)]
AFTER_DPD = 4000   # flood datagrams after the DPD: several times what B's worker can hold


@pytest.fixture
def topo() -> Iterator[TwoHosts]:
    with TwoHosts(ipv6=False) as t:
        yield t


def _ipv4_udp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0)  # checksum 0: none (IPv4)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp) + len(payload), 0, 0, 64, socket.IPPROTO_UDP, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))  # the kernel fills in id and checksum
    return ip + udp + payload


def junk_ike(rng: random.Random) -> bytes:
    """Marker + a well-formed IKE header (an INFORMATIONAL under random SPIs) and an SK payload's worth."""
    body = rng.randbytes(96)
    header = rng.randbytes(16) + struct.pack("!BBBBII", 46, 0x20, 37, 0x08, rng.getrandbits(31), 28 + len(body))
    return bytes(4) + header + body


class Flood:
    """Spoofed IKE to B's port 4500 from a thread in A's namespace until stop(); ``sent`` counts them."""

    def __init__(self, topo: TwoHosts) -> None:
        self.topo = topo
        self.sent = 0
        self._stop = threading.Event()
        self._raw = topo.socket(topo.a, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        rng = random.Random(7)
        while not self._stop.is_set():
            src = SPOOFED[self.sent % len(SPOOFED)]
            packet = _ipv4_udp(src, self.topo.b.outer4, 4500 + self.sent % 7, 4500, junk_ike(rng))
            try:
                self._raw.sendto(packet, (self.topo.b.outer4, 0))
                self.sent += 1
            except OSError:   # ENOBUFS: the veth is full for a moment
                self._stop.wait(0.001)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._raw.close()


def count_ike(topo: TwoHosts) -> None:
    """nftables counters in B: IKE (marker) from A's own address, and IKE responses (R flag) B sends to it."""
    a, b = topo.a.outer4, topo.b.outer4
    marked = "udp dport 4500 @th,64,32 0"   # the non-ESP marker: IKE, not ESP
    script = f"""table ip ikewatch {{
  counter from_peer {{}}
  counter answers {{}}
  chain in {{
    type filter hook input priority 0;
    ip saddr {a} ip daddr {b} {marked} counter name from_peer;
  }}
  chain out {{
    type filter hook output priority 0;
    ip daddr {a} udp sport 4500 @th,64,32 0 @th,248,8 & 0x20 == 0x20 counter name answers;
  }}
}}
"""
    nft_load(topo, topo.b, "ikewatch.nft", script)


def nft_load(topo: TwoHosts, host: Host, name: str, script: str) -> None:
    rules = topo.workdir / name
    rules.write_text(script)
    topo.run(host, ["nft", "-f", str(rules)])


def counted(topo: TwoHosts, name: str, table: str = "ikewatch", host: Host | None = None) -> int:
    """Packets of the nftables counter name in table (in B unless host says)."""
    doc = json.loads(topo.run(host or topo.b, ["nft", "-j", "list", "counter", "ip", table, name]).stdout)
    (counter,) = [o["counter"] for o in doc["nftables"] if "counter" in o]
    packets: int = counter["packets"]
    return packets


def test_an_established_peers_dpd_gets_through_a_spoofed_flood_from_64_addresses(topo: TwoHosts) -> None:
    a = TunsecIke(topo, replace(Conn(topo.a, topo.b, start_action="start"), extra_conn="    dpd_delay = 1s\n"),
                  tunsec_extra="  retransmit_timeout = 60\n")
    b = TunsecIke(topo, Conn(topo.b, topo.a))
    b.start()
    a.start()
    sa_a, sa_b = a.wait_established(), b.wait_established()
    spis = (sa_a["spi_i"], sa_a["spi_r"])
    assert (sa_b["spi_i"], sa_b["spi_r"]) == spis
    # B's reverse path to the spoofed sources (else rp_filter drops them before the worker)
    topo.run(topo.b, ["ip", "route", "add", "198.51.100.0/24", "via", topo.a.outer4])
    count_ike(topo)
    assert b.proc is not None
    assert b.status()["worker"]["gauges"]["ike_spis"] == 1

    os.kill(b.proc.pid, signal.SIGSTOP)
    try:
        flood = Flood(topo)
        try:
            arrived = counted(topo, "from_peer")
            assert wait_until(lambda: counted(topo, "from_peer") > arrived, 15), "no DPD from A"
            answers = counted(topo, "answers")
            more = flood.sent + AFTER_DPD
            assert wait_until(lambda: flood.sent >= more, 60)
        finally:
            flood.stop()
    finally:
        os.kill(b.proc.pid, signal.SIGCONT)
    # A retransmits only after 60 s: an answer now is to a request that arrived during the flood
    assert wait_until(lambda: counted(topo, "answers") > answers, 30), b.log_tail()
    drops = b.status()["drops"]
    flooded = ("queue_full", "ike_source_limit", "pipe_ike_full", "pipe_ike_source_full")
    assert sum(drops[k] for k in flooded) > 0, drops
    known = ("ike_known_full", "ike_known_share", "ike_known_source", "pipe_ike_known_full", "pipe_ike_known_share",
             "pipe_ike_known_source")
    assert {k: drops[k] for k in known} == dict.fromkeys(known, 0)
    for side in (a, b):
        assert [(sa["spi_i"], sa["spi_r"], sa["state"]) for sa in side.ike_sas()] == [(*spis, "established")]
