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

How much: anyone who may connect may hold connections, so they are capped (Slots: peers other than
root share TOTAL, each uid at most PER_UID, root has ROOT_RESERVE more so the operator always gets
in), a request line is at most LINE_LIMIT bytes, and one DEADLINE covers reading the request,
answering it and the client reading the answer.  Status answers are shared by the clients that ask
at the same time (Shared): one worker DUMP and one encoding, however many ask; the encoding of a
long list goes a slice at a time (Answer.encode_sliced), back to the event loop in between.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import json
import os
import socket
import stat
import struct
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from tunsec import privilege
from tunsec.safefs import root_only

SOCKET_UMASK = 0o117   # srw-rw----: the owner and its group may connect
READ_ONLY = frozenset({"status"})
TOTAL, PER_UID, ROOT_RESERVE = 16, 4, 4   # connections held at once (Slots)
LINE_LIMIT = 16 * 1024   # a request line (the longest real one is a few hundred bytes)
DEADLINE = 10.0   # seconds for a whole exchange (`tunsec status` waits as long for its answer)
PROBE_TIMEOUT = 5.0   # seconds listener()'s connect may take (on a local socket it answers at once)

T = TypeVar("T")


def bind(path: str, t: privilege.Target | None) -> socket.socket:
    """A bound AF_UNIX stream socket at path, mode 0660, owned by t when tunsec becomes t (else by
    whoever runs it).  Raises OSError (a bind as t in a directory t may not write: EACCES)."""
    switch = privilege.needs_switch(t)
    as_user = who_binds(path, t)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old = os.umask(SOCKET_UMASK)
        try:
            with privilege.acting_as(as_user):
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


class Listener(enum.Enum):
    """Who is at a control socket's path (listener)."""

    NOBODY = enum.auto()    # no socket there, or one a process that died left (ECONNREFUSED)
    ANSWERS = enum.auto()   # a process accepted the connection: a tunsec runs
    # one listens and accepts nothing (its backlog full): a tunsec stuck, or a socket someone put in the
    # directory (the service user's) to make root wait; not "nobody": that would take a running tunsec
    # for a stopped one (review revprep F3)
    SILENT = enum.auto()


def listener(path: str) -> Listener:
    """Whether a process listens on the socket at path (a tunsec's control socket), never waiting for ever:
    a blocking connect to a socket whose backlog is full waits until it accepts.  A symlink is not
    followed (nor anything else but a socket).  OSError when it cannot tell (EACCES)."""
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return Listener.NOBODY
    except (FileNotFoundError, NotADirectoryError):
        return Listener.NOBODY
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(PROBE_TIMEOUT)   # non-blocking underneath: a full backlog is EAGAIN at once
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            return Listener.NOBODY
        except (BlockingIOError, TimeoutError):
            return Listener.SILENT
    return Listener.ANSWERS


def who_binds(path: str, t: privilege.Target | None) -> privilege.Target | None:
    """Whose write permission bind() needs in path's directory (None: this process's)."""
    return t if privilege.needs_switch(t) and not root_only(os.path.dirname(path) or ".") else None


def make_dir(directory: str, t: privilege.Target | None) -> None:
    """The socket's directory when it does not exist: root's and t's group's (0750) when tunsec becomes
    t, so that t's processes (the worker, updown scripts) can reach the socket but not replace it; so
    is each missing level above it (made root-only by the umask, they kept the group out)."""
    missing = []
    level = os.path.abspath(directory)
    while not os.path.lexists(level):
        missing.append(level)
        level = os.path.dirname(level)
    for level in reversed(missing):
        try:
            os.mkdir(level, mode=0o750)
        except FileExistsError:
            if level == missing[0]:
                raise   # the socket's own directory: made by someone else meanwhile, as makedirs says
            continue    # a level above it someone else made meanwhile: theirs, left as it is
        _share(level, t)


def _share(directory: str, t: privilege.Target | None) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        os.fchmod(fd, 0o750)   # mkdir's mode passes the umask (UMask=0077 in the unit took the group's access)
        if privilege.needs_switch(t) and privilege.has_cap(privilege.CAP_CHOWN):
            assert t is not None
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


@dataclass
class Slots:
    """Control connections held at once: each costs the daemon a descriptor, and a status answer
    being written to it its memory until the client reads it."""

    total: int = TOTAL
    per_uid: int = PER_UID
    root_reserve: int = ROOT_RESERVE
    held: Counter[int] = field(default_factory=Counter)

    def take(self, uid: int) -> str | None:
        """Why uid may not hold another connection now, or None: it holds one more (give it back)."""
        n = self.held.total()
        if uid == 0:   # no per-uid cap, and a reserve the others cannot take
            if n >= self.total + self.root_reserve:
                return f"busy: {n} control connections open; try again"
        elif n >= self.total:
            return f"busy: {n} control connections open; try again"
        elif self.held[uid] >= self.per_uid:
            return f"busy: uid {uid} has {self.held[uid]} control connections open; try again"
        self.held[uid] += 1
        return None

    def give(self, uid: int) -> None:
        self.held[uid] -= 1
        if self.held[uid] <= 0:
            del self.held[uid]


@dataclass
class Counts:
    """Requests the control socket refused or cut short since the start (status: control.socket)."""

    busy: int = 0        # every slot the peer may use was taken
    too_long: int = 0    # a request line over LINE_LIMIT
    malformed: int = 0   # not JSON, or nested too deep to parse
    timed_out: int = 0   # the exchange took longer than DEADLINE (a client that does not send or read)


class Answer(dict[str, Any]):
    """An answer several clients get: encoded once (by encode_sliced before it is shared, else at
    its first use)."""

    @functools.cached_property
    def line(self) -> bytes:
        return json.dumps(self).encode() + b"\n"

    async def encode_sliced(self) -> None:
        """line, its long lists encoded a slice at a time (the status of thousands of clients is
        megabytes of JSON: encoded at once it held the event loop for a tenth of a second and more)."""
        parts: list[str] = []
        await _json_parts(self, parts)
        parts.append("\n")
        self.__dict__["line"] = "".join(parts).encode()


JSON_SLICE = 128   # items of a long list encoded per turn of the event loop


async def _json_parts(value: Any, out: list[str]) -> None:
    """json.dumps(value)'s text, appended in parts: the same bytes (default separators), with any
    list longer than JSON_SLICE encoded that many items at a time, back to the loop in between."""
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        out.append("{")
        for i, (k, v) in enumerate(value.items()):
            out.append(f"{', ' if i else ''}{json.dumps(k)}: ")
            await _json_parts(v, out)
        out.append("}")
    elif isinstance(value, list) and len(value) > JSON_SLICE:
        out.append("[")
        for at in range(0, len(value), JSON_SLICE):
            out.append((", " if at else "") + json.dumps(value[at:at + JSON_SLICE])[1:-1])
            await asyncio.sleep(0)
        out.append("]")
    else:
        out.append(json.dumps(value))


def encode(answer: dict[str, Any]) -> bytes:
    """The line the control socket sends."""
    return answer.line if isinstance(answer, Answer) else json.dumps(answer).encode() + b"\n"


class Shared(Generic[T]):
    """Calls of run() share its runs: a caller gets the result of a run that began after it asked
    (never an older one), and callers that ask while a run is under way share the next one."""

    def __init__(self, run: Callable[[], Awaitable[T]]) -> None:
        self._run = run
        self._current: asyncio.Future[T] | None = None   # under way
        self._next: asyncio.Future[T] | None = None      # waits for the current one, then runs

    async def get(self) -> T:
        if self._next is None:
            self._next = asyncio.ensure_future(self._after(self._current))
            # retrieved here too: every caller may have left (a deadline) before it ends
            self._next.add_done_callback(lambda f: f.cancelled() or f.exception())
        # shielded: one caller's deadline does not cancel what the others wait for
        return await asyncio.shield(self._next)

    async def _after(self, before: asyncio.Future[T] | None) -> T:
        if before is not None:
            await asyncio.wait([before])
        me = self._current = self._next
        self._next = None
        try:
            return await self._run()
        finally:
            if self._current is me:
                self._current = None
