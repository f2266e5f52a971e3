"""The `tunsec` command line without a running instance: check, and the
errors a user sees when nothing is running."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tunsec.cli import AnswerError, _ask

GOOD = """tunsec {
  tun = tunsec0
}
manual {
  site-b {
    local_addr = 192.0.2.1
    remote_addr = 192.0.2.2
    local_ts = 10.1.0.0/24
    remote_ts = 10.2.0.0/24
    spi_in = 0xc0010001
    key_in = 0x0102030405060708090a0b0c0d0e0f1011121314
    spi_out = 0xc0020001
    key_out = 0x1112131415161718191a1b1c1d1e1f2021222324
  }
}
"""


def tunsec(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tunsec", *args], capture_output=True, text=True, timeout=60)


def test_check_accepts_a_good_config(tmp_path: Path) -> None:
    conf = tmp_path / "tunsec.conf"
    conf.write_text(GOOD)
    r = tunsec("check", "-c", str(conf))
    assert r.returncode == 0 and "OK (1 manual tunnel(s), 0 IKE connection(s))" in r.stdout


def test_check_warns_that_manual_keys_are_not_for_production(tmp_path: Path) -> None:
    conf = tmp_path / "tunsec.conf"
    conf.write_text(GOOD)
    r = tunsec("check", "-c", str(conf))
    assert r.returncode == 0
    (warning,) = [line for line in r.stderr.splitlines() if "manual keys" in line]
    assert f"{conf}:" in warning and "use IKE in production" in warning and "RFC 4106" in warning
    assert "/var/lib/tunsec" in warning


def test_check_names_file_line_and_key_of_every_error_without_keys(tmp_path: Path) -> None:
    conf = tmp_path / "tunsec.conf"
    bad = GOOD.replace("spi_in = 0xc0010001", "spi_in = 0xzz").replace(
        "remote_port", "x").replace("key_out = 0x1112131415161718191a1b1c1d1e1f2021222324",
                                    "key_out = 0x1112131415161718191a1b1c1d1e1f20212223").replace(
        "  tun = tunsec0", "  tun = tunsec0\n  colour = blue")
    conf.write_text(bad)
    r = tunsec("check", "-c", str(conf))
    assert r.returncode == 1
    lines = bad.splitlines()
    for key, needle in (("tunsec.colour", "colour"), ("manual.site-b.spi_in", "spi_in"),
                        ("manual.site-b.key_out", "key_out")):
        line = next(i for i, text in enumerate(lines, 1) if needle in text)
        assert f"{conf}:{line}: {key}:" in r.stderr, r.stderr
    assert "1112131415161718" not in r.stderr + r.stdout       # the key's value never echoed


def test_check_reports_an_unreadable_file(tmp_path: Path) -> None:
    r = tunsec("check", "-c", str(tmp_path / "missing.conf"))
    assert r.returncode == 1 and "missing.conf" in r.stderr


def test_status_without_a_running_instance_says_so(tmp_path: Path) -> None:
    r = tunsec("status", "--socket", str(tmp_path / "nobody.sock"))
    assert r.returncode == 1 and "no running tunsec" in r.stderr
    r = tunsec("initiate", "--child", "net", "--socket", str(tmp_path / "nobody.sock"))
    assert r.returncode == 1 and "no running tunsec" in r.stderr


def test_check_refuses_an_unknown_user(tmp_path: Path) -> None:
    conf = tmp_path / "tunsec.conf"
    conf.write_text(GOOD.replace("  tun = tunsec0", "  tun = tunsec0\n  user = no-such-user-here"))
    r = tunsec("check", "-c", str(conf))
    assert r.returncode == 1 and f"{conf}:3: tunsec.user: no such user on this host" in r.stderr


PSK = """connections {{
  gw {{
    remote_addrs = 192.0.2.2
    local {{
      auth = psk
      id = moon.example
    }}
    remote {{
      auth = psk
      id = sun.example
    }}
    children {{
      net {{
        local_ts = 10.1.0.0/24
        remote_ts = 10.2.0.0/24
      }}
    }}
  }}
}}
secrets {{
  ike-gw {{
    id = sun.example
    secret = {secret}
  }}
}}
"""


@pytest.mark.slow   # seven `tunsec check` interpreters: started early under xdist
def test_check_warns_about_a_weak_psk_without_showing_it(tmp_path: Path) -> None:
    conf = tmp_path / "tunsec.conf"
    weak = {
        "hunter2": "is only 7 bytes long; use at least 16",
        "0x" + "00112233445566778899aabbccdd": "is only 14 bytes long",
        "aaaaaaaaaaaaaaaaaaaaaaaa": "uses only 1 distinct characters",
        "abababababababababababab": "uses only 2 distinct characters",
        "Tr0ub4dor&3Tr0ub4dor&3": "is a shorter pattern repeated",
    }
    for secret, why in weak.items():
        conf.write_text(PSK.format(secret=secret))
        r = tunsec("check", "-c", str(conf))
        assert r.returncode == 0, r.stderr        # a warning, not an error: the config still loads
        assert f"warning: {conf}:23: secrets.ike-gw.secret: weak pre-shared key: it {why}" in r.stderr, r.stderr
        assert secret not in r.stderr + r.stdout
    for strong in ("0sBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSY=", "correct horse battery staple, 2026!"):
        conf.write_text(PSK.format(secret=strong))
        r = tunsec("check", "-c", str(conf))
        assert r.returncode == 0 and "pre-shared key" not in r.stderr, r.stderr


def test_terminate_needs_a_connection_or_a_child(capsys: pytest.CaptureFixture[str]) -> None:
    from tunsec.cli import main

    assert main(["terminate", "--socket", "/nonexistent/tunsec.sock"]) == 2
    assert "--ike CONN, --child NAME, or both" in capsys.readouterr().err


class FakeServer:
    """Whatever listens on the socket path (a process of the service user could put one there):
    it answers every connection with ``answer`` (bytes, or a callable writing to the connection)."""

    def __init__(self, path: Path, answer: bytes | Callable[[socket.socket], None]) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(path))
        self.sock.listen(4)
        self.answer = answer
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(4096)
                try:
                    if callable(self.answer):
                        self.answer(conn)
                    else:
                        conn.sendall(self.answer)
                except OSError:
                    pass   # the client gave up


def endless(conn: socket.socket) -> None:
    chunk = b"x" * 65536
    while True:
        conn.sendall(chunk)


@pytest.mark.parametrize("cmd", [["reload"], ["terminate", "--ike", "x"], ["status"]])
def test_what_a_server_says_reaches_the_terminal_printable(tmp_path: Path, cmd: list[str]) -> None:
    sock = tmp_path / "fake.sock"
    FakeServer(sock, json.dumps({"ok": False, "error": "\x1b]0;owned\x07\x1b[2J fake\nsecond line"}).encode()
               + b"\n")
    r = tunsec(*cmd, "--socket", str(sock))
    assert r.returncode == 1
    assert r.stderr == "tunsec: \\x1b]0;owned\\x07\\x1b[2J fake\nsecond line\n", r.stderr


def test_a_message_is_printable_too(tmp_path: Path) -> None:
    sock = tmp_path / "fake.sock"
    FakeServer(sock, json.dumps({"ok": True, "message": "\x1b]52;c;ZWNobyBwd25lZA==\x07 reloaded\u202e"}).encode()
               + b"\n")
    r = tunsec("reload", "--socket", str(sock))
    assert r.returncode == 0 and r.stdout == "\\x1b]52;c;ZWNobyBwd25lZA==\\x07 reloaded\\u202e\n", r.stdout


def test_a_status_that_is_not_one_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    sock = tmp_path / "fake.sock"
    FakeServer(sock, b'{"ok": true, "status": {"\\u001b[2J": 1}}\n')
    r = tunsec("status", "--socket", str(sock))
    assert r.returncode == 1 and "is not a status document" in r.stderr and "Traceback" not in r.stderr
    r = tunsec("status", "--json", "--socket", str(sock))
    assert r.returncode == 0 and "\x1b" not in r.stdout and "\\u001b[2J" in r.stdout


def test_an_endless_answer_is_cut_at_the_cap(tmp_path: Path) -> None:
    sock = tmp_path / "fake.sock"
    FakeServer(sock, endless)
    r = tunsec("status", "--socket", str(sock))
    assert r.returncode == 1 and f"tunsec: {sock}: answer larger than 16 MiB" in r.stderr, r.stderr
    with pytest.raises(AnswerError, match="larger than 1 MiB"):
        _ask(str(sock), {"cmd": "status"}, limit=1 << 20)


def test_an_answer_that_never_ends_is_given_up_at_the_deadline(tmp_path: Path) -> None:
    """A byte every 50 ms: no single recv waits long, the total time still ends it."""
    def trickle(conn: socket.socket) -> None:
        while True:
            conn.sendall(b" ")
            time.sleep(0.05)

    sock = tmp_path / "fake.sock"
    FakeServer(sock, trickle)
    with pytest.raises(AnswerError, match=r"no complete answer within 0\.5 s"):
        _ask(str(sock), {"cmd": "status"}, timeout=0.5)


def refuse_unread(answer: bytes) -> Callable[[Path], None]:
    """A server that answers each connection with ``answer`` and closes it without reading the
    request (as the daemon refuses one when every connection slot is taken)."""
    def serve(path: Path) -> None:
        srv = socket.socket(socket.AF_UNIX)
        srv.bind(str(path))
        srv.listen(4)

        def loop() -> None:
            while True:
                conn, _ = srv.accept()
                with conn:
                    conn.sendall(answer)
        threading.Thread(target=loop, daemon=True).start()
    return serve


BUSY = b'{"ok": false, "error": "busy: 20 control connections open; try again"}\n'


def test_an_answer_written_before_the_request_was_read_is_shown(tmp_path: Path) -> None:
    """The request cannot all be sent (larger than the socket's buffers, never read): the send fails
    with EPIPE or ECONNRESET, and the answer waiting is still what the client returns."""
    sock = tmp_path / "busy.sock"
    refuse_unread(BUSY)(sock)
    for _ in range(3):
        assert _ask(str(sock), {"cmd": "status", "pad": "x" * (4 << 20)}) == json.loads(BUSY)
    r = tunsec("status", "--socket", str(sock))
    assert r.returncode == 1 and r.stderr == "tunsec: busy: 20 control connections open; try again\n", r.stderr


def test_a_connection_closed_without_an_answer_says_so(tmp_path: Path) -> None:
    sock = tmp_path / "mute.sock"
    refuse_unread(b"")(sock)
    with pytest.raises(AnswerError, match="closed the connection without an answer"):
        _ask(str(sock), {"cmd": "status", "pad": "x" * (4 << 20)})
    r = tunsec("status", "--socket", str(sock))
    assert r.returncode == 1 and r.stderr == f"tunsec: {sock}: closed the connection without an answer\n", r.stderr
