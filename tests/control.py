"""A running tunsec's control socket, asked from the test process itself.

`tunsec status` is a new interpreter that imports the config code: about a CPU-second here.
Tests poll the status every 0.1 s while they wait for an SA, so with several pytest workers
on two cores that polling alone starved the daemons under test (their answers took longer
than the 20 s the tests wait).  So the helpers that wait ask the socket (a path, reachable
from any network namespace) the way the CLI does; a test that is about the CLI runs it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from tunsec.bench.netns import wait_until
from tunsec.cli import _ask

# the daemon's last start-up line: worker running, services started, SAs and routes installed
# (its control socket answers earlier, while the worker starts)
UP_LINE = b"tunsec up:"


def ask(sock: Path, request: dict[str, Any], timeout: float = 20) -> dict[str, Any]:
    """The daemon's answer to ``request`` (``{"cmd": "status"}``...); it must be ``ok``."""
    answer = _ask(str(sock), request, timeout=timeout)
    assert answer.get("ok"), f"{request} on {sock}: {answer.get('error')}"
    return answer


def status(sock: Path) -> dict[str, Any]:
    """What ``tunsec status --json`` prints."""
    doc: dict[str, Any] = ask(sock, {"cmd": "status"})["status"]
    return doc


def status_if_ok(sock: Path) -> dict[str, Any] | None:
    """The status, or None while the daemon cannot give it (its worker restarting: "worker unavailable")."""
    answer = _ask(str(sock), {"cmd": "status"}, timeout=20)
    doc: dict[str, Any] | None = answer["status"] if answer.get("ok") else None
    return doc


def answers(sock: Path) -> bool:
    """True once the daemon answers a status request (it has started)."""
    try:
        return bool(_ask(str(sock), {"cmd": "status"}, timeout=20).get("ok"))
    except (OSError, ValueError):
        return False


def log_size(log: Path) -> int:
    """Where a daemon started now begins writing in ``log`` (a restart appends to it)."""
    return log.stat().st_size if log.exists() else 0


def is_up(log: Path, offset: int, sock: Path) -> bool:
    """The daemon logged that it is up (after ``offset`` in its log) and answers on ``sock``."""
    with open(log, "rb") as f:
        f.seek(offset)
        return UP_LINE in f.read() and answers(sock)


def wait_up(proc: subprocess.Popen[bytes], log: Path, offset: int, sock: Path, timeout: float = 20) -> bool:
    """Wait until the daemon is up (:func:`is_up`); False if it exited or the time ran out."""
    return wait_until(lambda: proc.poll() is not None or is_up(log, offset, sock), timeout) and proc.poll() is None
