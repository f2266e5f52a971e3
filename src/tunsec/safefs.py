"""Files root reads, writes or gives away where another user may change the directory.

The state directory is the service user's (`tunsec prepare`, systemd's StateDirectory=), yet root
works in it: `tunsec init-state`, and `tunsec up` before it drops privilege.  Any process of that
user (a control process taken over, an updown script) may replace an entry between two of root's
calls.  So root here
- never changes ownership by path: a chown follows a symlink swapped in after the check, and even
  an lchown gives away a file of root's hard-linked in from elsewhere (fs.protected_hardlinks=0).
  Ownership changes go through a descriptor of a file root created itself, or one it opened without
  following a symlink and found to be a regular file with a single link (give);
- creates temporary files under names nobody can have prepared (O_EXCL, random), so it never
  truncates or writes a file that was put there for it;
- reads only regular files, opened without following a symlink and without blocking, up to a size
  (read_regular): a FIFO would hang the start, /dev/zero fill the memory;
- walks a directory only when nobody but root may change the path to it (root_only): O_NOFOLLOW
  guards only the last component, and a parent swapped for a symlink would move the walk to /etc;
- keeps sequence state only in a directory no other user may change (resolve_private): one who may
  remove a key's state file makes that key start again at sequence number 1;
- acts on a configuration file only when nobody but root may change it or the path to it, checked
  before the file is opened and compared with the open file (read_trusted): the file says where root
  creates and gives away directories, and whom the processes run as.  Checked after the read, the
  user would rename or remove the file it made root read, and the check would find nothing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import re
import secrets
import stat
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from pathlib import Path

MAX_READ = 1 << 16   # a marker is 59 bytes, a sequence state file a few hundred
_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def root_only(directory: str | Path) -> bool:
    """True when no user but root may rename, replace or add entries anywhere on the way to directory."""
    path = os.path.abspath(directory)
    while True:
        try:
            st = os.lstat(path)
        except OSError:
            return False
        if stat.S_ISLNK(st.st_mode) or st.st_uid != 0:
            return False
        # a sticky directory (/tmp) lets others add entries, but not rename or remove root's
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            return False
        if path == "/":
            return True
        path = os.path.dirname(path)


def nearest_existing(path: Path) -> Path:
    """path, or the closest of its parents that exists."""
    while not os.path.lexists(path):
        path = path.parent
    return path


def write_fix(err: OSError, directory: str | Path) -> str:
    """What to do when a write in directory failed with err."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"free space (or quota) on the file system of {directory}"
    if err.errno == errno.EROFS:
        return f"{directory} is on a read-only file system: choose a writable one"
    if err.errno == errno.EIO:
        return f"the storage of {directory} failed (an I/O error): check the kernel log and the disk"
    if err.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.ENOTDIR):
        return f"something other than tunsec's file is in its place in {directory}: move it away"
    return f"make {directory} writable by the user tunsec runs as"


def who(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def resolve_private(directory: str | Path, owners: Collection[int], holds_file: bool = False) -> tuple[str | None, str]:
    """(why directory is not private, or None; its path with every symbolic link resolved).

    The directory itself must be root's or an owner's and writable by nobody else; each one the path
    passes through too, except that a sticky one (/tmp) may be writable by others: they cannot rename
    or remove what is not theirs there.  The path is walked as it is written, from /: a symbolic link on
    the way counts only if it is root's or an owner's in a directory that passed, and the walk goes on
    where it points.  Resolving first (realpath) would check only where a link points today, not who may
    point it elsewhere tomorrow.  holds_file: the directory may itself be sticky (/tmp), for a file of root's
    or an owner's in it.  OSError when a component cannot be looked at."""
    trusted = {0, *owners}
    # not abspath: it takes "link/.." away before the link is looked at, which the kernel does not
    todo = [c for c in os.path.join(os.getcwd(), directory).split("/") if c not in ("", ".")][::-1]
    path, links = "/", 0
    while todo:
        why = _not_trusted(path, os.lstat(path), trusted, last=False)
        if why:
            return why, path
        name = todo.pop()
        if name == "..":
            path = os.path.dirname(path)
            continue
        step = os.path.join(path, name)
        st = os.lstat(step)
        if not stat.S_ISLNK(st.st_mode):
            path = step
            continue
        if st.st_uid not in trusted:
            return f"{step} is a symbolic link owned by {who(st.st_uid)}", step
        links += 1
        if links > 40:
            return f"{directory}: too many levels of symbolic links", step
        target = os.readlink(step)
        todo += [c for c in target.split("/") if c and c != "."][::-1]
        if target.startswith("/"):
            path = "/"
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a directory", path
    return _not_trusted(path, st, trusted, last=not holds_file), path


class Untrusted(Exception):
    """Root may not act on a configuration file: ``why``, and ``fix`` (commands naming the path at fault,
    or "" when there is none to run); ``error``: the system's reason when a look or an open failed
    ("Permission denied"), else ""."""

    def __init__(self, why: str, fix: str = "", error: str = "") -> None:
        super().__init__(why)
        self.why, self.fix, self.error = why, fix, error


_PIPE = re.compile(r"pipe:\[(\d+)\]")


@dataclass(frozen=True)
class Checked:
    """What trusted() let through: the file itself (every link resolved) and its (st_dev, st_ino); or an
    anonymous pipe of this process (``-c <(...)``, ``-c /dev/stdin``): pipe_ino its inode, path the magic link
    in /proc the name led to.  by_owner: the file, a directory or a link on the way is an owner's (trusted
    with owners passed, root's alone did not): what the name leads to, that owner chose, so root opens it with
    that owner's ids (credentials._read_as_owner) or through an O_PATH descriptor (scriptfile), never as root."""

    path: str
    ident: tuple[int, int] | None
    pipe_ino: int | None = None
    by_owner: bool = False


def trusted(path: str | Path, owners: Collection[int] = ()) -> Checked:
    """The file path names, when nobody but root (and owners) may change it -- what it holds, or which file
    its name means -- else Untrusted.  The file must be root's (or an owner's) and writable by its owner alone
    (an ACL granting write shows in the group bits), and the directories and symbolic links on the way to it
    pass resolve_private with owners; a link at the end is followed, under the same rule.  A name that leads
    nowhere is refused: root acts only on what it checked, and read_trusted reads only the file checked here.
    Checked.by_owner says when the path passed only thanks to owners (root's alone it did not).
    An anonymous pipe reached through /proc/self/fd (a magic link of root's: ``-c <(...)``, ``/dev/stdin``)
    passes when the way to it is root's alone: only processes root started hold its ends, and no other user
    may open them through /proc (ptrace rule).  Through an owner's link or directory it is refused: the owner
    would pick a pipe root holds itself (its own stdout: root's read never ends)."""
    try:
        return _walk(path, ())
    except Untrusted:
        if not owners:
            raise
    return replace(_walk(path, owners), by_owner=True)   # the same walk, owners' entries allowed


def _walk(path: str | Path, owners: Collection[int]) -> Checked:
    name = os.path.join(os.getcwd(), path)
    for _ in range(40):
        try:
            why, real = resolve_private(os.path.dirname(name), owners, holds_file=True)
            if why:
                raise Untrusted(why, fix_for(real))
            here = os.path.join(real, os.path.basename(name))
            st = os.lstat(here)
        except OSError as err:
            raise Untrusted(f"{err.filename or name} cannot be looked at: {err.strerror or err}",
                            error=err.strerror or str(err)) from None
        except ValueError:   # a NUL in the name (os calls refuse it): nothing by that name can exist
            raise Untrusted(f"{path!r}: a file name cannot hold a NUL byte") from None
        mode = stat.S_IMODE(st.st_mode)
        if st.st_uid != 0 and st.st_uid not in owners:
            raise Untrusted(f"{here} is owned by {who(st.st_uid)}, mode {mode:04o}", fix_for(here))
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(here)
            pipe = _PIPE.fullmatch(target)
            if pipe and real.startswith("/proc/"):
                if owners:   # reached only when the way is not root's alone (trusted)
                    raise Untrusted(f"{path} leads to a pipe ({here}) through a link or directory "
                                    f"{' or '.join(who(u) for u in owners)} may change: only a name of root's alone "
                                    "may lead to a pipe")
                return Checked(here, None, int(pipe[1]))
            name = os.path.join(real, target)
            continue
        if mode & 0o022:
            raise Untrusted(f"{here} (owner {who(st.st_uid)}) is writable by {_writer(here, mode)}, mode {mode:04o}",
                            fix_for(here))
        return Checked(here, (st.st_dev, st.st_ino))
    raise Untrusted(f"{path}: too many levels of symbolic links")


def others_may_change(path: str | Path) -> str | None:
    """Why a user but root may change the file path (trusted's refusal), or None."""
    try:
        trusted(path)
    except Untrusted as err:
        return err.why
    return None


MAX_CONFIG = 64 << 20   # a gateway's thousands of connections are a few MiB


def read_trusted(path: str | Path, limit: int = MAX_CONFIG) -> bytes:
    """As root: the content of the configuration file path, checked (trusted) before it is opened and
    compared, once open, with what was checked: the same inode, a regular file (or the pipe checked).
    Whatever replaced or removed it between the two is refused, so what root reads is what it checked."""
    return read_checked(path, trusted(path), limit)


def read_checked(path: str | Path, checked: Checked, limit: int = MAX_CONFIG) -> bytes:
    """read_trusted's second half: open what checked names and read it, Untrusted if it is not that one."""
    try:
        if checked.pipe_ino is not None:
            # the magic link the check found (not path again: its links may point elsewhere by now), without
            # blocking in open; compared below, then read blocking: root's writer ends it
            fd = os.open(checked.path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        else:   # the file itself, no link followed: its name was resolved by the check
            fd = _open_nofollow(checked.path)
    except OSError as err:
        since = "" if isinstance(err, PermissionError) else " (replaced or removed since?)"
        raise Untrusted(f"{err.filename or path} cannot be opened as checked: {err.strerror or err}{since}",
                        error=err.strerror or str(err)) from None
    try:
        st = os.fstat(fd)
        if checked.pipe_ino is not None:
            if not stat.S_ISFIFO(st.st_mode) or st.st_ino != checked.pipe_ino:
                raise Untrusted(f"{path} is no longer the pipe it was when checked")
            os.set_blocking(fd, True)
        elif not stat.S_ISREG(st.st_mode):
            raise Untrusted(f"{checked.path} is {kind(st.st_mode)}, not a regular file")
        elif (st.st_dev, st.st_ino) != checked.ident:
            raise Untrusted(f"{checked.path} was replaced between the check and the read")
        data = bytearray()
        while len(data) <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - len(data)))
            if not chunk:
                return bytes(data)
            data += chunk
        raise Untrusted(f"{checked.path} is larger than {limit} bytes")
    finally:
        os.close(fd)


def _acl(path: str) -> bool:
    """True when path has an access ACL beyond its mode bits (the group bits are then the ACL's mask)."""
    try:
        os.getxattr(path, "system.posix_acl_access", follow_symlinks=False)
    except OSError:
        return False   # ENODATA (none), ENOTSUP (no ACLs on this file system)
    return True


def _writer(path: str, mode: int) -> str:
    if mode & 0o020 and _acl(path):
        return f"a user or group its ACL names (getfacl {path})"
    return "others" if mode & 0o002 else "its group"


def fix_for(path: str) -> str:
    """The commands that make path -- a file, directory or link on the way to a configuration file -- root's
    alone, for a refusal; "" when it is fine (or gone)."""
    try:
        st = os.lstat(path)
    except OSError:
        return ""
    steps = []
    if st.st_uid != 0:
        steps.append(f"chown -h root {path}" if stat.S_ISLNK(st.st_mode) else f"chown root {path}")
    if stat.S_ISLNK(st.st_mode):
        return "; ".join(steps)
    if st.st_mode & 0o020 and _acl(path):
        steps.append(f"setfacl -b {path}")   # chmod g-w alone would lower the mask, leaving the entries
    if st.st_mode & 0o022 or st.st_uid != 0:
        steps.append(f"chmod go-w {path}")
    return "; ".join(steps)


def _not_trusted(path: str, st: os.stat_result, trusted: set[int], last: bool) -> str | None:
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        return f"{path} became a symbolic link"
    if st.st_uid not in trusted:
        return f"{path} is owned by {who(st.st_uid)}, mode {mode:04o}"
    if mode & 0o022 and (last or not mode & stat.S_ISVTX):
        return f"{path} (owner {who(st.st_uid)}) is writable by {_writer(path, mode)}, mode {mode:04o}"
    return None


def kind(mode: int) -> str:
    """What a file of this st_mode is, for a message: "a regular file", "a FIFO", "a directory"..."""
    for test, name in ((stat.S_ISREG, "a regular file"), (stat.S_ISLNK, "a symbolic link"),
                       (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def _open_nofollow(path: str | Path, flags: int = 0, dir_fd: int | None = None) -> int:
    """An fd of path itself (OSError ELOOP saying so when it is a symbolic link)."""
    try:
        return os.open(path, _OPEN | flags, dir_fd=dir_fd)
    except OSError as err:
        if err.errno != errno.ELOOP:
            raise
        raise OSError(errno.ELOOP, "it is a symbolic link (not followed)", str(path)) from None


def read_regular(path: str | Path, limit: int = MAX_READ, dir_fd: int | None = None) -> bytes:
    """The content of the regular file path (relative to dir_fd if given), opened without following a
    symbolic link or blocking; OSError (strerror says why) when it is something else or larger than limit."""
    fd = _open_nofollow(path, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"it is {kind(st.st_mode)}, not a regular file", str(path))
        data = bytearray()
        while len(data) <= limit:
            chunk = os.read(fd, limit + 1 - len(data))
            if not chunk:
                return bytes(data)
            data += chunk
        raise OSError(errno.EFBIG, f"it is larger than {limit} bytes", str(path))
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, owner: tuple[int, int] | None = None) -> None:
    """write_atomic_at in path's directory (where it is now: for a directory others may change, hold
    its descriptor and use write_atomic_at)."""
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        write_atomic_at(dfd, path.name, data, owner)
    finally:
        os.close(dfd)


def write_atomic_at(dir_fd: int, name: str, data: bytes, owner: tuple[int, int] | None = None) -> None:
    """Replace name in the directory dir_fd with data: write a new temporary file (a random name, O_EXCL,
    no symbolic link followed: nothing prepared for it is written), fsync, give it to owner (uid, gid)
    through its descriptor, rename it into place, fsync the directory.  All relative to dir_fd: an entry
    on the way renamed meanwhile moves nothing elsewhere."""
    tmp = f".{name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if owner is not None:
            os.fchown(fd, *owner)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    os.close(fd)
    try:
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    os.fsync(dir_fd)


def open_private(real: str, owners: Collection[int]) -> tuple[str | None, int]:
    """(why not, -1) or (None, a descriptor of the directory real): real (resolve_private's path, no
    symbolic link on it) walked again from / by descriptors without following a link, each directory
    checked as resolve_private did, through its descriptor.  Between that check and this walk an owner
    may have renamed an entry and put a link in its place: the walk then stops at it, and never ends
    in a directory it was not meant to (a root-only one such as /etc/apt/apt.conf.d).  OSError when a
    component cannot be opened (ELOOP: a link)."""
    trusted = {0, *owners}
    names = [c for c in real.split("/") if c]
    fd, where = os.open("/", _DIR), "/"
    try:
        for i, name in enumerate([None, *names]):
            if name is not None:
                parent, fd = fd, -1
                try:
                    fd = _open_dir_nofollow(name, parent, os.path.join(where, name))
                finally:
                    os.close(parent)
                where = os.path.join(where, name)
            why = _not_trusted(where, os.fstat(fd), trusted, last=i == len(names))
            if why:
                os.close(fd)
                return why, -1
        return None, fd
    except BaseException:
        if fd >= 0:
            os.close(fd)
        raise


_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def _open_dir_nofollow(name: str, dir_fd: int, where: str) -> int:
    try:
        return os.open(name, _DIR | os.O_NOFOLLOW, dir_fd=dir_fd)
    except OSError as err:
        # O_DIRECTORY answers ENOTDIR for a symbolic link, O_NOFOLLOW ELOOP: say which it is
        if err.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        try:
            link = stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode)
        except OSError:
            raise err from None
        if link:
            raise OSError(errno.ELOOP, "it is a symbolic link (not followed)", where) from None
        raise


def give(name: str | Path, uid: int, gid: int, dir_fd: int | None = None) -> str | None:
    """Make the regular file name (relative to dir_fd) uid:gid through a descriptor; why it was left as
    it is (a symbolic link, not a regular file, hard links), or None.  OSError when it cannot be opened."""
    try:
        st = os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return None   # gone since it was listed: nothing to give
    why = _refusal(st)
    if why or (st.st_uid, st.st_gid) == (uid, gid):
        return why
    # only opened once it looked regular: an open may have effects on a device
    fd = _open_nofollow(name, dir_fd=dir_fd)
    try:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            return "it was replaced while being handed over"
        why = _refusal(now)
        if why is None:
            os.fchown(fd, uid, gid)
        return why
    finally:
        os.close(fd)


def _refusal(st: os.stat_result) -> str | None:
    if not stat.S_ISREG(st.st_mode):
        return f"{kind(st.st_mode)}, not a regular file"
    if st.st_nlink > 1:
        # another name of it may be anywhere on this file system, e.g. /etc/shadow
        return f"it has {st.st_nlink} hard links"
    return None


def give_dir(path: Path, uid: int, gid: int, only: Callable[[str], bool]) -> list[str]:
    """Make the directory path and the regular files in it whose names only accepts (tunsec's own: no
    file of someone else's that happens to be there) uid:gid, each through a descriptor (the files first:
    root without CAP_DAC_OVERRIDE may not enter the directory once it is the user's).  Returns what was
    left as it was, each "name (why)".  OSError when path cannot be opened (a symbolic link: ELOOP).  The
    caller makes sure root_only(path.parent) holds, and that the directory may be given at all
    (statedir.refusal)."""
    dfd = _open_nofollow(path, os.O_DIRECTORY)
    try:
        skipped = []
        for name in sorted(os.listdir(dfd)):
            if not only(name):   # the user's own (refusal let no other through): nothing to give
                continue
            why = give(name, uid, gid, dir_fd=dfd)
            if why:
                skipped.append(f"{name} ({why})")
        st = os.fstat(dfd)
        if (st.st_uid, st.st_gid) != (uid, gid):
            os.fchown(dfd, uid, gid)
        return skipped
    finally:
        os.close(dfd)
