"""What stands in the way of a path tunsec makes or uses at its start, said with the setting that names it and
the fix (review revconf F2): a control socket's name held by something else, a regular file where its directory
(or one above) should be.  `install -d` cannot fix a file in the way: it has to go, or the setting elsewhere."""

from __future__ import annotations

import os
from pathlib import Path

from tunsec.safefs import kind

__all__ = ["in_the_way", "socket_dir_refusal", "socket_refusal"]

SOCKET = "tunsec { control_socket }"
ELSEWHERE = "move it away or choose another path"


def in_the_way(directory: Path) -> tuple[Path, int] | None:
    """(The path, its st_mode) of what stands where directory, or a directory above it, should be, when it is
    not a directory (a regular file, a dangling link...); None when the nearest existing one is a directory."""
    here = directory
    while not os.path.lexists(here) and here != here.parent:
        here = here.parent
    if os.path.isdir(here):
        return None
    try:
        return here, os.lstat(here).st_mode
    except OSError:   # gone meanwhile: what comes next says what it finds
        return None


def socket_dir_refusal(path: str, in_way: tuple[Path, int]) -> str:
    where, mode = in_way
    return (f"the control socket {path} ({SOCKET}) cannot be made: {where} is {kind(mode)}, not a directory: "
            f"{ELSEWHERE} in {SOCKET}")


def socket_refusal(path: str, mode: int) -> str:
    return (f"the control socket {path} ({SOCKET}) exists and is {kind(mode)}, not a socket: {ELSEWHERE} in "
            f"{SOCKET}")
