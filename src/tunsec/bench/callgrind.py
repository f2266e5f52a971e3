"""Instruction counts of a Python run under valgrind's callgrind: they do not move with the
machine's load, so they show a change of a few percent that CPU time on a shared machine hides
(bench/install_cost.py, bench/pipe_cost.py)."""

from __future__ import annotations

import os
import subprocess
import sys


def instructions(argv: list[str]) -> int:
    """The instructions (callgrind's total "refs") of ``python3 argv...``, with a fixed hash seed so
    that two runs of the same work count the same."""
    out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, *argv],
                         env=os.environ | {"PYTHONHASHSEED": "0"}, capture_output=True, text=True, check=True)
    line = next(x for x in out.stderr.splitlines() if "refs:" in x)
    return int(line.split()[-1].replace(",", ""))
