"""What the daemons of the netns tests share: tunsec, strongSwan's charon, FreeRADIUS.

Each runs in one namespace of the test's topology, is stopped by PID, and writes one log
file that the test reads (waits for a line, shows the end of it when an assert fails).
:func:`requires` makes the skip mark of the tests that need an installed daemon.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from tunsec.bench.netns import Host, TwoHosts, wait_until


def requires(missing: str | None, what: str) -> pytest.MarkDecorator:
    """Skip the tests with this mark if ``missing`` (why ``what`` cannot run here) is set, and say so
    loudly on stderr: a skipped interop test is no coverage."""
    if missing:
        print(f"\n*** {what} tests SKIPPED: {missing} ***\n", file=sys.stderr)
    return pytest.mark.skipif(missing is not None, reason=f"{what.split()[0].upper()} UNAVAILABLE: {missing}")


class Daemon:
    """A daemon in one namespace of ``topo``; subclasses (dataclasses) set ``topo`` and ``proc``
    and say where it logs (``log``) and how to name it in a message (``label``)."""

    topo: TwoHosts
    proc: subprocess.Popen[bytes] | None
    tail_lines = 40                     # the lines of the log an assert message shows

    @property
    def log(self) -> Path:
        raise NotImplementedError

    @property
    def label(self) -> str:
        """``<program> in <namespace>``, for messages."""
        raise NotImplementedError

    def spawn(self, host: Host, argv: Sequence[str], ready: Callable[[], bool], timeout: float = 20) -> None:
        """Start ``argv`` in ``host``'s namespace (output to ``log``) and wait until ``ready()``;
        it must still run then (one that exits at once is as much a failure as one that hangs)."""
        self.proc = proc = self.topo.popen(host, list(argv), log=self.log)
        up = wait_until(lambda: proc.poll() is not None or ready(), timeout)
        assert up and proc.poll() is None, f"{self.label} did not start:\n{self.log_text()[-4000:]}"

    def stop(self) -> None:
        if self.proc is not None:
            self.topo.stop(self.proc)
            self.proc = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def log_lines(self) -> list[str]:
        """The log's lines worth showing (a subclass leaves out noise)."""
        return self.log_text().splitlines()

    def log_tail(self, lines: int | None = None) -> str:
        return "\n".join(self.log_lines()[-(lines or self.tail_lines):])

    def wait_log(self, pattern: str, timeout: float = 15) -> re.Match[str]:
        """The first match of ``pattern`` in the log, once there is one."""
        found: list[re.Match[str]] = []

        def seen() -> bool:
            m = re.search(pattern, self.log_text())
            if m:
                found.append(m)
            return m is not None

        assert wait_until(seen, timeout), f"{pattern!r} not in the log of {self.label} ({self.log}):\n{self.log_tail()}"
        return found[0]
