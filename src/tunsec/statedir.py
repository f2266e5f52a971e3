"""The state directory of manual tunnels: initialised on purpose, used by one tunsec at a time.

A key's sequence state (tunsec.seqstate) is the only thing that keeps a restarted tunsec from
sending AES-GCM nonces again under a manual key.  A missing file therefore cannot simply mean
"a key never used": after a container is re-created with a fresh volume, on a tmpfs after a
reboot, or in a wiped directory, every file is missing and every key would start at sequence
number 1 again.  So the directory carries a marker (a random instance id) written only by
``tunsec init-state``; without it manual tunnels refuse to start.  Once it is there, a key
without a file is new.  (A directory restored from an older backup still has its marker: that
case cannot be told apart here, and the documentation says to replace the keys.)

Two instances on one directory would reserve the same numbers: the daemon holds an flock on
the directory for as long as it runs.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pwd
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from tunsec.safefs import nearest_existing, read_regular, resolve_private, root_only, write_atomic
from tunsec.seqstate import StateError

MARKER = "tunsec-instance-id"
MARKER_PREFIX = "tunsec state directory v1 "
INIT_COMMAND = "tunsec init-state -c CONFIG"


def _fix(path: Path) -> str:
    return (f"For a new installation (keys never used before), initialise it once: {INIT_COMMAND} "
            f"(it creates {path} and its marker). If this tunsec ran before and its state was lost "
            "(a re-created container or volume, a wiped or re-created directory, a tmpfs after a reboot), "
            "first generate new keys for every manual tunnel on both peers (key_in, key_out): the old "
            "keys' used sequence numbers (AES-GCM nonces) are unknown")


def read_marker(path: Path) -> str:
    """The instance id of an initialised state directory; StateError names what is missing and the fix."""
    what = f"cannot start manual tunnels: the state directory {path} (tunsec {{ state_dir }})"
    try:
        is_dir = stat.S_ISDIR(path.stat().st_mode)
    except FileNotFoundError:
        raise StateError(f"{what} does not exist. {_fix(path)}") from None
    except OSError as err:
        raise StateError(f"{what} cannot be used: {err.strerror or err}") from err
    if not is_dir:
        raise StateError(f"{what} is not a directory")
    try:
        # read as root by `tunsec up` and `tunsec init-state` in a directory the service user owns
        text = read_regular(path / MARKER).decode("ascii")
    except FileNotFoundError:
        old = sorted(p.name for p in path.glob("manual-*.json"))
        upgrade = (f" It holds {len(old)} sequence state file(s) of a tunsec without this marker: if it is "
                   f"the directory these keys have used all along (an upgrade), {INIT_COMMAND} adopts them."
                   if old else "")
        raise StateError(f"{what} was never initialised: its marker {path / MARKER} is missing.{upgrade} "
                         f"{_fix(path)}") from None
    except (OSError, UnicodeDecodeError) as err:
        why = err.strerror if isinstance(err, OSError) else "not ASCII"
        raise StateError(f"{what}: cannot read its marker {path / MARKER}: {why}") from err
    instance = text.strip().removeprefix(MARKER_PREFIX.strip()).strip()
    if not text.startswith(MARKER_PREFIX) or len(instance) != 32 or not all(c in "0123456789abcdef" for c in instance):
        raise StateError(f"{what}: its marker {path / MARKER} is not one tunsec init-state wrote (corrupt?). "
                         f"{_fix(path)}")
    return instance


@dataclass
class StateDir:
    """An initialised state directory, locked for this process until close()."""

    path: Path
    instance: str
    fd: int

    @classmethod
    def open(cls, path: Path, owner: int | None = None) -> StateDir:
        """Check the marker and that no user but root, this one and owner (the uid it becomes) may change
        the directory, take the lock and prove it writable (StateError says how to fix it)."""
        instance = read_marker(path)
        # from here on the resolved path: nobody else may change it, a link on the way they might re-point
        path = check_private(path, os.geteuid() if owner is None else owner)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as err:
            raise StateError(f"cannot open the state directory {path}: {err.strerror or err}") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateError(
                f"cannot start manual tunnels: another tunsec uses the state directory {path} (it holds its "
                "lock). Two instances on one state directory would reserve the same sequence numbers: stop "
                "the other one, or give this one its own state_dir and its own keys") from None
        except OSError as err:
            os.close(fd)
            raise StateError(f"cannot lock the state directory {path}: {err.strerror or err}") from err
        try:
            _probe(path)
        except StateError:
            os.close(fd)
            raise
        return cls(path, instance, fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)   # releases the lock
            self.fd = -1


def check_private(path: Path, user: int) -> Path:
    """path with its symbolic links resolved; StateError unless only root, this process's user and user
    (whom tunsec runs as) may add, remove or rename entries in it or re-point a link on the way to it
    (safefs.resolve_private)."""
    try:
        why, real = resolve_private(path, {os.geteuid(), user})
    except OSError as err:
        raise StateError(f"cannot check the state directory {path}: {err.strerror or err}") from err
    if why is None:
        return Path(real)
    who = _name(user)
    raise StateError(
        f"cannot start manual tunnels: the state directory {path} (tunsec {{ state_dir }}) may be changed by "
        f"users other than {'root and ' if user else ''}{who}: {why}. One of them could remove a key's sequence "
        f"state file, and that key would start again at sequence number 1 (repeated AES-GCM nonces). "
        f"Make it {who}'s alone (as root: chown {who}: {path} && chmod 0700 {path}) in "
        "directories only root may change, or choose a state_dir of its own such as /var/lib/tunsec "
        "(tunsec prepare makes it). If others could write there while tunsec used it, generate new keys "
        "for every manual tunnel on both peers too")


def _name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _probe(path: Path) -> None:
    try:
        write_atomic(path / ".probe", b"")
        (path / ".probe").unlink()
    except OSError as err:
        raise StateError(
            f"cannot use the state directory {path} for manual tunnels' sequence numbers: "
            f"{err.strerror or err}. Make it writable by the user tunsec runs as") from err


@dataclass(frozen=True)
class Initialised:
    instance: str
    new: bool        # False: it was initialised before (nothing changed)
    adopted: int     # sequence state files already there (an upgrade)


def init_state_dir(path: Path) -> Initialised:
    """Create path (0700) if needed and write its marker unless it has one (OSError, StateError)."""
    st = _make_dir(path)
    with contextlib.suppress(StateError):
        return Initialised(read_marker(path), False, 0)
    if os.path.lexists(path / MARKER):   # there but unreadable or corrupt: not overwritten blindly
        raise StateError(f"{path / MARKER} exists but is not a marker tunsec init-state wrote (or cannot be "
                         "read); it is left as it is. If the state in this directory is in doubt, replace "
                         "every manual key on both peers, remove that file and run tunsec init-state again")
    instance = secrets.token_hex(16)
    # root initialising a directory `tunsec prepare` gave to the user tunsec runs as: the marker is
    # that user's before it has a name there (a chown by name would follow what the user put there)
    owner = (st.st_uid, st.st_gid) if os.geteuid() == 0 and (st.st_uid, st.st_gid) != (0, 0) else None
    write_atomic(path / MARKER, (MARKER_PREFIX + instance + "\n").encode(), owner)
    return Initialised(instance, True, len(list(path.glob("manual-*.json"))))


def _make_dir(path: Path) -> os.stat_result:
    """path created (0700) if missing, and its stat through a descriptor opened without following a
    symbolic link.  As root only under a parent nobody but root may change: elsewhere a parent swapped
    for a symlink would move root's mkdir and marker anywhere (StateError says so and what to do)."""
    if os.geteuid() == 0:
        _root_only_parent(path, nearest_existing(path.parent))   # before anything is created
    path.parent.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        _root_only_parent(path, path.parent)   # the parents just made (a umask of 0 leaves them open)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        # O_DIRECTORY answers ENOTDIR for a symbolic link, O_NOFOLLOW ELOOP
        link = err.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(path)
        why = "it is a symbolic link (not followed)" if link else err.strerror
        raise StateError(f"{why}; state_dir must be a directory, not a symbolic link: name the "
                         "directory itself in tunsec { state_dir }") from err
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def _root_only_parent(path: Path, parent: Path) -> None:
    if not root_only(parent):
        raise StateError(
            f"users other than root may change {parent}, so root does not create or initialise {path} there. "
            f"Run tunsec init-state as the user tunsec runs as (the owner of {parent}), or choose a "
            "state_dir in a directory only root may change (tunsec prepare then gives it to that user)")
