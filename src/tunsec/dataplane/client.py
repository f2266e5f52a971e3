"""The control process's end of the pipe: it starts the worker, sends
requests and matches answers to them by request id, and hands the worker's
events (ACQUIRE, EXPIRE, INVALID_SPI, IKE) to a callback."""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import logging
import os
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import tunsec
from tunsec.dataplane import pipe
from tunsec.dataplane.late_answers import Late, LateAnswers
from tunsec.dataplane.pipe import Errno, PipeError, batch
from tunsec.dataplane.stderr_relay import StderrRelay
from tunsec.ike.dos_source import DEFAULT_IPV6_SOURCE_PREFIX
from tunsec.loglimit import LogLimiter, suffix

if TYPE_CHECKING:
    from tunsec.dataplane.spawner import SpawnedWorker, Spawner

log = logging.getLogger("tunsec.pipe")

REQUEST_TIMEOUT = 10.0
KILL_WAIT = 5.0   # how long stop() waits for a killed worker's exit before it gives up on it
STDERR_WAIT = 2.0   # how long stop() waits, the worker reaped, for the end of its stderr
SEND_QUEUE_MAX = 65536   # requests held in a turn or waiting for room in the pipe (a burst sends thousands)
READ_BATCH = 64          # datagrams read from the pipe before their answers, then their events, are handled
# bytes read from the pipe in one reader callback at most (then back to the loop): 64 datagrams of a few
# hundred bytes in a burst of clients, but four DUMP parts of 64 KiB (~25 ms to decode each)
READ_BUDGET = 256 * 1024
# the parts of one DUMP answer held at most, in bytes as read (decoded, ~9 times that): ~1000 full parts,
# ~570,000 SAs; a worker that sends more is lying, and the DUMP fails (dump_overflows) instead of
# holding all it sends
DUMP_MAX_BYTES = 64 << 20
# what a DUMP part counts against that at least: the worker packs them greedily, so all but the last are
# nearly 64 KiB, and a flood of bare ones (16 bytes, ~100 once decoded) must not hold millions
PART_MIN_BYTES = 32 * 1024
REQ_ID_MAX = 0xFFFFFFFF  # the pipe header's request id is 32 bits; 0 is for events


class WorkerError(Exception):
    """The worker refused a request, or is gone (``gone``: its pipe closed or was never open, so a new
    worker, with an empty SAD, is what answers next).  ``refused``: the worker answered with errno, so
    it did not do it; otherwise (no answer, the pipe's error, gone) it may have."""

    def __init__(self, what: str, errno: Errno, gone: bool = False, refused: bool = False) -> None:
        self.errno = errno
        self.gone = gone
        self.refused = refused
        super().__init__(f"{what}: {errno.name}")


# The worker starts as root and parses packets from the network: it runs
# isolated (-I: no PYTHONPATH, no user site, not the current directory on
# sys.path) from "/", and imports the very tunsec package this process runs,
# named explicitly, so nothing lying in the daemon's working directory or
# environment can be imported into it.
_BOOT = "import sys; sys.path.insert(0, sys.argv.pop(1)); from tunsec.dataplane.worker import main; sys.exit(main())"


def worker_command() -> list[str]:
    """argv prefix that runs tunsec.dataplane.worker.main isolated; worker options follow."""
    package_parent = str(Path(tunsec.__file__).resolve().parent.parent)
    return [sys.executable, "-I", "-c", _BOOT, package_parent]


@dataclass(frozen=True)
class WorkerFds:
    tun: int
    udp4: int = -1
    udp6: int = -1
    vnet_hdr: bool = False
    queues: list[tuple[int, int, int]] = field(default_factory=list)   # more (tun, udp4, udp6)

    def all(self) -> list[int]:
        """Every descriptor the worker inherits but its pipe."""
        return [f for f in (self.tun, self.udp4, self.udp6, *(x for q in self.queues for x in q)) if f >= 0]


def worker_args(fds: WorkerFds, mtu: int, larval_timeout: float, log_level: str, log_format: str,
                sandbox: bool = True, ipv6_source_prefix: int = DEFAULT_IPV6_SOURCE_PREFIX) -> list[str]:
    """The worker's options but --pipe-fd and --user.  ipv6_source_prefix: dos.ipv6_source_prefix, the
    IPv6 prefix its per-source limits count a sender under, as the control process's do."""
    argv = ["--tun-fd", str(fds.tun), "--udp4-fd", str(fds.udp4), "--udp6-fd", str(fds.udp6),
            "--mtu", str(mtu), "--larval-timeout", str(larval_timeout), "--log-level", log_level,
            "--log-format", log_format, "--ipv6-source-prefix", str(ipv6_source_prefix)]
    argv += ["--vnet-hdr"] if fds.vnet_hdr else []
    if not sandbox:
        argv.append("--no-sandbox")
    for q in fds.queues:
        argv += ["--queue", ",".join(map(str, q))]
    return argv


def _time_out(fut: asyncio.Future[list[pipe.Reply]]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError(f"no answer within {REQUEST_TIMEOUT:.0f} s"))


Sent = tuple[str, asyncio.Future[list[pipe.Reply]]]
_Then = Callable[[list[pipe.Reply]], None]   # what was asked (for errors), its answer
_Future = asyncio.Future[list[pipe.Reply]]
_Failed = Callable[[WorkerError], None]
# a request waiting for its answer: its future, request_soon's ``then``, the done callback that
# forgets the request if the future is cancelled (request_soon's), request_soon's ``failed``, and the
# type byte it was sent with (its answer has that type, docs/pipe.md)
_Entry = tuple[_Future, _Then | None, Callable[[_Future], None] | None, _Failed | None, int]

_TYPE = 1    # the pipe header's type byte, after the version (docs/pipe.md)
_BATCH = bytes([batch.BATCH_TYPE])   # a batch's type byte (pipe.batch), as data[1:2] reads it
_FLAGS = 8   # the pipe header's flags byte, after version, type, errno and the request id (docs/pipe.md)
_DUMP = int(pipe.MsgType.DUMP)   # the one request answered in parts (flag MORE)


@dataclass(slots=True)
class _Parts:
    """The answers so far of a request answered in parts (DUMP), and their size as read."""

    replies: list[pipe.Reply]
    size: int
    cap: int | None = None   # the request's own cap (request's max_bytes), else dump_max_bytes


def _fail(entry: _Entry, err: WorkerError) -> None:
    """A request fails with err, unless its future is done already (cancelled, say)."""
    fut, _, _, failed, _ = entry
    if fut.done():
        return
    fut.set_exception(err)
    if failed is not None:
        fut.exception()   # retrieved: failed() handles it (no "never retrieved" when it goes)
        failed(err)


def _name(msg: pipe.Message | bytes) -> str:
    """The request's class name, for an error: a datagram of pipe.direct's is decoded for it."""
    return type(pipe.decode(msg) if isinstance(msg, bytes) else msg).__name__


def send_soon(worker: WorkerClient, what: str, build: Callable[[int], pipe.Message | bytes],
              then: Callable[[list[pipe.Reply]], None] | None = None, late: Late | None = None) -> Sent:
    """:meth:`WorkerClient.request_soon`, its refusal (the worker gone, the pipe full) an answer
    that failed, for :func:`answered` to report with the others."""
    try:
        if late is not None:
            return what, worker.request_soon(build, then, late=late)
        return what, worker.request_soon(build, then)
    except WorkerError as err:
        failed: asyncio.Future[list[pipe.Reply]] = asyncio.get_running_loop().create_future()
        failed.set_exception(err)
        return what, failed


async def answered(sent: Sequence[Sent]) -> list[list[pipe.Reply] | WorkerError]:
    """The answers to requests sent with :meth:`WorkerClient.request_soon`, awaited together with one
    timeout (REQUEST_TIMEOUT) and checked as :meth:`WorkerClient.request` checks its own: per request
    its replies, or the WorkerError it met (an errno other than OK, the worker gone, no answer in
    time).  One waiter for the lot instead of a task and a timer per request: a Child SA's install
    sends three or four requests and an SPI refill thirty-two, for every client of a burst.

    A request still unanswered at the timeout is cancelled, which forgets it (see
    :meth:`WorkerClient.request_soon`): a late answer is then counted and dropped."""
    waiting = [fut for _, fut in sent if not fut.done()]
    if waiting:
        _, late = await asyncio.wait(waiting, timeout=REQUEST_TIMEOUT)
        for fut in late:
            fut.cancel()
    return [outcome(what, fut) for what, fut in sent]


def outcome(what: str, fut: asyncio.Future[list[pipe.Reply]]) -> list[pipe.Reply] | WorkerError:
    """A request's end (``fut`` is done) as :func:`answered` reports it: its replies, or the
    WorkerError it met (an errno other than OK, the worker gone, cancelled for want of an answer)."""
    if fut.cancelled():
        return WorkerError(f"{what} (no answer within {REQUEST_TIMEOUT:.0f} s)", Errno.EIO)
    if (err := fut.exception()) is not None:
        return err if isinstance(err, WorkerError) else WorkerError(f"{what} ({err})", Errno.EIO)
    if (bad := next((r for r in fut.result() if r.errno is not Errno.OK), None)) is not None:
        return WorkerError(what, bad.errno, refused=True)
    return fut.result()


class WorkerClient:
    """One worker process and its pipe."""

    def __init__(self, on_event: Callable[[pipe.Message], None], dump_max_bytes: int = DUMP_MAX_BYTES) -> None:
        self.on_event = on_event
        self.dump_max_bytes = dump_max_bytes
        self.proc: asyncio.subprocess.Process | SpawnedWorker | None = None
        self._sock: socket.socket | None = None
        self._last_id = 0   # see _next_id
        # per request waiting for its answer (see _Entry)
        self._pending: dict[int, _Entry] = {}
        # the answers so far of a request answered in parts (DUMP): all others are answered in one
        # message, and need no list until it comes
        self._parts: dict[int, _Parts] = {}
        self._outq: collections.deque[bytes] = collections.deque()   # in order, while the pipe is full
        # requests made in this event-loop turn, sent together at its end (_flush): see _send
        self._held: list[bytes] = []
        self._flush_at: asyncio.Handle | None = None
        self._limit_of: socket.socket | None = None   # the socket _limit was asked of (_batch_limit)
        self._limit = batch.BATCH_BYTES
        self._refused = False   # a send found the worker's end closed (see gone)
        self._pipe_closed = asyncio.Event()   # set with _closed: see pipe_closed
        self.stderr: StderrRelay | None = None   # the worker's stderr, read here (stderr_relay.py)
        self.malformed = 0   # datagrams from the worker that did not decode: dropped (tunsec status)
        self.late = 0        # answers to no request waited for (given up on, or never made): dropped (status)
        self._late = LateAnswers()   # of those, the ones still wanted (request_soon's ``late``)
        self.dump_overflows = 0   # DUMP answers that grew past dump_max_bytes: failed (status)
        # the worker decides how many lines of these there are: a worker taken over would flood the log
        self._malformed_log = LogLimiter()
        self._overflow_log = LogLimiter()

    @property
    def stderr_dropped(self) -> int:
        """Lines of this worker's stderr the relay dropped over its rate limit (tunsec status, metrics)."""
        return self.stderr.dropped if self.stderr is not None else 0

    @property
    def in_flight(self) -> int:
        """Requests waiting for their answer (the IKE service refills its key pairs only at 0)."""
        return len(self._pending)

    @property
    def gone(self) -> bool:
        """A worker was started and is known to be gone: its pipe closed (read EOF, or a send found
        its end closed, which may come a loop turn before the EOF is read) or its exit reaped."""
        if self.proc is None:
            return False
        return self._sock is None or self._refused or self.proc.returncode is not None

    async def pipe_closed(self) -> None:
        """Until the pipe is closed: the worker's end closed (EOF read), or this end (stop).  A worker
        that exits closes it too; one that closes it and runs on is killed (worker_watch.py)."""
        await self._pipe_closed.wait()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    async def start(self, fds: WorkerFds, mtu: int, larval_timeout: float, log_level: str,
                    user: str | None = None, log_format: str = "text", spawner: Spawner | None = None,
                    sandbox: bool = True, ipv6_source_prefix: int = DEFAULT_IPV6_SOURCE_PREFIX) -> None:
        """A new worker: started here (becoming user), or by spawner as its user (spawner.py, which
        has the worker's options, sandbox and ipv6_source_prefix among them, from its own start)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # its stderr: a pipe read here, not ours inherited (the terminal, the journal: stderr_relay.py)
        err_r, err_w = os.pipe()
        try:
            if spawner is not None:
                self.proc = await spawner.spawn(theirs.fileno(), err_w)
            else:
                argv = [*worker_command(), "--pipe-fd", str(theirs.fileno()),
                        *worker_args(fds, mtu, larval_timeout, log_level, log_format, sandbox, ipv6_source_prefix)]
                if user:
                    argv += ["--user", user]
                # out of the operator's terminal, as spawner.start_worker starts it
                self.proc = await asyncio.create_subprocess_exec(*argv, pass_fds=[theirs.fileno(), *fds.all()],
                                                                 cwd="/", stdin=asyncio.subprocess.DEVNULL,
                                                                 stderr=err_w, start_new_session=True)
        except BaseException:
            ours.close()
            os.close(err_r)
            raise
        finally:
            theirs.close()
            os.close(err_w)   # the worker's alone: its end is the relay's EOF
        self.stderr = StderrRelay(err_r, self.proc.pid, log_format)
        ours.setblocking(False)
        self._sock = ours
        asyncio.get_running_loop().add_reader(ours.fileno(), self._readable)
        log.info("worker started, pid %d", self.proc.pid)

    def _readable(self) -> None:
        """What the worker sent, one batch at a time (READ_BATCH datagrams, READ_BUDGET bytes): the
        answers among them first, then the events.  In a burst of clients the events are IKE_AUTHs
        (each costs the control process a millisecond or more) and the answers those of earlier
        clients' installs, each holding a client's IKE_AUTH answer: read in order, every answer waited
        for all the IKE_AUTHs queued before it.  An answer is never handled later than in order, only
        earlier than events that came before it (which wait for nothing that an answer does).

        Batches until READ_BUDGET bytes were read, then back to the loop, even when more is waiting: a
        worker that writes without pause (taken over, or hung in a loop) must not hold the timers, port
        500 and the control socket up for as long as it writes.  Not one batch per call: in a burst of
        clients the worker's IKE events wait in its pipe writer, whose share per sender address (all
        the clients behind one NAT) fills and drops IKE_AUTHs when the pipe is read less eagerly.
        Nothing waiting is lost: the loop's readiness is level-triggered (epoll as asyncio and libuv
        use it), so it calls again while the pipe has data."""
        sock = self._sock
        size = 0
        while sock is not None and self._sock is sock and size < READ_BUDGET:
            events: list[pipe.Message] = []
            read, closed = 0, False
            while read < READ_BATCH and size < READ_BUDGET:
                try:
                    data = sock.recv(pipe.MAX_MESSAGE)
                except BlockingIOError:
                    break
                except OSError:
                    data = b""
                if not data:
                    closed = True
                    break
                read += 1
                size += len(data)
                if data[1:2] == _BATCH:
                    self._batch_received(data, events)
                else:
                    self._received(data, events)
            for msg in events:
                self.on_event(msg)
            if closed:
                self._closed()
                return
            if read < READ_BATCH:
                return

    def _batch_received(self, data: bytes, events: list[pipe.Message]) -> None:
        """A batch of the worker's answers (and events): each as if it had come alone; a batch whose
        framing is wrong counts as one malformed datagram, its messages up to the fault handled."""
        messages, wrong = batch.split(data)
        for msg in messages:
            self._received(msg, events)
        if wrong is not None:
            self.malformed += 1
            if (held := self._malformed_log.admit()) is not None:
                log.error("malformed batch from the worker, the rest dropped: %s%s", wrong, suffix(held))

    def _received(self, data: bytes, events: list[pipe.Message] | None = None) -> None:
        """One datagram from the worker: an answer is handled now, an event too or, given
        ``events``, put there for later (see _readable).

        An answer's header is read before its body: one that nobody waits for, one of another type
        than its request's, parts (flag MORE) for a request other than a DUMP, or a DUMP part past
        its cap, is dropped undecoded (decoding a 64 KiB DUMP part takes ~25 ms)."""
        if len(data) > _FLAGS and data[_FLAGS] & pipe.FLAG_REPLY:
            req_id = int.from_bytes(data[4:8], "big")
            entry = self._pending.get(req_id)
            if entry is None:
                # its waiter gave up (timeout, cancelled) and forgot it, or the worker is confused:
                # counted, not logged per datagram (a hung worker that wakes up answers thousands)
                self.late += 1
                if (late := self._late.take(req_id)) is not None:
                    self._late_answer(data, late)
                return
            more = data[_FLAGS] & pipe.FLAG_MORE
            if data[_TYPE] != entry[4] or (more and entry[4] != _DUMP):
                self._wrong_answer(req_id, data[_TYPE], entry[4])
                return
            if more and not self._room_for_part(req_id, len(data)):
                return
        try:
            msg = pipe.decode(data)
        except PipeError as err:
            self.malformed += 1
            if (held := self._malformed_log.admit()) is not None:
                log.error("malformed message from the worker, dropped: %s%s", err, suffix(held))
            return
        if not isinstance(msg, pipe.Reply):
            if events is not None:
                events.append(msg)
            else:
                self.on_event(msg)
            return
        req_id = msg.req_id
        entry = self._pending.get(req_id)
        if entry is None:   # not met above only if the header lied about its flags: decode says so
            self.late += 1
            return
        parts = self._parts.get(req_id) if self._parts else None
        if msg.more:
            if parts is None:
                self._parts[req_id] = _Parts([msg], max(len(data), PART_MIN_BYTES))
            else:
                parts.replies.append(msg)
                parts.size += max(len(data), PART_MIN_BYTES)
            return
        del self._pending[req_id]
        if parts is None:
            replies = [msg]
        else:
            del self._parts[req_id]
            replies = parts.replies
            replies.append(msg)
        fut, then, forget, _, _ = entry
        if not fut.done():
            if forget is not None:
                # answered, so nothing to forget (its entry is gone): a callback left on the future
                # would be scheduled and run for nothing, ~6k instructions per request
                fut.remove_done_callback(forget)
                self._late.ended(req_id, given_up=False)
            fut.set_result(replies)
            if then is not None:
                then(replies)
        elif fut.cancelled() and (late := self._late.take(req_id)) is not None:
            late(replies)   # given up in this very turn: as late as any

    def _wrong_answer(self, req_id: int, got: int, sent: int) -> None:
        """Request req_id, sent with type byte ``sent``, was answered with type byte ``got``, or in
        parts though it is not a DUMP: the worker is confused or lying (a taken-over one would make a
        SEND_IKE or a RESERVE hold a DUMP's worth of parts, review revpipe F1).  Counted malformed, the
        request fails (EINVAL: the worker may have done it) and is forgotten: what else comes for it
        is dropped as late."""
        self.malformed += 1
        entry = self._pending.pop(req_id)
        self._parts.pop(req_id, None)
        what = "in parts" if got == sent else f"of type {got}"
        if (held := self._malformed_log.admit()) is not None:
            log.error("malformed answer from the worker, %s, to request %d of type %d: request failed%s",
                      what, req_id, sent, suffix(held))
        _fail(entry, WorkerError(f"answer {what} to a request of type {sent}", Errno.EINVAL))

    def _room_for_part(self, req_id: int, size: int) -> bool:
        """Whether a part of ``size`` bytes (flag MORE) of request req_id's answer may be held; if
        not, the request fails and is forgotten, and what else comes for it is dropped as late.
        The worker is not restarted: it may hold that much (the cap is a size no gateway's DUMP
        reaches, not what this process installed), and a `status` is all that it costs."""
        parts = self._parts.get(req_id)
        held = parts.size if parts is not None else 0
        cap = parts.cap if parts is not None and parts.cap is not None else self.dump_max_bytes
        if held + max(size, PART_MIN_BYTES) <= cap:
            return True
        self.dump_overflows += 1
        entry = self._pending.pop(req_id)
        self._parts.pop(req_id, None)
        if (suppressed := self._overflow_log.admit()) is not None:
            log.error("the worker's answer to request %d grew past %d bytes: request failed%s",
                      req_id, cap, suffix(suppressed))
        _fail(entry, WorkerError(f"answer over {cap} bytes", Errno.ENOSPC))
        return False

    def _closed(self) -> None:
        self._pipe_closed.set()
        self._held.clear()   # their requests are pending: failed below
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            if self._outq:
                asyncio.get_running_loop().remove_writer(self._sock.fileno())
                self._outq.clear()
            self._sock.close()
            self._sock = None
        pending = list(self._pending.values())
        self._pending.clear()
        self._parts.clear()
        self._late.clear()
        for entry in pending:
            _fail(entry, WorkerError("worker", Errno.EIO, gone=True))

    def _late_answer(self, data: bytes, late: Late) -> None:
        """A late answer someone still wants (request_soon's ``late``): decoded and handed over; one
        in parts is not (no ``late`` request is answered so)."""
        try:
            msg = pipe.decode(data)
        except PipeError:
            self.malformed += 1
            return
        if isinstance(msg, pipe.Reply) and not msg.more:
            late([msg])

    def _next_id(self) -> int:
        """A request id no request waiting for its answer holds: the next one, 1..REQ_ID_MAX and round
        again (the pipe's id is 32 bits: a gateway that runs for months sends more requests than that).
        An id is free once its answer came or its waiter gave up (_forget), so a late answer can only
        find its own request or none, never a newer one (short of 2**32 requests in between)."""
        req_id = self._last_id
        while True:
            req_id = req_id + 1 if req_id < REQ_ID_MAX else 1
            if req_id not in self._pending and not self._late.holds(req_id):
                self._last_id = req_id
                return req_id

    def _forget(self, req_id: int, fut: asyncio.Future[list[pipe.Reply]]) -> None:
        """Its waiter gave up on request req_id (timeout, cancelled): nothing waits for its answer."""
        entry = self._pending.get(req_id)
        if entry is not None and entry[0] is fut:
            del self._pending[req_id]
            self._parts.pop(req_id, None)

    def _forget_cancelled(self, req_id: int, fut: asyncio.Future[list[pipe.Reply]]) -> None:
        self._late.ended(req_id, given_up=fut.cancelled())   # failed: its ``late`` is not wanted either
        if fut.cancelled():
            self._forget(req_id, fut)

    async def request(self, build: Callable[[int], pipe.Message], max_bytes: int | None = None) -> list[pipe.Reply]:
        """Send build(req_id) and wait for its answer(s); WorkerError unless all say OK.  max_bytes:
        its answer's parts held at most (a DUMP's: what the caller installed, see worker_distrust),
        below dump_max_bytes."""
        if self._sock is None:
            raise WorkerError("worker not running", Errno.EIO, gone=True)
        req_id = self._next_id()
        msg = build(req_id)
        data = pipe.encode(msg)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[pipe.Reply]] = loop.create_future()
        self._pending[req_id] = (fut, None, None, None, data[_TYPE])
        if max_bytes is not None:   # its parts start empty: _received appends to them, _forget drops them
            self._parts[req_id] = _Parts([], 0, min(max_bytes, self.dump_max_bytes))
        # a timer on the future itself, not asyncio.wait_for (a second future, a task wrapper and
        # callbacks per request: a client's set-up makes about ten requests)
        timer = loop.call_later(REQUEST_TIMEOUT, _time_out, fut)
        try:
            self._send(data)
            replies = await fut
        except (OSError, TimeoutError) as err:
            raise WorkerError(f"{type(msg).__name__} ({err})", Errno.EIO) from err
        finally:
            timer.cancel()
            self._forget(req_id, fut)   # answered: gone already; timed out or cancelled: given up
        bad = [r for r in replies if r.errno is not Errno.OK]
        if bad:
            raise WorkerError(type(msg).__name__, bad[0].errno, refused=True)
        return replies

    def request_soon(self, build: Callable[[int], pipe.Message | bytes],
                     then: Callable[[list[pipe.Reply]], None] | None = None,
                     failed: _Failed | None = None, late: Late | None = None) -> asyncio.Future[list[pipe.Reply]]:
        """Send build(req_id) at the end of this loop turn (see _send); the returned future gets its
        answer(s) (errno unchecked), or WorkerError if the worker goes or the pipe refuses it. No task
        and no timer, unlike :meth:`request`: for SEND_IKE, which a burst of clients makes by the
        thousand (a task and a wait_for each, ~1.4 KiB while in flight, were arenas pymalloc kept
        afterwards). WorkerError now if the worker is gone or SEND_QUEUE_MAX requests already wait.

        ``then(answers)`` is called as the answers are read, in that event-loop turn (a future's own
        callbacks run a turn later; the install's IKE answer waits on this, see installs._AllOk); never
        if the request fails otherwise (the worker goes, a timeout cancels the future).  ``failed(error)``
        is called when the future gets its WorkerError (the worker goes, the pipe refuses the request,
        its answer outgrows the cap; not when it is cancelled), which is then taken as retrieved: with
        ``then``, no done callback is needed (each costs ~6k instructions, scheduled and run).
        ``build`` may give the datagram itself (pipe.direct: a Child SA's install, encoded without
        the message objects).  ``late(answers)`` is called if the answer comes after the future was
        cancelled (given up on): what the worker did that only the answer names (late_answers.py)."""
        if self._sock is None:
            raise WorkerError("worker not running", Errno.EIO, gone=True)
        req_id = self._next_id()
        msg = build(req_id)
        data = msg if isinstance(msg, bytes) else pipe.encode(msg)
        fut: asyncio.Future[list[pipe.Reply]] = asyncio.get_running_loop().create_future()
        forget = functools.partial(self._forget_cancelled, req_id)
        self._pending[req_id] = (fut, then, forget, failed, data[_TYPE])
        try:
            self._send(data)
        except OSError as err:
            del self._pending[req_id]
            raise WorkerError(f"{_name(msg)} ({err})", Errno.EIO) from err
        # a waiter that gives up cancels the future (answered's timeout): the request is forgotten
        # then, not when an answer comes, which a hung worker never sends (_received takes the
        # callback off again when the answer comes)
        fut.add_done_callback(forget)
        if late is not None:
            self._late.want(req_id, late)
        return fut

    def notify(self, msg: pipe.Notice) -> bool:
        """Send a notice (no answer, docs/pipe.md: ADDR_ADDED) at the end of this turn, behind the
        requests already made; False if there is no worker or too many requests wait (it is lost)."""
        if self._sock is None:
            return False
        try:
            self._send(pipe.encode(msg))
        except OSError:
            return False
        return True

    def _send(self, data: bytes) -> None:
        """Hold the request until the end of this event-loop turn (_flush), behind any already held or
        waiting for room in the pipe: requests reach the worker in the order they were made.  In a
        burst a client's set-up makes ~5 requests (GETSPI refill, UPDATE, ADD, SPDADD, SEND_IKE) from
        callbacks of a turn, among other clients' work: sent one by one, each could wake the worker
        for a short slice on cold caches; sent together, as one batch (pipe.batch), the worker reads
        them with one receive in one wake-up (and answers them together, worker.PipeReader).  Nothing
        awaits an answer without yielding to the loop, which runs the flush first: a request is never
        held past its own turn."""
        held = self._held
        if len(held) + len(self._outq) >= SEND_QUEUE_MAX:
            raise OSError(f"{len(held) + len(self._outq)} requests already wait for room in the pipe")
        if not held:
            self._flush_at = asyncio.get_running_loop().call_soon(self._flush)
        held.append(data)

    def flush(self) -> None:
        """Send the requests held so far now, not at the end of the turn: for work done in one long
        loop callback that stands for many (bench/ike_burst.py's passes), and before closing."""
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush()

    def _flush(self) -> None:
        """Send the requests held in this turn, in order, as few datagrams as fit (pipe.batch: one
        send, and one read in the worker, for a turn's requests instead of one each); what does not
        fit in the pipe waits in _outq (_drain), request by request."""
        self._flush_at = None
        held, self._held = self._held, []
        sock, outq = self._sock, self._outq
        if sock is None:
            return
        if outq:
            outq.extend(held)
            return
        send, at, most = sock.send, 0, self._batch_limit(sock)
        while at < len(held):
            data, end = batch.pack(held, at, most)
            try:
                send(data)
            except BlockingIOError:
                outq.extend(held[at:])
                asyncio.get_running_loop().add_writer(sock.fileno(), self._drain)
                return
            except OSError as err:
                for request in held[at:end]:
                    self._unsent(request, err)
            at = end

    def _batch_limit(self, sock: socket.socket) -> int:
        """pipe.batch.limit of the pipe's socket, asked once per socket."""
        if self._limit_of is not sock:
            self._limit_of, self._limit = sock, batch.limit(sock)
        return self._limit

    def _unsent(self, data: bytes, err: OSError) -> None:
        """A held request the pipe refused other than for want of room (the worker gone, say): it fails
        now with the error, as it did when requests were sent as they were made."""
        if isinstance(err, (BrokenPipeError, ConnectionResetError)):
            self._refused = True
        req_id = int.from_bytes(data[4:8], "big")   # the pipe header's request id (docs/pipe.md)
        entry = self._pending.pop(req_id, None)
        self._parts.pop(req_id, None)
        if entry is not None:
            _fail(entry, WorkerError(f"{pipe.MsgType(data[1]).name} ({err})", Errno.EIO))

    def _drain(self) -> None:
        """The requests that waited for room in the pipe, batched as _flush sends them."""
        sock, outq = self._sock, self._outq
        while sock is not None and outq:
            waiting = list(itertools.islice(outq, batch.MAX_BATCHED))
            data, end = batch.pack(waiting, 0, self._batch_limit(sock))
            try:
                sock.send(data)
            except BlockingIOError:
                return
            except OSError:
                break    # the reader sees the worker go; its requests fail then
            for _ in range(end):
                outq.popleft()
        outq.clear()
        if sock is not None:
            asyncio.get_running_loop().remove_writer(sock.fileno())

    async def stop(self, timeout: float = 5.0) -> int | None:
        """Send what this turn made, close the pipe (the worker exits on EOF) and reap it."""
        self.flush()
        self._closed()
        if self.proc is None:
            return None
        code = await self._reaped(timeout)
        if self.stderr is not None:   # its last lines (it exited: EOF is there, or soon)
            await self.stderr.finish(STDERR_WAIT)
        return code

    async def _reaped(self, timeout: float) -> int | None:
        assert self.proc is not None
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            log.warning("worker %d did not exit; killing it", self.proc.pid)
            self.proc.kill()
        try:
            # bounded too: a spawned worker's end is only what the spawner reports, and a spawner
            # that is stuck or lost the exit must not hang the shutdown
            return await asyncio.wait_for(self.proc.wait(), KILL_WAIT)
        except TimeoutError:
            log.error("worker %d: no exit reported %.0f s after it was killed; not waiting for it any longer",
                      self.proc.pid, KILL_WAIT)
            return None
