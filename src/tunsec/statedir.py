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
import fnmatch
import os
import pwd
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from tunsec.dataplane import blockrecord
from tunsec.safefs import open_private, read_regular, resolve_private, write_atomic_at
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
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise StateError(f"{what} does not exist. {_fix(path)}") from None
    except NotADirectoryError:
        raise StateError(f"{what} is not a directory: move it away (then {INIT_COMMAND}) or choose another path "
                         "in tunsec { state_dir }") from None
    except OSError as err:
        raise StateError(f"{what} cannot be used: {err.strerror or err}") from err
    try:
        return marker_at(fd, path)
    finally:
        os.close(fd)


def _old_state_files(fd: int) -> list[str]:
    return sorted(n for n in os.listdir(fd) if fnmatch.fnmatchcase(n, "manual-*.json"))


def marker_at(fd: int, path: Path) -> str:
    """read_marker of the directory fd (path names it in messages): read through the descriptor, as
    root by `tunsec up` and `tunsec init-state` in a directory the service user owns."""
    what = f"cannot start manual tunnels: the state directory {path} (tunsec {{ state_dir }})"
    try:
        text = read_regular(MARKER, dir_fd=fd).decode("ascii")
    except FileNotFoundError:
        old = _old_state_files(fd)
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
        the directory, take the lock and prove it writable (StateError says how to fix it).  Everything
        after the check goes through the directory's descriptor (fd, kept for SeqState): the owner may
        rename it and put a link in its place meanwhile, which then moves nothing of root's elsewhere."""
        read_marker(path)   # what is missing, named before anything else
        user = os.geteuid() if owner is None else owner
        # from here on the resolved path: nobody else may change it, a link on the way they might re-point
        path = check_private(path, user)
        fd = _open_checked(path, user)
        try:
            instance = marker_at(fd, path)   # of the directory locked and used, not of the one read above
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _probe(fd, path)
        except BlockingIOError:
            os.close(fd)
            raise StateError(
                f"cannot start manual tunnels: another tunsec uses the state directory {path} (it holds its "
                "lock). Two instances on one state directory would reserve the same sequence numbers: stop "
                "the other one, or give this one its own state_dir and its own keys") from None
        except StateError:
            os.close(fd)
            raise
        except OSError as err:
            os.close(fd)
            raise StateError(f"cannot lock the state directory {path}: {err.strerror or err}") from err
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


def _open_checked(path: Path, user: int) -> int:
    """The directory path (check_private's result) opened by a walk of descriptors that checks each
    directory again (StateError when one changed since)."""
    try:
        why, fd = open_private(str(path), {os.geteuid(), user})
    except OSError as err:
        raise StateError(f"cannot open the state directory {path}: {err.strerror or err} (did it change while "
                         "tunsec checked it?)") from err
    if why is not None:
        raise StateError(f"cannot start manual tunnels: the state directory {path} changed while tunsec checked "
                         f"it: {why}")
    return fd


def _name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _probe(fd: int, path: Path) -> None:
    try:
        write_atomic_at(fd, ".probe", b"")
        os.unlink(".probe", dir_fd=fd)
    except OSError as err:
        raise StateError(
            f"cannot use the state directory {path} for manual tunnels' sequence numbers: "
            f"{err.strerror or err}. Make it writable by the user tunsec runs as") from err


@dataclass(frozen=True)
class Initialised:
    instance: str
    new: bool        # False: it was initialised before (nothing changed)
    adopted: int     # sequence state files already there (an upgrade)


def init_state_dir(path: Path, owner: int | None = None) -> Initialised:
    """Create path (0700) if needed and write its marker unless it has one (OSError, StateError).
    owner: the uid tunsec runs as, who may own path where others could have made it first."""
    st, fd = _make_dir(path, owner)
    try:
        return _init_at(fd, st, path)
    finally:
        os.close(fd)


def _init_at(fd: int, st: os.stat_result, path: Path) -> Initialised:
    """init_state_dir in the directory _make_dir walked to: through its descriptor, so its owner renaming
    it and putting a link in its place moves no marker of root's elsewhere."""
    with contextlib.suppress(StateError):
        return Initialised(marker_at(fd, path), False, 0)
    with contextlib.suppress(FileNotFoundError):
        os.lstat(MARKER, dir_fd=fd)   # there but unreadable or corrupt: not overwritten blindly
        raise StateError(f"{path / MARKER} exists but is not a marker tunsec init-state wrote (or cannot be "
                         "read); it is left as it is. If the state in this directory is in doubt, replace "
                         "every manual key on both peers, remove that file and run tunsec init-state again")
    instance = secrets.token_hex(16)
    # root initialising a directory `tunsec prepare` gave to the user tunsec runs as: the marker is
    # that user's before it has a name there (a chown by name would follow what the user put there)
    owner_ids = (st.st_uid, st.st_gid) if os.geteuid() == 0 and (st.st_uid, st.st_gid) != (0, 0) else None
    write_atomic_at(fd, MARKER, (MARKER_PREFIX + instance + "\n").encode(), owner_ids)
    return Initialised(instance, True, len(_old_state_files(fd)))


_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _make_dir(path: Path, owner: int | None) -> tuple[os.stat_result, int]:
    """path created (0700) if missing, its parents (0755) too: its stat and a descriptor (the caller's
    to close), each directory opened relative to the one before it without following a symbolic link.
    As root every directory on the way must be one only root may change, checked through its
    descriptor before anything is made in it: elsewhere a parent swapped for a symlink would move
    root's mkdir and marker anywhere; and path itself root's or owner's where others may add entries
    (a sticky parent: anyone could have made it first).  StateError names the directory, what is
    wrong and what to do."""
    root = os.geteuid() == 0
    # not root, a symbolic link on the way moves nothing the user could not reach anyway.  As root the
    # components as written, "x/.." too (the kernel's x, not abspath's text, which drops x unlooked at)
    full = os.path.join(os.getcwd(), path) if root else os.path.join(os.path.realpath(path.parent), path.name)
    names = [c for c in full.split("/") if c not in ("", ".")] or ["."]
    dfd = os.open("/", _DIR)
    try:
        where = Path("/")
        if root:
            _root_only(dfd, where, path)
        for name in names[:-1]:
            where = where.parent if name == ".." else where / name
            parent, dfd = dfd, -1
            try:
                dfd = _enter(parent, name, where, path, 0o755)
            finally:
                os.close(parent)
            if root:
                _root_only(dfd, where, path)
        fd = _enter(dfd, names[-1], path, path, 0o700)
        try:
            st = os.fstat(fd)
            if root and st.st_uid not in (0, owner) and os.fstat(dfd).st_mode & stat.S_ISVTX:
                raise StateError(
                    f"{path} is owned by {_name(st.st_uid)}, not root nor the user tunsec runs as, in "
                    f"{path.parent}, where any user may make it first; root initialises no directory of another "
                    "user's. Look at what it holds, remove it and run tunsec init-state again, or choose a "
                    "state_dir of tunsec's own such as /var/lib/tunsec (tunsec prepare makes it)")
        except BaseException:
            os.close(fd)
            raise
        return st, fd
    finally:
        if dfd >= 0:
            os.close(dfd)


def _enter(dfd: int, name: str, where: Path, path: Path, mode: int) -> int:
    """The directory name in dfd (made with mode if missing, unless ".."), opened without following a
    symbolic link."""
    try:
        if name not in (".", ".."):
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, mode, dir_fd=dfd)
        return os.open(name, _DIR, dir_fd=dfd)
    except OSError as err:
        # O_DIRECTORY answers ENOTDIR for a symbolic link, O_NOFOLLOW ELOOP
        link = err.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(dfd, name)
        if where == path:
            why = "it is a symbolic link (not followed)" if link else err.strerror
            raise StateError(f"{why}; state_dir must be a directory, not a symbolic link: name the "
                             "directory itself in tunsec { state_dir }") from err
        if link:
            raise StateError(
                f"{where} is a symbolic link (not followed), so root does not create or initialise {path} "
                f"through it: name state_dir by its real path ({os.path.realpath(path)}), if only root may "
                "change each directory on it") from err
        raise StateError(f"cannot create or open {where} on the way to {path}: {err.strerror}") from err


def _is_link(dfd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=dfd).st_mode)
    except OSError:
        return False


def _root_only(fd: int, where: Path, path: Path) -> None:
    """StateError unless no user but root may rename, replace or add entries in the directory fd (a
    sticky one, /tmp, lets others add entries but not rename or remove root's)."""
    st = os.fstat(fd)
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid != 0:
        why = f"it is owned by {_name(st.st_uid)}"
    elif mode & 0o022 and not mode & stat.S_ISVTX:
        why = f"it is writable by {'others' if mode & 0o002 else 'its group'}, mode {mode:04o}"
    else:
        return
    raise StateError(
        f"users other than root may change {where} ({why}), so root does not create or initialise {path} "
        f"there. Run tunsec init-state as the user tunsec runs as (the owner of {where}), or choose a "
        "state_dir in a directory only root may change (tunsec prepare then gives it to that user)")


# What tunsec itself keeps in the directories root gives to the service user (state_dir, the control socket's
# directory): the marker, sequence state files, a TUN's record of its prohibit routes (per network namespace
# but the initial: :ns<inode>, an older tunsec's .ns<inode>) and the temporary files they are written
# through, the writable probe; the control socket is named by the caller.
_NAMES = (rf"{re.escape(MARKER)}|manual-[0-9a-z-]+\.json|{re.escape(blockrecord.PREFIX)}[^/:\s]{{1,15}}"
          r"(?:[.:]ns[0-9]{1,10})?|\.probe")
_ENTRY = re.compile(rf"{_NAMES}|\.(?:{_NAMES})\.\w+\.tmp")


def tunsecs(name: str) -> bool:
    """name is one tunsec writes in its state directory (safefs.give_dir hands over only those)."""
    return _ENTRY.fullmatch(name) is not None


USE_OWN = ("Use a directory of tunsec's own (such as /run/tunsec/ for control_socket, /var/lib/tunsec/ for "
           "state_dir): tunsec prepare creates it")


def refusal(fd: int, user: int, socket: str = "") -> str | None:
    """Why root must not give the existing directory fd to the user uid user ("it ..."), or None: it
    may when it is root's or user's and holds nothing but tunsec's entries (and socket, the control socket's
    name) and what user put there.  So neither a shared directory (/etc/tunsec with the configuration,
    /var/lib, /run) nor one another user made first (in /tmp) becomes the user's, nor any of its files.
    The one rule of `tunsec prepare` and of `tunsec up`'s drop."""
    st = os.fstat(fd)
    if st.st_uid not in (0, user):
        return (f"it exists and is owned by {_who(st.st_uid)}, mode {stat.S_IMODE(st.st_mode):04o}: neither root nor "
                f"{_name(user)}: another user made it first, and what it holds or its mode is theirs. Remove it "
                f"(look at what it holds first), or choose another path. {USE_OWN}")
    foreign = []
    for name in sorted(os.listdir(fd)):
        if name == socket or tunsecs(name):
            continue
        with contextlib.suppress(FileNotFoundError):
            if os.lstat(name, dir_fd=fd).st_uid != user:
                foreign.append(name)
    if not foreign:
        return None
    shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
    return (f"it holds entries that are not tunsec's ({shown}); giving it away would let {_name(user)} replace "
            f"them. {USE_OWN}")


def _who(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"

