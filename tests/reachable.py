"""Run tunsec where the users it drops to can start Python again.

The control process gives up root once set up; a worker it restarts later is
started by that user.  Where this interpreter lives under a directory others may
not search (pyenv in /root, as on the development machines; CI's Debian Python in
/usr is fine), the command runs in a mount namespace of its own in which that
directory is an empty searchable tmpfs with only the interpreter's tree mounted
back in: nothing on the host changes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

SCRIPT = """set -e
keep=$(mktemp -d)
mount --bind "$1" "$keep"
mount -t tmpfs -o mode=755 tunsec-test "$2"
mkdir -p "$1"
mount --move "$keep" "$1"
rmdir "$keep"
shift 2
exec "$@"
"""


def _closed_dir(path: Path) -> tuple[Path, Path] | None:
    """The first directory on path others may not search, and its child on the way."""
    parts = path.parts
    for i in range(1, len(parts) - 1):
        d = Path(*parts[: i + 1])
        if not os.stat(d).st_mode & stat.S_IXOTH:
            return d, Path(*parts[: i + 2])
    return None


def python_argv(as_user: list[str] | None = None) -> list[str]:
    """sys.executable, wrapped so that any user can run it again; as_user (a setpriv command, say)
    runs it after the mounts are made."""
    closed = _closed_dir(Path(sys.executable).resolve())
    tail = [*(as_user or []), sys.executable]
    if closed is None:
        return tail
    d, child = closed
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", SCRIPT, "sh", str(child), str(d), *tail]


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A scratch directory the users tunsec drops to can reach (pytest's own is root's alone)."""
    d = Path(tempfile.mkdtemp(prefix=prefix))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


CLOSED_SCRIPT = """set -e
mount -t tmpfs -o mode=700 tunsec-test /mnt
mkdir /mnt/prefix
mount --rbind "$1" /mnt/prefix
rel=$2
shift 2
exec "/mnt/prefix/$rel" "$@"
"""


def unreachable_python_argv() -> list[str]:
    """This interpreter run from a directory only root may search, wherever it is installed (Debian's
    /usr/bin/python3 is every user's): what a user tunsec drops to meets where the interpreter is not
    theirs to run.  Its installation is bound under a tmpfs of mode 0700 on /mnt, in a mount namespace
    of its own: nothing on the host changes."""
    prefix = Path(sys.base_prefix).resolve()
    rel = Path(sys.executable).resolve().relative_to(prefix)
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", CLOSED_SCRIPT, "sh", str(prefix), str(rel)]
