"""iperf3 runs between the inner addresses of a :class:`TwoHosts` topology."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from typing import Any

from tunsec.bench.netns import TwoHosts, wait_until

DEFAULT_PORT = 5201


@dataclass(frozen=True)
class IperfTest:
    """One kind of iperf3 measurement."""

    key: str
    label: str
    streams: int = 1
    udp: bool = False
    length: int | None = None
    bitrate: str | None = None

    def client_args(self) -> list[str]:
        args = ["-P", str(self.streams)] if self.streams > 1 else []
        if self.udp:
            args += ["-u", "-b", self.bitrate or "0"]
        elif self.bitrate:
            args += ["-b", self.bitrate]
        if self.length is not None:
            args += ["-l", str(self.length)]
        return args


TCP1 = IperfTest("tcp1", "TCP x1")
TCP4 = IperfTest("tcp4", "TCP x4", streams=4)
UDP64 = IperfTest("udp64", "UDP 64B", udp=True, length=64)
DEFAULT_TESTS = (TCP1, TCP4, UDP64)


@dataclass
class IperfResult:
    """What the harness keeps from one iperf3 client's JSON."""

    bits_per_second: float = 0.0
    bytes: int = 0
    seconds: float = 0.0
    retransmits: int | None = None
    packets: int | None = None
    lost_packets: int | None = None
    error: str | None = None

    @property
    def packets_per_second(self) -> float | None:
        if self.packets is None or self.lost_packets is None or self.seconds <= 0:
            return None
        return (self.packets - self.lost_packets) / self.seconds


def parse_iperf_json(test: IperfTest, data: dict[str, Any]) -> IperfResult:
    """Receiver-side throughput (and UDP packets received), sender retransmits."""
    if "error" in data:
        return IperfResult(error=str(data["error"]))
    end = data.get("end", {})
    recv = end.get("sum_received") or end.get("sum") or {}
    sent = end.get("sum_sent") or {}
    res = IperfResult(
        bits_per_second=float(recv.get("bits_per_second", 0.0)),
        bytes=int(recv.get("bytes", 0)),
        seconds=float(recv.get("seconds", 0.0)),
    )
    if test.udp:
        res.packets = int(recv.get("packets", 0))
        res.lost_packets = int(recv.get("lost_packets", 0))
    else:
        res.retransmits = sent.get("retransmits")
    return res


def _listening(topo: TwoHosts, port: int) -> bool:
    out = topo.run(topo.b, ["ss", "-Hltn", f"sport = :{port}"], check=False).stdout
    return bool(out.strip())


def start_server(topo: TwoHosts, port: int) -> subprocess.Popen[bytes]:
    """A one-shot iperf3 server on B's inner address, once it listens."""
    proc = topo.popen(
        topo.b,
        ["iperf3", "-s", "-1", "-B", topo.b.inner4, "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if not wait_until(lambda: proc.poll() is not None or _listening(topo, port), 10, 0.05):
        topo.stop(proc)
        raise RuntimeError(f"iperf3 server did not listen on port {port}")
    if proc.poll() is not None:
        raise RuntimeError(f"iperf3 server exited {proc.returncode}")
    return proc


class IperfClient:
    """Runs the client in A; brackets the run with callbacks for sampling."""

    def __init__(self, topo: TwoHosts, seconds: float, port: int = DEFAULT_PORT, omit: int = 0) -> None:
        self.topo = topo
        self.seconds = seconds
        self.port = port
        self.omit = omit

    def argv(self, test: IperfTest) -> list[str]:
        argv = [
            "iperf3",
            "-c",
            self.topo.b.inner4,
            "-B",
            self.topo.a.inner4,
            "-p",
            str(self.port),
            "-t",
            f"{self.seconds:g}",
            "--json",
        ]
        if self.omit:
            argv += ["-O", str(self.omit)]
        return argv + test.client_args()

    def start(self, test: IperfTest) -> subprocess.Popen[str]:
        """Start the client (server must be up); finish with :meth:`finish`."""
        return subprocess.Popen(
            ["ip", "netns", "exec", self.topo.a.ns, *self.argv(test)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def finish(self, test: IperfTest, proc: subprocess.Popen[str]) -> IperfResult:
        try:
            out, err = proc.communicate(timeout=self.seconds + self.omit + 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            return IperfResult(error="iperf3 client timed out")
        try:
            data = json.loads(out)
        except json.JSONDecodeError:
            return IperfResult(error=f"iperf3 exited {proc.returncode}: {err.strip()[-300:]}")
        return parse_iperf_json(test, data)


def run_once(topo: TwoHosts, test: IperfTest, seconds: float, port: int = DEFAULT_PORT) -> IperfResult:
    """One iperf3 run of ``test`` from A to B's inner address (used by tests)."""
    server = start_server(topo, port)
    try:
        client = IperfClient(topo, seconds, port)
        return client.finish(test, client.start(test))
    finally:
        topo.stop(server)
