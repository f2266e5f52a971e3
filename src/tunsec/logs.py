"""How both processes write their logs: one line per event on stderr.

``text``: ``TIMESTAMP tunsec[PID] LEVEL message``.  When stderr is journald's
stream (systemd sets ``JOURNAL_STREAM`` to its ``device:inode``), journald
stamps every line itself: the timestamp is left out and the line starts with
the syslog priority (``<3>`` ...), which journald takes as the entry's level.
``json``: one object a line with ``ts``, ``level``, ``logger``, ``msg``,
``process``, ``pid`` and the fields a call passed as ``extra={...}``.

Messages carry text from the network (identities, proposal names, addresses):
every character that is not printable (controls, newlines among them, U+2028,
NEL, C1 controls, bidi overrides: tunsec.printable) is escaped, in both formats,
so that no peer can split a line in two or forge one for any reader.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, TextIO

from tunsec.printable import escaped

__all__ = ["PROCESS_ATTR", "JsonFormatter", "TextFormatter", "configure", "journald_is_stderr"]

# LogRecord's own attributes: anything else on a record came in through extra={...}
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
# a record's process name, when not the handler's: a worker's line the control process relays
# (tunsec.dataplane.stderr_relay); "_"-prefixed, so never a JSON field of its own
PROCESS_ATTR = "_tunsec_process"
# sd-daemon.h's SD_ERR... prefixes, read by journald from a stream
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


def _json_escape(char: str) -> str:
    """A character as a JSON string escape (astral ones as a surrogate pair, as JSON spells them)."""
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def _json_printable(line: str) -> str:
    """json.dumps(ensure_ascii=False) escapes only U+0000-U+001F: the other non-printable characters
    as escapes too, so that a parser gets the same text back and the line holds printable ones only.
    Only inside strings can there be such characters (json.dumps puts spaces between the tokens)."""
    if line.isprintable():
        return line
    return "".join(c if c.isprintable() else _json_escape(c) for c in line)


def journald_is_stderr(stream: TextIO | None = None) -> bool:
    """stderr is the journal stream systemd connected it to (not merely inherited the variable).

    ``JOURNAL_STREAM`` is ``DEVICE:INODE`` of that stream; a child whose stderr
    was redirected elsewhere still has the variable, so compare it with stderr."""
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep or not dev.isdigit() or not ino.isdigit():
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


class TextFormatter(logging.Formatter):
    """One line per record; ``journald``: no timestamp, syslog priority prefix."""

    def __init__(self, process: str, journald: bool = False) -> None:
        super().__init__()
        self.process = process
        self.journald = journald
        self._second: int | None = None   # formatTime's text without the milliseconds, per second
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """logging's default format (``2026-12-02 02:13:12,345``), strftime'd once per second: a
        gateway that sets up a thousand clients writes thousands of lines a second."""
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime(self.default_time_format, self.converter(record.created))
        return f"{self._stamp},{int(record.msecs):03d}"   # default_msec_format: "%s,%03d"

    def format(self, record: logging.LogRecord) -> str:
        # a backslash as it is: a message's %r (the failed authentication's reason) is a Python literal, whose
        # backslashes are its own escapes (a peer's text put in as %s can read as another: see printable)
        text = escaped(record.getMessage(), backslash=False)
        process = record.__dict__.get(PROCESS_ATTR, self.process)   # a relayed worker line: the worker's
        if record.exc_info:
            text += " | " + escaped(self.formatException(record.exc_info), backslash=False)
        if self.journald:
            return f"<{_PRIORITY.get(record.levelno, 6)}>{process}[{record.process}] {record.levelname} {text}"
        # formatTime's text, without a call per record (two lines per client in a burst)
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime(self.default_time_format, self.converter(record.created))
        return f"{self._stamp},{int(record.msecs):03d} {process}[{record.process}] {record.levelname} {text}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line, of printable characters only (non-ASCII text stays readable)."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        doc: dict[str, Any] = {
            "ts": ts,
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "process": record.__dict__.get(PROCESS_ATTR, self.process),
            "pid": record.process,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in doc and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return _json_printable(json.dumps(doc, default=str, ensure_ascii=False))


class _Record(logging.LogRecord):
    """logging.LogRecord with the same attributes and values, made with fewer calls: a gateway
    setting up a burst of clients makes two records per client, and LogRecord.__init__ splits
    the (constant, as logging._srcfile is None) caller's path with two os.path calls per record.
    tests/test_logs.py compares both on random records."""

    def __init__(self, name: str, level: int, pathname: str, lineno: int, msg: object, args: Any,
                 exc_info: Any, func: str | None = None, sinfo: str | None = None, **kwargs: Any) -> None:
        ct = time.time()
        # as LogRecord: one non-empty mapping as the only argument is the mapping %-format reads
        if args and len(args) == 1 and isinstance(args[0], Mapping) and args[0]:
            args = args[0]
        names = _FILE_NAMES.get(pathname) if type(pathname) is str else None
        if names is None:
            names = _file_names(pathname)
        attrs = self.__dict__
        attrs.update(name=name, msg=msg, args=args,
                     levelname=_LEVEL_NAMES.get(level) or logging.getLevelName(level), levelno=level,
                     pathname=pathname, filename=names[0], module=names[1], exc_info=exc_info, exc_text=None,
                     stack_info=sinfo, lineno=lineno, funcName=func, created=ct,
                     msecs=int((ct - int(ct)) * 1000) + 0.0,
                     relativeCreated=(ct - logging._startTime) * 1000)  # type: ignore[attr-defined]
        if logging.logThreads:
            attrs.update(thread=threading.get_ident(), threadName=threading.current_thread().name)
        else:
            attrs.update(thread=None, threadName=None)
        if logging.logMultiprocessing:
            attrs["processName"] = _process_name()
        else:
            attrs["processName"] = None
        attrs["process"] = os.getpid() if logging.logProcesses else None


# getLevelName's first lookup (the names are not empty: a miss falls back to it)
_LEVEL_NAMES: dict[int, str] = logging._levelToName
# filename and module of each caller's path a record named (one: "(unknown file)" without _srcfile)
_FILE_NAMES: dict[str, tuple[str, str]] = {}


def _file_names(pathname: Any) -> tuple[str, str]:
    """LogRecord's filename and module for ``pathname``, cached for a str."""
    try:
        filename = os.path.basename(pathname)
        names = (filename, os.path.splitext(filename)[0])
    except (TypeError, ValueError, AttributeError):
        return (pathname, "Unknown module")
    if type(pathname) is str and len(_FILE_NAMES) < 256:   # a bound: callers' paths are few
        _FILE_NAMES[pathname] = names
    return names


def _process_name() -> str:
    """LogRecord's processName with logMultiprocessing."""
    mp = sys.modules.get("multiprocessing")
    if mp is not None:
        try:
            return str(mp.current_process().name)
        except Exception:   # as LogRecord: multiprocessing may be half imported
            pass
    return "MainProcess"


class _LineHandler(logging.StreamHandler[TextIO]):
    """StreamHandler writing each line and flushing it under the one lock ``handle`` holds around
    ``emit`` (StreamHandler.flush takes it a second time): a gateway setting up a burst of
    clients writes two lines per client."""

    def handle(self, record: logging.LogRecord) -> bool:
        """Handler.handle without its acquire and release calls, and the filter pass only when there
        are filters (none here): the same lock around emit."""
        if self.filters and not self.filter(record):
            return False
        assert self.lock is not None   # (createLock in Handler.__init__)
        with self.lock:
            self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = self.stream
            stream.write(self.format(record) + self.terminator)
            stream.flush()
        except RecursionError:   # as StreamHandler.emit
            raise
        except Exception:
            self.handleError(record)


def configure(level: str, fmt: str = "text", process: str = "tunsec", stream: TextIO | None = None) -> None:
    """Replace the root logger's handlers with one on ``stream`` (stderr) in format ``fmt``."""
    out = stream or sys.stderr
    handler = _LineHandler(out)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(process))
    else:
        handler.setFormatter(TextFormatter(process, journald=journald_is_stderr(out)))
    # what no format here prints is not gathered per record either: the caller's file, line
    # and function (a walk up the stack) and the thread
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    logging.setLogRecordFactory(_Record)
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
