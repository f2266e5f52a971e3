"""Run tunsec where the users it drops to can start Python again.

The control process gives up root once set up; a worker it restarts later is
started by that user, from this interpreter and this checkout's tunsec package.
Where either lives under a directory others may not search (pyenv in /root, as on
the development machines; a checkout in /root on a fresh machine; Debian's Python
in /usr is fine), the command runs in a mount namespace of its own in which that
directory is an empty searchable tmpfs with only the interpreter's and the
package's trees mounted back in: nothing on the host changes.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import tunsec


def _closed_dir(path: Path) -> tuple[Path, Path] | None:
    """The first directory on path others may not search, and its child on the way."""
    parts = path.parts
    for i in range(1, len(parts) - 1):
        d = Path(*parts[: i + 1])
        if not os.stat(d).st_mode & stat.S_IXOTH:
            return d, Path(*parts[: i + 2])
    return None


def _opening_script(paths: list[Path]) -> str | None:
    """The mounts that open each closed directory on the way to paths, keeping only those paths'
    trees in it; None when every path is reachable already."""
    plan: dict[Path, list[Path]] = {}
    for path in paths:
        if (closed := _closed_dir(path)) is not None and closed[1] not in plan.setdefault(closed[0], []):
            plan[closed[0]].append(closed[1])
    if not plan:
        return None
    lines = ["set -e"]
    for closed_dir, children in plan.items():
        # set aside first: the tmpfs hides what was there
        for n, child in enumerate(children):
            lines += [f"keep{n}=$(mktemp -d)", f'mount --bind {shlex.quote(str(child))} "$keep{n}"']
        lines.append(f"mount -t tmpfs -o mode=755 tunsec-test {shlex.quote(str(closed_dir))}")
        for n, child in enumerate(children):
            lines += [f"mkdir -p {shlex.quote(str(child))}", f'mount --move "$keep{n}" {shlex.quote(str(child))}',
                      f'rmdir "$keep{n}"']
    return "\n".join([*lines, 'exec "$@"', ""])


def python_argv(as_user: list[str] | None = None) -> list[str]:
    """sys.executable, wrapped so that any user can run it again, on this checkout's tunsec; as_user
    (a setpriv command, say) runs it after the mounts are made."""
    tail = [*(as_user or []), sys.executable]
    script = _opening_script([Path(sys.executable).resolve(), Path(tunsec.__file__).resolve()])
    if script is None:
        return tail
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *tail]


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
