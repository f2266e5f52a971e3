"""The worker's stderr, read by the control process and passed on as the worker's log lines.

The worker parses every packet from the network in C: taken over, whatever it wrote to an inherited
stderr would reach the operator's terminal (escape sequences) or, under systemd, the journal as
tunsec's own lines (a forged AUTHENTICATION_FAILED naming an innocent address, for fail2ban to
ban).  So its stderr is a pipe this process reads (client.WorkerClient.start gives the worker the
write end, through the spawner when there is one: no descriptor it did not have, fd 2 only
changes what it leads to).  Each line is passed on through this process's logging:

- marked as the worker's: process ``tunsec-worker`` and the pid this process started, never
  what the line says;
- parsed as the worker writes its lines (text: ``TIMESTAMP tunsec-worker[PID] LEVEL message``;
  json: one object) for level, logger, message (and ``exc``), the rest dropped.  A JSON line is
  rebuilt field by field, never copied: copied, it could say ``"process": "tunsec"`` or add a
  ``remote``.  Anything else (a traceback at a crash, a C library's message) is passed on as a
  WARNING, as text;
- escaped as text from the network is (tunsec.printable, by this process's formatter), and
  tunsec's documented filter word AUTHENTICATION_FAILED written ``AUTHENTICATION\\x5fFAILED``:
  the documented fail2ban regex is unanchored (``^.*? AUTHENTICATION_FAILED from <HOST>``), so
  no prefix of ours keeps it from matching the worker's text after it;
- bounded: MAX_LINE bytes a line (the rest up to its newline dropped, and said so), LINES lines a
  WINDOW passed on, those past it dropped and counted (one line of ours says how many); past
  BYTES read in a window, reading stops until the window ends (a worker that writes without
  pause then waits in its write: it holds up only itself, and costs this process no more than
  reading BYTES a window).

Reading is non-blocking, in the event loop, at most CHUNK bytes a call: the control process's
own logging never waits for the worker.  EOF (the worker exited, or closed its stderr) passes on
a last partial line and ends the relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
from dataclasses import dataclass

from tunsec.logs import PROCESS_ATTR

log = logging.getLogger("tunsec.dataplane.stderr")

PROCESS = "tunsec-worker"
CHUNK = 16384         # bytes read a call: then back to the event loop
MAX_LINE = 8192       # bytes of one line kept (a JSON line with a traceback fits)
WINDOW = 10.0         # seconds
LINES = 1000          # lines passed on a window (a healthy worker writes a handful at start, then few;
                      # at log_level debug a few per SA): ~30 us of this process's time each
BYTES = 1 << 20       # bytes read a window before reading pauses until its end

_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING,
           "ERROR": logging.ERROR, "CRITICAL": logging.CRITICAL}
# the spawner's lines too (spawner.py: its stderr is relayed as the worker's); either way a line is marked
# with the process and pid the relay was made for, never with what the line says
_TEXT = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} tunsec-(?:worker|spawner)\[\d+\] ([A-Z]+) (.*)", re.S)
_LOGGER = re.compile(r"tunsec(?:\.[A-Za-z0-9_]{1,40}){0,6}")
_FILTER_WORDS = re.compile("AUTHENTICATION_FAILED", re.I)
UNFORMATTED = "tunsec.worker.stderr"   # the logger named for a line not in the worker's format


@dataclass(frozen=True)
class Line:
    """What is passed on of one line the worker wrote."""

    level: int
    logger: str
    msg: str
    exc: str | None = None


def defused(text: str) -> str:
    """``text`` with the words tunsec's documented log filters match written so no filter matches."""
    return _FILTER_WORDS.sub(lambda m: m.group(0).replace("_", "\\x5f"), text)


def _json_line(text: str) -> Line | None:
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    level, logger, msg, exc = doc.get("level"), doc.get("logger"), doc.get("msg"), doc.get("exc")
    if not isinstance(level, str) or level.upper() not in _LEVELS or not isinstance(msg, str):
        return None
    if not (isinstance(logger, str) and _LOGGER.fullmatch(logger)):
        logger = "tunsec.worker"
    return Line(_LEVELS[level.upper()], logger, msg, exc if isinstance(exc, str) else None)


def parse(raw: bytes, fmt: str) -> Line:
    """One line the worker wrote (without its newline), as the worker's format (``text`` or
    ``json``) has it; any other line as a WARNING of logger UNFORMATTED, its bytes as text
    (what is not UTF-8 as ``\\xNN``)."""
    text = raw.decode("utf-8", "backslashreplace")
    if fmt == "json":
        line = _json_line(text)
        if line is not None:
            return line
    else:
        m = _TEXT.fullmatch(text)
        if m and m.group(1) in _LEVELS:
            return Line(_LEVELS[m.group(1)], "tunsec.worker", m.group(2))
    return Line(logging.WARNING, UNFORMATTED, text)


class StderrRelay:
    """Reads one worker's stderr (the pipe's read end ``fd``, taken over) until EOF or close()."""

    def __init__(self, fd: int, pid: int, fmt: str, process: str = PROCESS) -> None:
        self.pid, self.fmt, self.process = pid, fmt, process
        self.dropped = 0   # lines not passed on (over LINES a window)
        self.cut = 0       # lines passed on cut at MAX_LINE
        self._fd: int | None = fd
        self._loop = asyncio.get_running_loop()
        self._partial = bytearray()
        self._partial_cut = 0   # bytes of the line being read dropped past MAX_LINE
        self._window_start = self._loop.time()
        self._window_lines = self._window_bytes = self._window_dropped = 0
        self._timer: asyncio.TimerHandle | None = None
        self._paused = False
        self.done = asyncio.Event()
        os.set_blocking(fd, False)
        self._loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        if self._fd is None:
            return
        try:
            data = os.read(self._fd, CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        self._roll()
        if not data:
            self._end(eof=True)
            return
        self._window_bytes += len(data)
        self._feed(data)
        if self._window_bytes >= BYTES:
            self._pause()

    def _feed(self, data: bytes) -> None:
        start = 0
        while start <= len(data):
            if self._window_lines >= LINES:   # none passes for the rest of the window: count them
                ends = data.count(b"\n", start)
                if ends:
                    self._drop(ends)
                    start = data.rindex(b"\n") + 1
                    self._partial.clear()
                    self._partial_cut = 0
                self._add(data[start:])
                return
            nl = data.find(b"\n", start)
            if nl < 0:
                self._add(data[start:])
                return
            self._add(data[start:nl])
            self._line_end()
            start = nl + 1

    def _add(self, piece: bytes) -> None:
        room = MAX_LINE - len(self._partial)
        self._partial += piece[:room]
        self._partial_cut += max(0, len(piece) - room)

    def _line_end(self, unfinished: bool = False) -> None:
        raw, cut = bytes(self._partial), self._partial_cut
        self._partial.clear()
        self._partial_cut = 0
        if self._window_lines >= LINES:
            self._drop(1)
            return
        self._window_lines += 1
        line = parse(raw, self.fmt)
        msg = line.msg
        if cut:
            self.cut += 1
            msg += f" ... ({cut} more bytes of this line dropped)"
        if unfinished:
            msg += " ... (its stderr ended mid-line)"
        self._emit(line, msg)

    def _emit(self, line: Line, msg: str) -> None:
        if not log.isEnabledFor(line.level):
            return
        # not a logger of the worker's name: logging keeps every logger it was asked for, forever
        record = log.makeRecord(line.logger, line.level, "(worker)", 0, "%s", (defused(msg),), None)
        record.process = self.pid
        record.__dict__[PROCESS_ATTR] = self.process
        if line.exc is not None:
            record.__dict__["exc"] = defused(line.exc[:MAX_LINE])
        log.handle(record)

    def _drop(self, lines: int) -> None:
        self.dropped += lines
        self._window_dropped += lines
        self._arm()

    def _arm(self) -> None:
        """A call at the window's end: it says what was dropped, and reading resumes if paused."""
        if self._timer is None and self._fd is not None:
            self._timer = self._loop.call_at(self._window_start + WINDOW, self._window_over)

    def _window_over(self) -> None:
        self._timer = None
        self._roll(force=True)   # (a timer may fire up to the clock's resolution early)
        if self._paused and self._fd is not None:
            self._paused = False
            self._loop.add_reader(self._fd, self._readable)

    def _roll(self, force: bool = False) -> None:
        now = self._loop.time()
        if now - self._window_start < WINDOW and not force:
            return
        self._summary()
        self._window_start = now
        self._window_lines = self._window_bytes = 0

    def _summary(self) -> None:
        if self._window_dropped:
            log.warning("%s %d: %d line(s) of its stderr dropped (more than %d in %.0f s)",
                        self.process.removeprefix("tunsec-"), self.pid, self._window_dropped, LINES, WINDOW)
            self._window_dropped = 0

    def _pause(self) -> None:
        if not self._paused and self._fd is not None:
            self._paused = True
            self._loop.remove_reader(self._fd)
            self._arm()

    def _end(self, eof: bool) -> None:
        if self._fd is None:
            return
        if eof and (self._partial or self._partial_cut):
            self._line_end(unfinished=True)
        self._summary()
        if not self._paused:
            self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self._fd = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.done.set()

    async def finish(self, timeout: float) -> None:
        """What the worker wrote up to its end (EOF, within ``timeout``), then closed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.done.wait(), timeout)
        self._end(eof=False)
