"""A #! script runs only when the kernel would run it: with its execute permission, not from a noexec mount
(scriptfile.launch).  Review revrootfiles F5; failed before its fix.

launch() executes a #! script's interpreter itself (through its checked descriptor) and hands it the script's
path.  Before the fix, the kernel's own checks on the script were then never made: it ran without its execute
permission (`chmod -x` no longer disabled a script; strongSwan, and tunsec before the merge, got EACCES) and from
a file system mounted noexec (a /tmp, /dev/shm or volume mounted so that nothing on it is executed).  Real files, a
real run through updown.run; the noexec mount in a mount namespace of its own (nothing on the host changes)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from reachable import scratch_dir

from tunsec import updown

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the check of who may change a script: as root")
ENV = {"PATH": "/usr/bin:/bin", "PLUTO_VERB": "up-client"}


@pytest.fixture
def base() -> Iterator[Path]:
    """Root's, 0755: a tree only root may change, as /etc."""
    with scratch_dir("revrootfiles-exec-") as d:
        yield d


def script(where: Path, mark: Path, mode: int) -> Path:
    path = where / "updown.sh"
    path.write_text(f"#!/bin/sh\ntouch {mark}\n")
    path.chmod(mode)
    return path


def test_a_script_without_execute_permission_is_not_run(base: Path) -> None:
    mark = base / "ran"
    s = script(base, mark, 0o644)   # root's, only root may change it: the check passes
    ok = asyncio.run(updown.run((str(s),), ENV))
    assert not mark.exists() and ok is False, "a script nobody may execute was run"


RUN_ON_NOEXEC = """import asyncio, os, subprocess, sys
from tunsec import updown
where = sys.argv[1]
subprocess.run(["mount", "-t", "tmpfs", "-o", "noexec,mode=755", "revrootfiles", where], check=True)
path, mark = os.path.join(where, "updown.sh"), os.path.join(where, "ran")
with open(path, "w") as f:
    f.write("#!/bin/sh\\ntouch " + mark + "\\n")
os.chmod(path, 0o755)
ok = asyncio.run(updown.run((path,), {"PATH": "/usr/bin:/bin"}))
print("ran" if os.path.exists(mark) else "not run", ok)
"""


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")
def test_a_script_on_a_noexec_file_system_is_not_run(base: Path) -> None:
    where = base / "noexec"
    where.mkdir(mode=0o755)
    r = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c", RUN_ON_NOEXEC, str(where)],
                       capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": ":".join(sys.path)})
    assert r.returncode == 0, r
    assert r.stdout.split() == ["not", "run", "False"], r.stdout
