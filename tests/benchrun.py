"""Run one of bench/'s scripts as its documentation says, with a small N, and return its output.

The benches are run by hand, rarely; their fakes lean on the service's internals (which socket it
sends on, what a worker answers) and rotted silently when those moved (bench/ctlmem.py hung for a
session after IkeSockets took the sockets).  tests/test_benches.py and tests/e2e/test_bench_worker_mem.py
run each with a tiny N and check the figures it prints."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NUMBER = r"(-?\d+(?:\.\d+)?)"


def run_bench(script: str, *args: str) -> str:
    """The bench's stdout; its exit status and stderr in the failure.  The timeout only turns a
    hang (what this guards against) into a failure: the runs take a few seconds."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    r = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{script} {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def figures(pattern: str, text: str) -> tuple[float, ...]:
    """The numbers of the line matching ``pattern`` (``{n}`` stands for a number)."""
    m = re.search(pattern.replace("{n}", NUMBER), text)
    assert m is not None, f"no line like {pattern!r} in:\n{text}"
    return tuple(float(g) for g in m.groups())
