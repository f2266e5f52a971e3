"""The interface every system under test implements."""

from __future__ import annotations

import shutil
import subprocess
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from tunsec.bench.netns import TwoHosts


class Unavailable(Exception):
    """The system cannot run here; the message is the reason for its row."""


def missing_commands(*names: str) -> str | None:
    """A reason naming the commands not on PATH (absolute paths checked as files)."""
    missing = [n for n in names if shutil.which(n) is None and not Path(n).is_file()]
    return f"not installed: {', '.join(missing)}" if missing else None


def log_tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file, for reasons and diagnostics."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


class System(ABC):
    """A tunnel (or no tunnel) between the inner addresses of A and B.

    Lifecycle: ``precheck()`` (cheap, before any topology), ``setup(topo)``
    (raises :class:`Unavailable` with a reason if it cannot run), traffic
    from ``topo.a.inner4`` to ``topo.b.inner4``, ``teardown()`` (idempotent;
    the topology also stops every process the system started with
    ``topo.popen``).
    """

    name: ClassVar[str]
    description: ClassVar[str]

    def __init__(self) -> None:
        self.topo: TwoHosts | None = None
        self.reason: str | None = None

    def precheck(self) -> str | None:
        """Why this system cannot run on this host, or None."""
        return None

    @abstractmethod
    def setup(self, topo: TwoHosts) -> None:
        """Bring the tunnel up and wait until inner traffic passes."""

    def teardown(self) -> None:
        """Stop what setup started (default: SIGTERM each of ``processes()``)."""
        for proc in self.processes():
            if self.topo is not None:
                self.topo.stop(proc)

    def processes(self) -> list[subprocess.Popen[bytes]]:
        """The tunnel's processes (for CPU accounting and teardown)."""
        return []

    def tunnel_pids(self) -> list[int]:
        return [p.pid for p in self.processes() if p.poll() is None]

    def diagnostics(self) -> dict[str, str]:
        """Status text worth saving with the results (SA counters etc.)."""
        return {}

    def _require_topo(self) -> TwoHosts:
        if self.topo is None:
            raise RuntimeError(f"{self.name}: setup() has not run")
        return self.topo

    def _wait_inner_ping(self, topo: TwoHosts, timeout: float = 15.0) -> None:
        """Raise Unavailable unless A's inner address reaches B's."""
        if not topo.wait_ping(topo.a, topo.b.inner4, src=topo.a.inner4, timeout=timeout):
            raise Unavailable(
                f"{self.name}: tunnel set up but {topo.a.inner4} -> {topo.b.inner4} ping fails after {timeout:.0f} s"
            )
