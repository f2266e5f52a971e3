"""The control socket's file, and who may do what through it.

The file: root never changes a path in a directory another user may write
(that user could swap in a symlink between the bind and a chmod, and root would
change the mode of any file).  The mode comes from the umask at bind(); in a
directory only root may change, root binds and then lchowns the socket to the
service user; anywhere else the bind itself runs as that user (effective uid
and gid), so the file is the user's from the start and nothing is done by path.

Who: a peer's credentials come from SO_PEERCRED (the kernel's, a client cannot
choose them).  Anyone who may connect (the file's owner and group) gets the
status; commands that change state (initiate, terminate, reload) need root or
the daemon's own uid, and never come from the worker, which parses data from the
network.  While the worker runs under the daemon's uid only its pid tells it
apart (a process it forks is not told apart): `Gate.worker_uid` is the hook for
a worker with a uid of its own, whose every process is then refused.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from tunsec import privilege

SOCKET_UMASK = 0o117   # srw-rw----: the owner and its group may connect
READ_ONLY = frozenset({"status"})


def _root_only(directory: str) -> bool:
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


@contextlib.contextmanager
def _acting_as(t: privilege.Target | None) -> Iterator[None]:
    """Effective uid and gid of t (real and saved stay: root can come back, t's processes cannot
    signal or trace us meanwhile); a no-op for None.  Needs one thread (the drop checks it later)."""
    if t is None:
        yield
        return
    uid, gid, groups = os.geteuid(), os.getegid(), os.getgroups()
    os.setgroups([])
    os.setegid(t.gid)
    os.seteuid(t.uid)
    try:
        yield
    finally:
        os.seteuid(uid)
        os.setegid(gid)
        os.setgroups(groups)
        privilege.harden()   # a change of the effective uid resets the dumpable flag


def bind(path: str, t: privilege.Target | None) -> socket.socket:
    """A bound AF_UNIX stream socket at path, mode 0660, owned by t when tunsec becomes t (else by
    whoever runs it).  Raises OSError (a bind as t in a directory t may not write: EACCES)."""
    switch = privilege.needs_switch(t)
    as_user = who_binds(path, t)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old = os.umask(SOCKET_UMASK)
        try:
            with _acting_as(as_user):
                sock.bind(path)
        finally:
            os.umask(old)
        if switch and as_user is None and privilege.has_cap(privilege.CAP_CHOWN):
            assert t is not None
            os.chown(path, t.uid, t.gid, follow_symlinks=False)   # nobody but root can have swapped it
    except BaseException:
        sock.close()
        raise
    return sock


def who_binds(path: str, t: privilege.Target | None) -> privilege.Target | None:
    """Whose write permission bind() needs in path's directory (None: this process's)."""
    return t if privilege.needs_switch(t) and not _root_only(os.path.dirname(path) or ".") else None


def make_dir(directory: str, t: privilege.Target | None) -> None:
    """The socket's directory when it does not exist: root's and t's group's (0750) when tunsec becomes
    t, so that t's processes (the worker, updown scripts) can reach the socket but not replace it."""
    os.makedirs(directory, mode=0o750)
    if not privilege.needs_switch(t) or not privilege.has_cap(privilege.CAP_CHOWN):
        return
    assert t is not None
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        os.fchown(fd, -1, t.gid)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int


def peer_of(sock: socket.socket) -> Peer:
    pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return Peer(pid, uid, gid)


@dataclass
class Gate:
    """Which peers may run which commands (see the module's text)."""

    own_uid: Callable[[], int] = os.geteuid
    worker_pid: Callable[[], int | None] = lambda: None
    # hook: the worker's uid once it has one of its own (None while it shares the daemon's)
    worker_uid: Callable[[], int | None] = lambda: None

    def refusal(self, cmd: str, peer: Peer) -> str | None:
        """Why peer may not run cmd, or None."""
        if cmd in READ_ONLY:
            return None
        wpid, wuid = self.worker_pid(), self.worker_uid()
        if peer.pid == wpid or (wuid not in (None, 0, self.own_uid()) and peer.uid == wuid):
            return f"permission denied: {cmd} is not accepted from the dataplane worker"
        if peer.uid in (0, self.own_uid()):
            return None
        return (f"permission denied: {cmd} changes state and needs root or the user tunsec runs as "
                f"(uid {self.own_uid()}); uid {peer.uid} may read the status only")
