"""Who is at a control socket's path (ctlsocket.listener), as `tunsec up` asks before it starts and `tunsec
prepare --undo` before it removes anything: nobody (no socket, or one a dead process left), a tunsec that
answers, or a listener that accepts nothing.  A blocking connect to the last waited for ever (review revprep
F3: the socket's directory is the service user's, who may put one there)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tunsec.conf.config import load_config
from tunsec.ctlsocket import Listener, listener
from tunsec.daemon import Daemon, StartupError

HANG = 60   # seconds: far beyond what a refusal takes (at once), not a timing threshold


@contextmanager
def silent(path: Path) -> Iterator[None]:
    """A socket at path that listens and never accepts, its backlog full (one pending connection)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as planted, \
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as filler:
        planted.bind(str(path))
        planted.listen(0)
        filler.setblocking(False)
        filler.connect(str(path))
        yield


def test_listener_tells_a_stopped_tunsec_from_a_running_or_a_stuck_one(tmp_path: Path) -> None:
    path = tmp_path / "t.sock"
    assert listener(str(path)) is Listener.NOBODY   # no file
    assert listener(str(tmp_path / "file" / "t.sock")) is Listener.NOBODY   # no directory either
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as running:
        running.bind(str(path))
        running.listen(4)
        assert listener(str(path)) is Listener.ANSWERS
        (tmp_path / "link.sock").symlink_to(path)
        assert listener(str(tmp_path / "link.sock")) is Listener.NOBODY   # a symlink is not followed
    assert path.is_socket() and listener(str(path)) is Listener.NOBODY   # a dead process's file
    path.unlink()
    with silent(path):
        assert listener(str(path)) is Listener.SILENT


def test_a_start_beside_a_socket_that_never_accepts_is_refused_not_stuck(tmp_path: Path) -> None:
    """The same probe in `tunsec up` (Daemon._claim_control_socket) waited in connect() for ever."""
    sock = tmp_path / "t.sock"
    conf = tmp_path / "t.conf"
    conf.write_text(f"tunsec {{\n  control_socket = {sock}\n}}\n")
    d = Daemon(load_config(str(conf)))
    outcome: list[BaseException | None] = []

    def claim() -> None:
        try:
            d._claim_control_socket()
            outcome.append(None)
        except BaseException as err:   # the thread's outcome, asserted below
            outcome.append(err)

    with silent(sock):
        t = threading.Thread(target=claim, daemon=True)
        t.start()
        t.join(HANG)
        assert not t.is_alive(), f"tunsec up still waits in connect() after {HANG} s"
    assert len(outcome) == 1 and isinstance(outcome[0], StartupError), outcome
    assert f"another tunsec is running on {sock} (it listens and accepts no connection" in str(outcome[0])
    assert sock.is_socket()   # not taken for a dead process's file
