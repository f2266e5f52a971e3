"""At start root reads a script's #! line for the user who will run it (scriptfile.shebang): only the file the
check found, never what a directory of that user's leads to once renamed after the check.  The service user
owns its scripts' folder (allowed: it runs them anyway); swapping that folder for a link to /dev between
root's check and root's open had root open /dev/watchdog (a reboot) or a FIFO (a hang).  Found while fixing
review revrootfiles F2 (the same race for credentials); failed before the fix: root opened the decoy.

Real files, owners and inotify (the tests run as root); the swap is made certain by a wrapper around the check,
as a process of the service user renaming in a loop would now and then win it."""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterator
from pathlib import Path

import pytest
from opened import Inotify
from reachable import scratch_dir

from tunsec import scriptfile
from tunsec.safefs import Checked, Untrusted
from tunsec.safefs import trusted as real_trusted

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (owners, the check as root)")
SERVICE = "tunsec"


@pytest.fixture
def base() -> Iterator[Path]:
    with scratch_dir("fixrootfiles2-shebang-") as d:
        yield d


def test_root_reads_no_file_a_swapped_folder_leads_to(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uid = pwd.getpwnam(SERVICE).pw_uid
    folder = base / "scripts"   # the service user's, as its own scripts' folder may be
    folder.mkdir(mode=0o755)
    script = folder / "updown.sh"
    script.write_text("#!/bin/sh\ntrue\n")
    script.chmod(0o755)
    os.chown(script, uid, -1)
    os.chown(folder, uid, -1)
    elsewhere = base / "elsewhere"   # in real life /dev, where the name is a device's
    elsewhere.mkdir()
    decoy = elsewhere / script.name
    decoy.write_text("#!/bin/sh\nnot for root to open\n")
    watch = Inotify(decoy)

    def raced(path: str, owners: tuple[int, ...] = ()) -> Checked:
        checked = real_trusted(path, owners)
        if path == str(script):   # the service user's renames, after the check
            folder.rename(base / "scripts.old")
            os.symlink(elsewhere, folder)
            os.lchown(folder, uid, -1)
        return checked

    monkeypatch.setattr(scriptfile, "trusted", raced)
    try:
        with pytest.raises(Untrusted, match="replaced"):
            scriptfile.check(str(script), uid)
        assert not watch.opened(), f"root opened {decoy}, where the service user's renamed folder led"
    finally:
        watch.close()
