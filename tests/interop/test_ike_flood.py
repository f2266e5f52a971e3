"""A flood of hostile IKE datagrams at a tunsec responder that carries a strongSwan tunnel.

tunsec (namespace A) is the responder of an IKE SA that charon (namespace B,
kernel-libipsec) initiated; a ping runs through the tunnel all along. From B, a
raw socket sends a bounded flood of unauthenticated IKE datagrams to A's UDP 500
and 4500 (there with the non-ESP marker), from spoofed sources: the configured
peer's own address with other ports, and addresses of 198.51.100.0/24 (routed
back to B, which does not forward, so tunsec's answers go nowhere). Shapes: a
28-byte header announcing a payload it lacks, well-formed IKE_SA_INIT requests
with a non-zero message ID, well-formed requests under fresh SPIs (these make
half-open SAs up to the cookie threshold, COOKIE answers above it), IKE_AUTH and
responses to unknown SPIs, and random bytes.

Afterwards: the tunnel still carries pings, `tunsec status --json` shows only the
established IKE SA once the (short) half-open timeout has passed, the control
process's resident memory is where it was after a warm-up flood, and charon can
terminate and initiate again.
"""

from __future__ import annotations

import errno
import random
import re
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ike_peers import CHILD, CONN, PSK, Charon, Conn, TunsecIke, ident, ping_both_ways, requires_strongswan

from tunsec.bench.netns import TwoHosts, wait_until
from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.endpoint import COOKIE_CALMDOWN_DELAY, IkeEndpoint
from tunsec.ike.identity import Identity
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.secret import Secret

pytestmark = [
    pytest.mark.interop,
    requires_strongswan,
]

HALF_OPEN_TIMEOUT = 2.0
COOKIE_THRESHOLD = 30
FLOOD = 20_000
WARMUP = 4_000
SPOOFED_NET = "198.51.100.0/24"
RSS_SLACK_KB = 6 * 1024  # the control process may not grow by more than this over the main flood


@pytest.fixture
def topo() -> Iterator[TwoHosts]:
    with TwoHosts(ipv6=False) as t:
        yield t


def init_request(topo: TwoHosts, proposals: str) -> bytes:
    """A genuine IKE_SA_INIT request for the connection, made by tunsec's engine as an initiator."""
    cfg = IkeConfig(
        "flood",
        LocalAuth("psk", Identity.parse(ident(topo.b))),
        RemoteAuth("psk", Identity.parse(ident(topo.a))),
        parse_proposals(proposals),
        (child_config(CHILD, topo.b.inner_net4, topo.a.inner_net4, "aes128gcm16"),),
        psk=Secret(PSK.encode()),
        local_addr=topo.b.outer4,
        remote_addr=topo.a.outer4,
    )
    endpoint = IkeEndpoint([cfg])
    endpoint.initiate("flood", CHILD, 0.0)
    return endpoint.datagrams_to_send(0.0)[0].data


def _ike_header(spi_i: bytes, spi_r: bytes, nxt: int, exchange: int, flags: int, msg_id: int, body: bytes) -> bytes:
    return spi_i + spi_r + struct.pack("!BBBBII", nxt, 0x20, exchange, flags, msg_id, 28 + len(body)) + body


def hostile_datagrams(rng: random.Random, request: bytes, peer: str, n: int) -> Iterator[tuple[str, int, bytes]]:
    """(source address, source port, IKE message) of ``n`` hostile datagrams, shapes in turn."""

    def spoofed() -> str:
        return f"198.51.100.{rng.randrange(1, 255)}"

    def port() -> int:
        return rng.randrange(1024, 65000)

    def spi() -> bytes:
        return rng.randbytes(8)

    shapes = [
        # the 28-byte datagram: IKE_SA_INIT announcing an SA payload it does not have
        lambda: (peer, port(), _ike_header(spi(), bytes(8), 33, 34, 0x08, 0, b"")),
        # a well-formed IKE_SA_INIT request with a non-zero message ID
        lambda: (peer, port(), request[:20] + struct.pack("!I", rng.randrange(1, 1 << 32)) + request[24:]),
        # well-formed requests under fresh SPIs: half-open SAs, then COOKIEs
        lambda: (spoofed(), port(), spi() + request[8:]),
        lambda: (peer, port(), spi() + request[8:]),
        # IKE_AUTH to an SPI nobody has, and responses nobody asked for
        lambda: (spoofed(), port(), _ike_header(spi(), spi(), 46, 35, 0x08, 1, b"\0\0\0\x24" + rng.randbytes(32))),
        lambda: (peer, port(), _ike_header(spi(), spi(), 0, 37, 0x20, 3, b"")),
        lambda: (spoofed(), port(), _ike_header(spi(), bytes(8), 0, 34, 0x20, 0, b"")),
        # garbage
        lambda: (spoofed(), port(), rng.randbytes(rng.randrange(0, 120))),
    ]
    for i in range(n):
        yield shapes[i % len(shapes)]()


def _ipv4_udp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0)  # checksum 0: none (IPv4)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp) + len(payload), 0, 0, 64, socket.IPPROTO_UDP, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))  # the kernel fills in id and checksum
    return ip + udp + payload


def flood(topo: TwoHosts, request: bytes, n: int, seed: int, ports: tuple[int, ...] = (500, 4500)) -> int:
    """Send ``n`` hostile datagrams from B to A's ``ports`` in turn; how many left."""
    rng = random.Random(seed)
    raw = topo.socket(topo.b, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    sent = 0
    try:
        for i, (src, sport, ike) in enumerate(hostile_datagrams(rng, request, topo.b.outer4, n)):
            dport = ports[i % len(ports)]
            data = bytes(4) + ike if dport == 4500 else ike  # the non-ESP marker on 4500
            packet = _ipv4_udp(src, topo.a.outer4, sport, dport, data)
            for _ in range(100):
                try:
                    raw.sendto(packet, (topo.a.outer4, 0))
                    sent += 1
                    break
                except OSError as err:
                    if err.errno not in (errno.ENOBUFS, errno.EAGAIN):
                        raise
                    time.sleep(0.001)
    finally:
        raw.close()
    return sent


def rss_kb(pid: int) -> int:
    m = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    assert m, f"no VmRSS for {pid}"
    return int(m.group(1))


def settled(tunsec: TunsecIke, spis: tuple[str, str]) -> bool:
    """Only the established IKE SA is left and nothing is half-open."""
    doc = tunsec.status()
    return doc["ike_half_open"] == 0 and [(sa["spi_i"], sa["spi_r"], sa["state"]) for sa in doc["ike_sas"]] == [
        (*spis, "established")
    ]


def drops(tunsec: TunsecIke) -> dict[str, int]:
    counters: dict[str, int] = tunsec.status()["ike_drops"]
    return counters


def test_flood_of_hostile_ike_datagrams_leaves_the_tunnel_and_nothing_else(topo: TwoHosts) -> None:
    proposals = "aes128gcm16-prfsha256-curve25519"
    tunsec = TunsecIke(
        topo, Conn(topo.a, topo.b, proposals=proposals),
        tunsec_extra=f"  half_open_timeout = {HALF_OPEN_TIMEOUT}\n  cookie_threshold = {COOKIE_THRESHOLD}\n",
    )
    charon = Charon(topo, Conn(topo.b, topo.a, proposals=proposals))
    charon.start()
    tunsec.start()
    assert tunsec.proc is not None
    # replies to the spoofed 198.51.100.0/24 go back to B, which does not forward them
    topo.run(topo.a, ["ip", "route", "add", SPOOFED_NET, "via", topo.b.outer4])
    r = charon.initiate()
    assert r.returncode == 0, f"swanctl --initiate: {r.stdout[-2000:]}{r.stderr}\n{tunsec.log_tail()}"
    sa = tunsec.wait_established()
    assert sa["initiator"] is False
    spis = (sa["spi_i"], sa["spi_r"])
    ping_both_ways(topo)
    request = init_request(topo, proposals)

    # port 4500 alone: IKE behind the non-ESP marker reaches the engine through the worker
    before = drops(tunsec)
    flood(topo, request, 64, seed=0, ports=(4500,))
    assert wait_until(lambda: drops(tunsec)["unknown_spi"] > before["unknown_spi"], 10), drops(tunsec)
    # a warm-up flood brings the control process to its working size
    flood(topo, request, WARMUP, seed=1)
    assert wait_until(lambda: settled(tunsec, spis), 30), tunsec.status()["ike_sas"]
    # the warm-up reached the cookie thresholds: COOKIEs stay demanded for COOKIE_CALMDOWN_DELAY after
    # (strongSwan's calm-down); once it has passed, the main flood again makes half-open SAs up to them
    time.sleep(COOKIE_CALMDOWN_DELAY)
    before = drops(tunsec)
    rss_before = rss_kb(tunsec.proc.pid)

    pinger = topo.popen(topo.b, ["ping", "-n", "-i", "0.2", "-W", "1", "-I", topo.b.inner4, topo.a.inner4],
                        stdout=subprocess.PIPE)
    try:
        sent = flood(topo, request, FLOOD, seed=2)
        assert sent == FLOOD
        # every kind reached the engine: dropped unparsed, dropped for an unknown SPI, answered with a COOKIE
        assert wait_until(lambda: all(drops(tunsec)[k] > before[k] for k in ("malformed", "unknown_spi",
                                                                            "cookies_sent")), 30), drops(tunsec)
        # the half-open SAs the flood made are reaped: only the tunnel's IKE SA is left
        assert wait_until(lambda: settled(tunsec, spis), 30), tunsec.status()["ike_sas"]
        time.sleep(1.0)  # a few more pings after the flood
    finally:
        topo.stop(pinger)
    assert pinger.stdout is not None
    pings = pinger.stdout.read().decode(errors="replace")
    replies = len(re.findall(r"bytes from .* icmp_seq=", pings))
    assert replies > 0, pings
    after = drops(tunsec)
    assert after["half_open_closed"] > before["half_open_closed"]  # half-open SAs were made and reaped
    # the tunnel is untouched: same SAs on both sides, traffic both ways
    (now,) = tunsec.established()
    assert (now["spi_i"], now["spi_r"]) == spis and [c["spi_in"] for c in now["children"]] == [
        c["spi_in"] for c in sa["children"]
    ]
    assert charon.sas()[CONN]["state"] == "ESTABLISHED"
    ping_both_ways(topo)
    rss_after = rss_kb(tunsec.proc.pid)
    print(f"control RSS {rss_before} kB -> {rss_after} kB; drops {after}; {replies} ping replies")
    assert rss_after <= rss_before + RSS_SLACK_KB, (rss_before, rss_after)

    # a fresh initiation works
    charon.swanctl_ok("--terminate", "--ike", CONN)
    assert wait_until(lambda: tunsec.ike_sas() == [], 10), tunsec.ike_sas()
    r = charon.initiate()
    assert r.returncode == 0, f"swanctl --initiate: {r.stdout[-2000:]}{r.stderr}\n{tunsec.log_tail()}"
    fresh = tunsec.wait_established()
    assert (fresh["spi_i"], fresh["spi_r"]) != spis
    ping_both_ways(topo)
    log = tunsec.log_text()
    at = log.find("Traceback")
    assert at < 0, log[max(0, at - 300) : at + 3000]
