"""A #! line with a NUL byte is a refusal naming the script, at start, reload and each run, not a traceback
(scriptfile.py, updown.py).  Review revrootfiles F4; failed before its fix.

Before the fix, scriptfile.shebang split the #! line as bytes and handed the interpreter's name, NUL and all,
to safefs.trusted, whose os.lstat raises ValueError ("embedded null byte"), which neither scriptfile nor
updown catches (they catch Untrusted, and updown.run OSError/ValueError only around the exec).  Who may
write the script may write that line: root, or with the default `user` the service user, whose own scripts
pass the check.  So `tunsec up` (root, updown.refusals before anything is set up), a reload
(daemon.reload -> updown.refusals) and each run (updown.run, "failures are logged, never raised") end in a
ValueError instead of the clear refusal of a bad #! line the module gives for a relative or missing
interpreter.  Real files; the run is updown.run as the service does it."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from reachable import scratch_dir

from tunsec import scriptfile, updown
from tunsec.safefs import Untrusted

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the check of who may change a script: as root")


@pytest.fixture
def nul_script() -> Iterator[Path]:
    """Root's, 0755, in a tree only root may change: only its #! line is wrong."""
    with scratch_dir("revrootfiles-nul-") as d:
        path = d / "updown.sh"
        path.write_bytes(b"#!/bin/sh\0 -e\ntrue\n")
        path.chmod(0o755)
        yield path


def test_the_check_refuses_a_nul_in_the_interpreter_line(nul_script: Path) -> None:
    with pytest.raises(Untrusted):   # on main: ValueError: embedded null byte
        scriptfile.check(str(nul_script), 0)


def test_start_and_reload_name_the_script_instead_of_raising(nul_script: Path) -> None:
    refused = updown.refusals([("connections.c.children.c.updown", (str(nul_script),))], 0)
    assert len(refused) == 1 and str(nul_script) in refused[0], refused


def test_a_run_is_a_logged_failure_not_an_exception(nul_script: Path, caplog: pytest.LogCaptureFixture) -> None:
    ok = asyncio.run(updown.run((str(nul_script),), {"PATH": "/usr/bin:/bin", "PLUTO_VERB": "up-client"}))
    assert ok is False
    assert any(str(nul_script) in r.getMessage() for r in caplog.records), caplog.records
