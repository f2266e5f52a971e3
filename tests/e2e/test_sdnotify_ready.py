"""systemd readiness (Type=notify): tunsec says READY=1 on $NOTIFY_SOCKET only once
its control socket takes connections and its SAs are in the worker, and
STOPPING=1 when it shuts down. The socket is a real unix datagram socket, as
systemd's is."""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path

from conftest import TunsecPair

from tunsec.bench.netns import TwoHosts


def control_socket_answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        try:
            s.connect(str(path))
        except OSError:
            return False
        s.sendall(b'{"cmd": "status"}\n')
        return b'"ok": true' in s.recv(1 << 20)


def test_ready_after_control_socket_listens_and_stopping_on_sigterm(topo: TwoHosts) -> None:
    side = TunsecPair(topo).a
    notify_path = topo.workdir / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(notify_path))
        listener.settimeout(30)
        env = {**os.environ, "NOTIFY_SOCKET": str(notify_path)}
        proc = topo.popen(side.host, [sys.executable, "-m", "tunsec", "up", "-c", str(side.conf)], log=side.log,
                          env=env)
        try:
            first = listener.recv(4096)
        except TimeoutError:
            raise AssertionError(f"no READY=1 from tunsec:\n{side.log.read_text()}") from None
        assert first.split(b"\n")[0] == b"READY=1", first
        # at READY the control socket already answers, and the manual SAs are installed
        assert control_socket_answers(side.sock)
        doc = side.status_json(topo)
        assert {sa["spi"] for sa in doc["sas"]} >= {"c0010001", "c0020001"}, doc["sas"]

        proc.send_signal(signal.SIGTERM)
        assert listener.recv(4096) == b"STOPPING=1"
        assert proc.wait(timeout=20) == 0
