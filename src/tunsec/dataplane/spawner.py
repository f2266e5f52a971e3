"""The worker's own user, and the small process that starts workers as that user.

The worker parses every ESP and TUN packet in C: if a packet takes it over, it
must not reach what the control process has (the configuration and private
keys, readable by the control process's user for reloads; the control socket;
the control process itself, by signal or /proc/PID/mem).  So it runs under a
uid and gid of its own (``tunsec { worker_user }``, default ``tunsec-dp``).

The control process gives up CAP_SETUID/CAP_SETGID once set up, so it cannot
start a worker as another user after a crash.  Before it drops, it starts this
spawner instead: it becomes the worker's user at once (no capabilities,
no-new-privs), holds the TUN and ESP socket descriptors the workers need (no
more than a worker holds), and on request starts a worker with the pipe end the
control process sends it (SCM_RIGHTS).  It reports each worker's pid and exit
status; it ends when the control process closes the channel (or dies).

The channel (AF_UNIX SOCK_SEQPACKET), one message a datagram, ASCII:
control -> spawner ``spawn`` (with two descriptors: the worker's pipe end, and the write end of
the pipe that is its stderr, which the control process reads: stderr_relay.py), ``kill PID``;
spawner -> control ``ready`` or ``unusable TEXT`` once (it dropped; can it start a worker
as that user?), then ``pid PID``, ``error TEXT``, ``exit PID STATUS``.  Each ``spawn`` gets one
``pid`` or ``error``, in the order asked (the messages carry no request id): a spawn the control
process gave up on still takes its answer, and its worker is killed.  The control
process trusts nothing it reads there: a spawner is as exposed as a worker is.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import collections
import contextlib
import ctypes
import logging
import os
import pwd
import selectors
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import tunsec
from tunsec import logs, privilege
from tunsec.conf.tunsec_section import DATAPLANE_USER
from tunsec.dataplane.stderr_relay import StderrRelay

log = logging.getLogger("tunsec.spawner")

MAX_MESSAGE = 256
STOP_GRACE = 5.0    # how long a worker may take to exit after the control process closed the channel
_BOOT = ("import sys; sys.path.insert(0, sys.argv.pop(1)); from tunsec.dataplane.spawner import main; "
         "sys.exit(main())")


# --- whom the worker runs as ----------------------------------------------------------
@dataclass(frozen=True)
class Choice:
    """The worker's user, if it is to be another than the control process's; and what to warn about."""

    user: str | None
    warning: str | None = None


def _uid(name: str) -> int | None:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def _can_switch() -> bool:
    eff = privilege.get_caps().effective
    return bool(eff & privilege.mask(privilege.CAP_SETUID, privilege.CAP_SETGID)
                == privilege.mask(privilege.CAP_SETUID, privilege.CAP_SETGID))


def choose(configured: str | None, control: privilege.Plan) -> Choice:
    """The worker's own user: tunsec { worker_user }, else tunsec-dp where it exists.  None keeps
    the old way (the worker becomes the control process's user): ``user = root`` without a
    worker_user, no tunsec-dp on the host, or no CAP_SETUID/CAP_SETGID to change to it (a
    warning says so).  A worker_user that cannot be had is a startup error."""
    if not control.drop and not configured:
        return Choice(None)   # user = root: both stay root, as asked
    name = configured or DATAPLANE_USER
    uid = _uid(name)
    control_uid = control.target.uid if control.target is not None else os.geteuid()
    if uid is None:
        return Choice(None, f"no user {name} on this host: the dataplane worker runs as the control process's "
                      f"user and could read its configuration and keys if a packet took it over; create it "
                      f"(useradd --system --user-group --no-create-home --shell /usr/sbin/nologin {name})")
    if uid == control_uid:
        return Choice(None)
    if uid == 0:
        if control_uid == 0:
            return Choice(None)   # user = root as well: both stay root, as asked
        # the worker parses ESP from the network: as uid 0 (even without a capability) it owns root's files,
        # /etc among them, while the control process, holding the keys, has given root up
        raise privilege.PrivilegeError(
            f"tunsec {{ worker_user = {name} }} is root while the control process runs as "
            f"{control.target.name if control.target else control_uid}: the dataplane worker would keep root "
            f"(it owns root's files) where the process that holds the keys does not. Remove the line (the "
            f"worker then runs as {DATAPLANE_USER}), or name a user of its own")
    if not _can_switch():
        why = (f"the dataplane worker cannot run as {name} (tunsec {{ worker_user }}): changing user needs "
               "CAP_SETUID and CAP_SETGID (AmbientCapabilities=, --cap-add SETUID --cap-add SETGID; the control "
               "process gives them up once the worker runs)")
        if configured:
            raise privilege.PrivilegeError(why)
        return Choice(None, why + "; it runs as the control process's user instead")
    return Choice(name)


# --- the control process's side ------------------------------------------------------
def spawner_command() -> list[str]:
    """argv prefix that runs main() isolated, as client.worker_command does for the worker."""
    return [sys.executable, "-I", "-c", _BOOT, str(Path(tunsec.__file__).resolve().parent.parent)]


@dataclass
class SpawnedWorker:
    """A worker the spawner started: what the daemon needs of a process (pid, wait, kill)."""

    pid: int
    spawner: Spawner
    returncode: int | None = None
    _exited: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait(self) -> int | None:
        await self._exited.wait()
        return self.returncode

    def kill(self) -> None:
        with contextlib.suppress(OSError):   # the spawner gone: so is its worker (parent-death signal)
            self.spawner.send(f"kill {self.pid}".encode())

    def ended(self, code: int | None) -> None:
        self.returncode = code
        self._exited.set()


class SpawnerUnusable(Exception):
    """The spawner cannot start workers as their user (say, the interpreter is out of its reach)."""


class Spawner:
    """The control process's end of the channel to the spawner."""

    def __init__(self, proc: asyncio.subprocess.Process, sock: socket.socket) -> None:
        self.proc = proc
        self._sock: socket.socket | None = sock
        # one per ``spawn`` sent, oldest first: the spawner answers each, in order, with ``pid`` or
        # ``error``; a spawn() that gave up leaves its future done here, so that its late answer is
        # not taken for a later request's and its worker is killed, not left without an owner
        self._spawns: collections.deque[asyncio.Future[SpawnedWorker]] = collections.deque()
        self._ready: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._workers: dict[int, SpawnedWorker] = {}
        self.malformed = 0
        self.stderr: StderrRelay | None = None   # its stderr, read here (set by start)

    @classmethod
    async def start(cls, user: str, keep: list[int], worker_args: list[str], log_level: str,
                    log_format: str) -> Spawner:
        """As root (or with CAP_SETUID/CAP_SETGID), before the control process drops: keep are the
        descriptors every worker gets, worker_args its options but --pipe-fd."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv = [*spawner_command(), "--channel-fd", str(theirs.fileno()), "--user", user,
                "--keep", ",".join(map(str, keep)), "--log-level", log_level, "--log-format", log_format,
                "--", *worker_args]
        # no terminal (see start_worker); it and its workers still end with us: the channel's end,
        # or the parent-death signal.  Its stderr a pipe we read, as a worker's (stderr_relay.py): it
        # runs as the worker's user, so one who took a worker over may take it over too (ptrace)
        err_r, err_w = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(*argv, pass_fds=[theirs.fileno(), *keep], cwd="/",
                                                        stdin=subprocess.DEVNULL, stderr=err_w,
                                                        start_new_session=True)
        except BaseException:
            os.close(err_r)
            raise
        finally:
            theirs.close()
            os.close(err_w)
        ours.setblocking(False)
        self = cls(proc, ours)
        self.stderr = StderrRelay(err_r, proc.pid, log_format, "tunsec-spawner")
        asyncio.get_running_loop().add_reader(ours.fileno(), self._readable)
        try:
            problem = await asyncio.wait_for(self._ready, 20)
        except (TimeoutError, OSError) as err:
            problem = f"it did not start ({err or 'no answer'})"
        if problem is not None:
            await self.close()
            raise SpawnerUnusable(f"the dataplane worker cannot run as {user}: {problem}")
        log.info("worker spawner started as %s, pid %d", user, proc.pid)
        return self

    def send(self, data: bytes, fds: list[int] | None = None) -> None:
        if self._sock is None:
            raise OSError("the worker spawner is gone")
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else []
        self._sock.sendmsg([data], anc)

    async def spawn(self, pipe_fd: int, stderr_fd: int, timeout: float = 20.0) -> SpawnedWorker:
        """A new worker with pipe_fd as its end of the pipe and stderr_fd as its stderr; OSError if
        the spawner cannot."""
        answer: asyncio.Future[SpawnedWorker] = asyncio.get_running_loop().create_future()
        self.send(b"spawn", [pipe_fd, stderr_fd])
        self._spawns.append(answer)
        try:
            # on a timeout (or our caller's cancellation) wait_for cancels ``answer``: a late pid is killed
            return await asyncio.wait_for(answer, timeout)
        except TimeoutError:
            raise OSError("the worker spawner did not answer") from None

    def _readable(self) -> None:
        assert self._sock is not None
        try:
            data = self._sock.recv(MAX_MESSAGE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._gone()
            return
        self._message(data)

    def _message(self, data: bytes) -> None:
        """One message from the spawner, parsed strictly: anything else is counted and dropped."""
        words = data.split(b" ", 2)
        if not self._ready.done():   # its first message says whether it can start workers
            if data == b"ready":
                self._ready.set_result(None)
            elif words[0] == b"unusable":
                self._ready.set_result(data[9:].decode("ascii", "replace")[:300] or "unusable")
            else:
                self._ready.set_result("it said something else first")
            return
        try:
            if words[0] == b"pid" and len(words) == 2:
                pid = int(words[1])
                if self._spawns:   # else no request of ours: dropped
                    self._started(self._spawns.popleft(), pid)
                return
            if words[0] == b"error" and len(words) >= 2:
                if self._spawns and not (answer := self._spawns.popleft()).done():
                    text = data[6:].decode("ascii", "replace")[:200]
                    answer.set_exception(OSError(f"the worker spawner: {text}"))
                return
            if words[0] == b"exit" and len(words) == 3:
                pid, code = int(words[1]), int(words[2])
                worker = self._workers.pop(pid, None)
                if worker is not None:
                    worker.ended(code)
                return
        except ValueError:
            pass
        self.malformed += 1
        log.warning("malformed message from the worker spawner dropped")

    def _started(self, answer: asyncio.Future[SpawnedWorker], pid: int) -> None:
        if answer.done():
            # spawn() gave up on it: nobody holds the other end of its pipe or watches it
            log.warning("worker %d started after the control process gave up waiting for it: killed", pid)
            with contextlib.suppress(OSError):
                self.send(f"kill {pid}".encode())
            return
        # registered here, not when spawn() resumes: its ``exit`` may be read first (a worker
        # dying at start), and an exit for no known pid is dropped
        started = SpawnedWorker(pid, self)
        self._workers[pid] = started
        answer.set_result(started)

    def _gone(self) -> None:
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        for answer in self._spawns:
            if not answer.done():
                answer.set_exception(OSError("the worker spawner is gone"))
        self._spawns.clear()
        if not self._ready.done():
            self._ready.set_exception(OSError("the worker spawner is gone"))
        for worker in self._workers.values():
            worker.ended(None)
        self._workers.clear()

    async def close(self, timeout: float = STOP_GRACE + 2) -> None:
        """Close the channel (the spawner waits for its worker, then ends) and reap it."""
        self._gone()
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                self.proc.kill()
            await self.proc.wait()
        if self.stderr is not None:   # its last lines (it exited: EOF is there, or soon)
            await self.stderr.finish(1.0)


# --- the spawner process ---------------------------------------------------------------
def _pdeathsig(sig: int) -> None:
    ctypes.CDLL(None, use_errno=True).prctl(1, sig)   # PR_SET_PDEATHSIG


def _received_fd(sock: socket.socket) -> tuple[bytes, list[int]]:
    data, anc, _, _ = sock.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(4 * 4))
    fds: list[int] = []
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            arr = array.array("i")
            arr.frombytes(payload[: len(payload) - len(payload) % arr.itemsize])
            fds.extend(arr)
    return data, fds


@dataclass
class _Children:
    """The workers this spawner started, each with a pidfd to learn of its end."""

    sel: selectors.BaseSelector
    procs: dict[int, tuple[subprocess.Popen[bytes], int]] = field(default_factory=dict)

    def add(self, proc: subprocess.Popen[bytes]) -> None:
        pidfd = os.pidfd_open(proc.pid)
        self.procs[proc.pid] = (proc, pidfd)
        self.sel.register(pidfd, selectors.EVENT_READ, proc.pid)

    def reap(self, pid: int) -> int | None:
        proc, pidfd = self.procs.pop(pid)
        self.sel.unregister(pidfd)
        os.close(pidfd)
        return proc.wait()

    def end_all(self) -> None:
        """The control process closed the channel (it closed the pipes too): the workers end by
        themselves; any still there after STOP_GRACE are killed."""
        for proc, _ in list(self.procs.values()):
            try:
                proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def start_worker(argv: list[str], pass_fds: list[int], stderr: int) -> subprocess.Popen[bytes]:
    """A worker, out of the operator's terminal: stdin not the tty, and a session of its own, so
    that the tty is not its controlling one (TIOCSTI, typing into root's shell, needs that); its
    stderr the pipe the control process reads (not the terminal nor the journal: stderr_relay.py).  A
    Ctrl-C for the foreground group no longer reaches it: the control process stops it by closing
    the pipe, or its death by the parent-death signal."""
    return subprocess.Popen(argv, pass_fds=pass_fds, cwd="/", stdin=subprocess.DEVNULL, stderr=stderr,
                            start_new_session=True)


def _spawn(args: argparse.Namespace, pipe_fd: int, stderr_fd: int) -> subprocess.Popen[bytes]:
    from tunsec.dataplane.client import worker_command

    return start_worker([*worker_command(), "--pipe-fd", str(pipe_fd), *args.worker], [pipe_fd, *args.keep],
                        stderr_fd)


def _handle(args: argparse.Namespace, chan: socket.socket, children: _Children) -> bool:
    """One request from the control process; False when the channel closed."""
    data, fds = _received_fd(chan)
    if not data:
        return False
    words = data.split()
    if words == [b"spawn"] and len(fds) == 2:
        try:
            proc = _spawn(args, fds[0], fds[1])
        except OSError as err:
            chan.send(f"error {err.strerror or err}".encode()[:MAX_MESSAGE])
        else:
            children.add(proc)
            chan.send(f"pid {proc.pid}".encode())
    elif words == [b"spawn"]:
        # still one answer per spawn (the control process matches them in order): its descriptors
        # may have been lost on the way (no free descriptor here: the message's were cut off)
        chan.send(b"error not the two descriptors with the request")
    elif len(words) == 2 and words[0] == b"kill" and words[1].isdigit() and int(words[1]) in children.procs:
        children.procs[int(words[1])][0].kill()   # only a worker of ours
    else:
        log.warning("unexpected request on the spawner's channel ignored")
    for fd in fds:
        os.close(fd)   # the worker has its own copy (of its stderr's too: the relay's EOF is its end)
    return True


def serve(chan: socket.socket, args: argparse.Namespace) -> int:
    sel = selectors.DefaultSelector()
    sel.register(chan, selectors.EVENT_READ, None)
    children = _Children(sel)
    while True:
        for key, _ in sel.select():
            if key.data is None:
                if not _handle(args, chan, children):
                    children.end_all()
                    return 0
                continue
            code = children.reap(key.data)
            with contextlib.suppress(OSError):
                chan.send(f"exit {key.data} {code}".encode())


def _ignore(signum: int, frame: object) -> None:
    pass


def _fd_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tunsec-spawner")
    ap.add_argument("--channel-fd", type=int, required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--keep", type=_fd_list, default=[])
    ap.add_argument("--log-level", default="info")
    ap.add_argument("--log-format", choices=["text", "json"], default="text")
    ap.add_argument("worker", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    if args.worker[:1] == ["--"]:
        args.worker = args.worker[1:]
    logs.configure(args.log_level, args.log_format, "tunsec-spawner")
    # the control process ends us by closing the channel, after its worker sent the IKE DELETEs:
    # a stop signal for the whole group must not take the worker's parent first
    # (a handler, not SIG_IGN, which the workers would inherit through exec)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _ignore)
    parent = os.getppid()
    try:
        line = privilege.drop(privilege.target_for(args.user))
    except (privilege.PrivilegeError, OSError) as err:
        log.error("cannot become %s: %s", args.user, err)
        return 1
    _pdeathsig(signal.SIGKILL)   # after the change of credentials, which clears it
    if os.getppid() != parent:
        return 1   # the control process is gone already
    log.info("spawner %s", line)
    chan = socket.socket(fileno=args.channel_fd)
    problem = privilege.spawn_problem()
    if problem is not None:
        with contextlib.suppress(OSError):
            chan.send(f"unusable {problem}".encode("ascii", "replace")[:MAX_MESSAGE])
        return 1
    chan.send(b"ready")
    return serve(chan, args)


if __name__ == "__main__":
    sys.exit(main())
