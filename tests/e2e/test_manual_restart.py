"""Manual keys across crashes: no (SPI, sequence number) is ever sent twice on
the wire, and a restarted receiver drops replays of old packets.

Two tunsec instances in namespaces; the ESP is captured on B's veth with a raw
packet socket and parsed with scapy, while bursts go through the tunnel
around a kill -9 of A's worker and a kill -9 of each whole daemon.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import struct
import sys
from pathlib import Path

import control
from conftest import Side, TunnelOptions, TunsecPair, state_dir_of
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from tunsec.bench.netns import TwoHosts, wait_until
from tunsec.seqstate import state_file

BURST = 8000
SPI_AB, SPI_BA = 0xC0020001, 0xC0010001

# IPv4/UDP frames seen on the namespace's Ethernet devices, one line each:
# the GSO segment size (tunsec sends with UDP GSO: one frame may carry many
# ESP packets back to back; PACKET_VNET_HDR tells their size) and the frame
CAPTURE = r"""
import socket, struct, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))   # ETH_P_ALL
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
s.setsockopt(263, 15, 1)   # SOL_PACKET, PACKET_VNET_HDR
out = open(sys.argv[1], "w", buffering=1)
out.write("ready\n")
while True:
    data, (ifname, _, _, hatype, _) = s.recvfrom(70000)
    gso_size = struct.unpack_from("<H", data, 4)[0]
    frame = data[10:]
    if hatype == 1 and ifname != "lo" and len(frame) > 42 and frame[12:14] == b"\x08\x00" and frame[23] == 17:
        out.write("%d %s\n" % (gso_size, frame.hex()))
"""

SEND = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 0))
for i in range(int(sys.argv[3])):
    try:
        s.sendto(b"burst %06d " % i + bytes(80), (sys.argv[2], 9))
    except OSError:
        pass   # a full socket buffer or an ICMP error from an earlier packet
    if i % 10 == 9:
        time.sleep(0.002)   # about 5000 packets a second
"""

REPLAY = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 4500))
for line in open(sys.argv[3]):
    s.sendto(bytes.fromhex(line.strip()), (sys.argv[2], 4500))
"""


def esp_packets(capture: Path) -> list[tuple[str, int, int, bytes]]:
    """(source, SPI, sequence number, UDP payload) of every ESP packet captured."""
    out = []
    for line in capture.read_text().splitlines()[1:]:
        gso, hexframe = line.split()
        frame = Ether(bytes.fromhex(hexframe))
        if IP not in frame or UDP not in frame or 4500 not in (frame[UDP].sport, frame[UDP].dport):
            continue
        data = bytes(frame[UDP].payload)
        size = int(gso) or len(data)
        for payload in (data[i:i + size] for i in range(0, len(data), size)):
            if len(payload) < 8 or payload[:4] == b"\0\0\0\0":
                continue   # keepalive or IKE
            spi, seq = struct.unpack("!II", payload[:8])
            out.append((frame[IP].src, spi, seq, payload))
    return out


def burst(pair: TunsecPair, n_ab: int = BURST, n_ba: int = BURST) -> None:
    """n_ab packets A -> B, then n_ba packets B -> A, through the tunnel."""
    topo = pair.topo
    for src, dst, n in ((topo.a, topo.b, n_ab), (topo.b, topo.a, n_ba)):
        topo.run(src, [sys.executable, "-c", SEND, src.inner4, dst.inner4, str(n)], timeout=120)


def delivered(pair: TunsecPair) -> tuple[int, int]:
    """Packets the inbound SAs of B and A accepted so far."""
    return packets_in(pair.b, pair.topo), packets_in(pair.a, pair.topo)


def receiver_floor(pair: TunsecPair, side: Side) -> int:
    """What side's inbound SA, just restarted, counts as already seen: everything up to the limit it
    had persisted, one block below the limit its restart persisted (its key's state file)."""
    key = pair.o.keys["ba" if side is pair.a else "ab"]
    doc = json.loads(state_file(state_dir_of(side.host, side.sock), bytes.fromhex(key)).read_text())
    return int(doc["limit"]) - int(doc["block"])


def assert_burst_gets_through(pair: TunsecPair, restarted: Side | None = None) -> None:
    """A burst each way, most of it delivered.  A receiver restarted alone (``restarted``) refuses
    every number up to its persisted limit, genuine new packets too, until the sender passes it
    (about 1.5 blocks: ~0.4 s of the recent traffic, more after a refill delayed on a loaded
    machine): its peer sends that many more, and the receiver accepts none of them."""
    topo = pair.topo
    sender = pair.b if restarted is pair.a else pair.a
    sent_before = int(sa(sender, topo, "out")["seq"])  # type: ignore[call-overload]
    floor = receiver_floor(pair, restarted) if restarted is not None else 0
    deaf = max(floor - sent_before, 0)
    before = delivered(pair)
    burst(pair, BURST + (deaf if sender is pair.a else 0), BURST + (deaf if sender is pair.b else 0))
    after = delivered(pair)
    got = (after[0] - before[0], after[1] - before[1])
    why = f"delivered {got}, receiver refused up to {floor}, peer had sent {sent_before}; {pair.logs()}"
    assert got[0] > BURST // 2 and got[1] > BURST // 2, why
    if restarted is not None:
        # each accepted packet has its own number past the floor: more would be a replay accepted
        sent_after = int(sa(sender, topo, "out")["seq"])  # type: ignore[call-overload]
        assert got[1 if restarted is pair.a else 0] <= sent_after - max(floor, sent_before), why


def sa(side: Side, topo: TwoHosts, direction: str) -> dict[str, object]:
    (found,) = [s for s in side.status_json(topo)["tunnels"][0]["sas"] if s["direction"] == direction]
    return found


def packets_in(side: Side, topo: TwoHosts) -> int:
    return int(sa(side, topo, "in")["packets"])  # type: ignore[call-overload]


def reinstalled(side: Side, topo: TwoHosts, old_worker: int) -> bool:
    """A new worker runs and holds the tunnel's SAs again: the daemon answers status before its
    services have put the SAs back, and a burst sent in between is dropped (no SA)."""
    doc = control.status_if_ok(side.sock)
    if doc is None or doc["worker"]["pid"] == old_worker:
        return False
    return {s["direction"] for s in doc["tunnels"][0]["sas"]} == {"in", "out"}


def kill_daemon_and_restart(pair: TunsecPair, side: Side) -> None:
    topo = pair.topo
    worker = side.status_json(topo)["worker"]["pid"]
    assert side.proc is not None
    side.proc.kill()
    side.proc.wait(timeout=10)
    # the worker follows its parent (PR_SET_PDEATHSIG); its TUN goes with it
    assert wait_until(lambda: not os.path.exists(f"/proc/{worker}"), 10), "worker outlived its daemon"
    assert wait_until(lambda: topo.run(side.host, ["ip", "link", "show", "tunsec0"], check=False).returncode, 10)
    pair.start(side)


def test_no_sequence_number_twice_across_crashes_and_replays_dropped_after_restart(topo: TwoHosts) -> None:
    pair = TunsecPair(topo, TunnelOptions(inner6=False))
    pair.start_both()
    capture = topo.workdir / "esp.hex"
    sniffer = topo.popen(topo.b, [sys.executable, "-c", CAPTURE, str(capture)])
    assert wait_until(lambda: capture.exists() and capture.read_text().startswith("ready"), 10)
    assert topo.wait_ping(topo.a, topo.b.inner4, src=topo.a.inner4), pair.logs()

    # 1. a burst, then A's worker killed at once: the daemon restarts it
    assert_burst_gets_through(pair)
    old = pair.a.status_json(topo)["worker"]["pid"]
    os.kill(old, signal.SIGKILL)
    assert wait_until(lambda: reinstalled(pair.a, topo, old), 20), pair.logs()
    assert_burst_gets_through(pair, restarted=pair.a)

    # 2. the whole daemon killed and started again
    kill_daemon_and_restart(pair, pair.a)
    assert_burst_gets_through(pair, restarted=pair.a)

    # 3. the receiver: the highest number B accepted, then B killed and restarted
    highest = int(sa(pair.b, topo, "in")["seq"])  # type: ignore[call-overload]
    kill_daemon_and_restart(pair, pair.b)
    burst(pair)   # B may drop up to a block of these as replays, until A passes B's persisted mark
    topo.stop(sniffer)

    seen = esp_packets(capture)
    per_spi = collections.Counter((spi, seq) for _, spi, seq, _ in seen)
    twice = [k for k, n in per_spi.items() if n > 1]
    assert not twice, f"sent twice: {twice[:10]}"
    a_to_b = [(seq, payload) for src, spi, seq, payload in seen if src == topo.a.outer4 and spi == SPI_AB]
    assert len(a_to_b) > 3 * BURST, len(a_to_b)
    assert any(spi == SPI_BA for _, spi, _, _ in seen)

    # 4. replay old captured packets B had accepted before its restart
    old_packets = [payload for seq, payload in a_to_b if seq <= highest]
    assert len(old_packets) > 2 * BURST
    replay_file = topo.workdir / "replay.hex"
    replay_file.write_text("".join(p.hex() + "\n" for p in old_packets))
    assert pair.a.proc is not None
    pair.a.proc.send_signal(signal.SIGTERM)          # frees A's port 4500 for the replayer
    assert pair.a.proc.wait(timeout=10) == 0
    before = pair.b.status_json(topo)
    accepted = packets_in(pair.b, topo)
    topo.run(topo.a, [sys.executable, "-c", REPLAY, topo.a.outer4, topo.b.outer4, str(replay_file)], timeout=60)
    assert wait_until(lambda: pair.b.status_json(topo)["drops"]["replay"]
                      >= before["drops"]["replay"] + len(old_packets), 10), pair.b.status_json(topo)["drops"]
    after = pair.b.status_json(topo)
    assert packets_in(pair.b, topo) == accepted     # nothing delivered
    assert after["drops"]["auth"] == before["drops"]["auth"]
