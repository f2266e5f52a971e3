"""A running tunsec's control socket, asked from the test process itself.

`tunsec status` is a new interpreter that imports the config code: about a CPU-second here.
Tests poll the status every 0.1 s while they wait for an SA, so with several pytest workers
on two cores that polling alone starved the daemons under test (their answers took longer
than the 20 s the tests wait).  So the helpers that wait ask the socket (a path, reachable
from any network namespace) the way the CLI does; a test that is about the CLI runs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunsec.cli import _ask


def ask(sock: Path, request: dict[str, Any], timeout: float = 20) -> dict[str, Any]:
    """The daemon's answer to ``request`` (``{"cmd": "status"}``...); it must be ``ok``."""
    answer = _ask(str(sock), request, timeout=timeout)
    assert answer.get("ok"), f"{request} on {sock}: {answer.get('error')}"
    return answer


def status(sock: Path) -> dict[str, Any]:
    """What ``tunsec status --json`` prints."""
    doc: dict[str, Any] = ask(sock, {"cmd": "status"})["status"]
    return doc


def answers(sock: Path) -> bool:
    """True once the daemon answers a status request (it has started)."""
    try:
        return bool(_ask(str(sock), {"cmd": "status"}, timeout=20).get("ok"))
    except (OSError, ValueError):
        return False
