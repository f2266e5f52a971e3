"""Who besides root may change what a configuration reads, and how it is read then (review revconf F1).

As root (`tunsec up` before its drop, prepare, init-state, a reload with `user = root`) a configuration file,
or one it includes, must be one nobody but root may change; a credential one nobody but root and the service
user may change (safefs.trusted).  The files are not all: a folder an include glob or a credential folder
(x509ca/, private/...) looks in is checked too, even empty.  Owned by another user it would pass while
empty, and that user's file put there later would be loaded by the next reload.

After the drop the service user reloads: it reads with the same check, itself allowed besides root (it may
change its own credentials and what it may write anyway), never another user's file or folder.  What it
reads goes through safefs.read_checked: the file checked, regular, bounded: a FIFO swapped in would hang
the reload while it holds the daemon's reload lock.

A process that never was root (run as the user) checks nothing: what the file says decides nothing that user
could not do itself (docs/privileges.md)."""

from __future__ import annotations

import glob
import os
import re
import stat
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from tunsec import safefs

__all__ = ["GLOB_MAGIC", "FileCheck", "folder_untrusted", "glob_folders", "kind_of", "refusal_line", "reread_refusal"]

GLOB_MAGIC = re.compile(r"[*?[]")


@dataclass(frozen=True)
class FileCheck:
    """How a configuration's files are checked before they are read: as root (service_uid None), or as the
    service user at its reload after the drop (service_uid its uid, allowed besides root)."""

    service_uid: int | None = None

    @staticmethod
    def of(root_check: bool, service_user: bool = False) -> FileCheck | None:
        """root_check: the caller acts as root on what the file says (load_config's); service_user: the caller
        is the control process after its drop (a reload).  None: nothing is checked."""
        if not root_check:
            return None
        euid = os.geteuid()
        if euid == 0:
            return FileCheck()
        return FileCheck(euid) if service_user else None

    @property
    def owners(self) -> tuple[int, ...]:
        """Who besides root may change a configuration file, or the folder an include glob looks in."""
        return () if self.service_uid is None else (self.service_uid,)

    def credential_owners(self, configured: tuple[int, ...]) -> tuple[int, ...]:
        """Who besides root may change a credential: configured (credentials.credential_owners, the service
        user tunsec { user } names) as root; the service user itself at its reload."""
        return configured if self.service_uid is None else self.owners

    def read(self, path: str) -> tuple[bytes, str]:
        """(The content, "" or what the file is when not a regular file: "a pipe"), as checked (safefs.trusted with
        owners, then read_checked); safefs.Untrusted when it may not be read."""
        checked = safefs.trusted(path, self.owners)
        if checked.pipe_ino is not None and self.owners:   # only a name of root's alone may lead to a pipe
            raise safefs.Untrusted(f"{path} is a pipe: a reload reads only regular files")
        return safefs.read_checked(path, checked), "a pipe" if checked.pipe_ino is not None else ""


def kind_of(fd: int) -> str:
    """"" for a regular file, else what the open file fd is ("a pipe", "a character device"...)."""
    mode = os.fstat(fd).st_mode
    if stat.S_ISREG(mode):
        return ""
    return "a pipe" if stat.S_ISFIFO(mode) else safefs.kind(mode)


def glob_folders(pattern: str) -> list[str]:
    """The folders glob.glob(pattern) looks in: the one its fixed part names, and each folder its wildcards
    match on the way to the files.  A file added to any of them, or a folder of the rest made in one, is
    included at the next read."""
    parts = os.path.dirname(pattern).split("/")
    fixed = next((i for i, p in enumerate(parts) if GLOB_MAGIC.search(p)), len(parts))
    folders = ["/".join(parts[:fixed]) or ("/" if pattern.startswith("/") else ".")]
    for i in range(fixed + 1, len(parts) + 1):
        folders += [m for m in sorted(glob.glob("/".join(parts[:i]))) if os.path.isdir(m)]
    return folders


def folder_untrusted(directory: str, owners: Collection[int]) -> safefs.Untrusted | None:
    """Why a user but root and owners may add a file to directory (or rename one in it, or the folder itself),
    as safefs.Untrusted (why, and the fix: commands naming the path at fault); None when nobody may.  A folder
    not made yet is judged by the nearest folder above it that is: who may make it."""
    here = Path(directory)
    # nothing is added under a regular file (or the like) unless its folder lets it be replaced
    while not (os.path.isdir(here) or os.path.islink(here)) and here != here.parent:
        here = here.parent
    try:
        why, real = safefs.resolve_private(here, owners)
    except OSError as err:
        return safefs.Untrusted(f"{err.filename or here} cannot be looked at: {err.strerror or err}")
    except ValueError:   # a NUL in the name: nothing by that name can exist
        return None
    return None if why is None else safefs.Untrusted(why, safefs.fix_for(real))


def refusal_line(path: str, why: str, fix: str, user: str | None, owners: tuple[int, ...] = (),
                 pattern: str = "") -> str:
    """The refusal of a configuration file (or, with pattern, the folder an include glob looks in): what is
    wrong, why it matters, the fix.  As root (no owners) a file's is privilege.config_refusal; at the service
    user's reload (owners: its uid) that user may change it too."""
    from tunsec.privilege import config_refusal

    if not pattern and not owners:
        return config_refusal(path, why, fix, user)
    allowed = " and ".join(["root", *(safefs.who(uid) for uid in owners)])
    runs = "tunsec runs as root here and does" if not owners else f"tunsec, reloading as {safefs.who(owners[0])}, does"
    todo = f"as root, {fix}" if fix else "make it root's, writable by root alone"
    if pattern:
        return (f"refusing include folder {path} (include {pattern}): {why}; {runs} what the files it includes "
                f"say, and a file added there later is included at the next reload, so nobody but {allowed} may "
                f"change the folder an include looks in, even while it is empty: {todo}, or include from a folder "
                "only root may change")
    return (f"refusing configuration file {path}: {why}; {runs} what it says, so nobody but {allowed} may "
            f"change it or a directory on its path: {todo}")


def reread_refusal(path: str, kind: str) -> str:
    """A reload's refusal of a configuration that was not a regular file at the start (Config.not_regular):
    a pipe (-c /dev/stdin, -c <(...)) was read to its end, and read again it would be empty."""
    return (f"{path}: reload refused, nothing changed: the configuration was read from {kind} ({path}) at the "
            "start, and a reload cannot read it again: restart tunsec to change the configuration, or start it "
            "with -c FILE, a regular file, to reload it")
