"""Review revroot3 of h/fixrootfiles2's #! line read (scriptfile.shebang): proofs, each fails on main.

F2: at `tunsec up` root checks the updown scripts for the service user who will run them (daemon.prepare:
updown.refusals for the target's uid).  A script reached through a link or folder of that user's passes the
check with Checked.by_owner, whose docstring says root then opens it "through an O_PATH descriptor
(scriptfile), never as root".  But shebang opens /proc/self/fd/N of that O_PATH descriptor for reading, and
that open is a new one, permission-checked for the caller: root.  So root opens and reads a root-only file the
service user linked in (a script of another service's in a 0700 folder), and its #! line ends up in the start's
refusal.

F3: shebang's read is not guarded: a regular file whose read fails (sysfs and procfs attributes: the
kernel reports them as regular files; /sys/class/net/lo/speed answers EINVAL) makes check() and launch()
raise OSError instead of Untrusted: `tunsec up` (daemon.prepare -> updown.refusals) and updown.run, which
promise a clear error (a refusal, "cannot run it"), end in a traceback.  The service user may point its script
there (a link in a folder it owns), root at start and the runner at each run then raise.

Real files, owners and inotify (the tests run as root)."""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
from collections.abc import Iterator
from pathlib import Path

import pytest
from opened import Inotify
from reachable import scratch_dir

from tunsec import scriptfile, updown
from tunsec.safefs import Untrusted

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (owners, the check as root)")
SERVICE = "tunsec"
SYSFS_EINVAL = Path("/sys/class/net/lo/speed")   # root's, 0444, a "regular file" whose read says EINVAL


def service_uid() -> int:
    return pwd.getpwnam(SERVICE).pw_uid


@pytest.fixture
def base() -> Iterator[Path]:
    with scratch_dir("revroot3-scripts-") as d:
        yield d


def service_folder(base: Path) -> Path:
    """The service user's scripts' folder (allowed: it runs them anyway)."""
    folder = base / "scripts"
    folder.mkdir(mode=0o755)
    os.chown(folder, service_uid(), -1)
    return folder


def service_link(target: Path, link: Path) -> None:
    os.symlink(target, link)
    os.lchown(link, service_uid(), -1)


def test_root_does_not_read_a_root_only_script_the_service_user_linked_in(base: Path) -> None:
    """F2: another service's root-only script (0700 in a 0700 folder: the service user may not read it)."""
    vault = base / "other-service"
    vault.mkdir(mode=0o700)
    secret = vault / "backup.sh"
    secret.write_text("#!not-for-tunsec-to-read\n")
    secret.chmod(0o700)
    link = service_folder(base) / "updown.sh"
    service_link(secret, link)
    watch = Inotify(secret)
    try:
        try:
            scriptfile.check(str(link), service_uid())
            why = ""
        except Untrusted as err:
            why = err.why
        opened = watch.opened()
    finally:
        watch.close()
    assert "not-for-tunsec-to-read" not in why, f"root read a root-only file the service user linked in: {why}"
    assert not opened, f"root opened {secret} (its own, 0700) through a link of the service user's"


def test_a_script_whose_read_fails_is_refused_at_start_not_raised(base: Path) -> None:
    """F3 at `tunsec up`: the refusals of the scripts the service user will run (daemon.prepare)."""
    link = service_folder(base) / "updown.sh"
    service_link(SYSFS_EINVAL, link)
    try:
        refused = scriptfile.refusals([("updown script", str(link))], service_uid())
    except OSError as err:
        pytest.fail(f"the start's check of the updown script raised {err!r} (a traceback), not a refusal")
    assert refused and "lo/speed" in refused[0], refused   # names the file (resolved: /sys/devices/...)


def test_a_script_whose_read_fails_is_not_run_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    """F3 at a run: updown.run promises "failures ... are logged, never raised"."""
    caplog.set_level(logging.ERROR, logger="tunsec")
    try:
        ran = asyncio.run(updown.run([str(SYSFS_EINVAL)], {"PLUTO_VERB": "up-client", "PLUTO_CONNECTION": "c"}))
    except OSError as err:
        pytest.fail(f"updown.run raised {err!r} (a traceback in the IKE service's task), not a logged error")
    assert ran is False
    assert "cannot run it" in caplog.text, caplog.text
