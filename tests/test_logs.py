"""Log lines as `tunsec up` writes them: text (journald-aware) and JSON, one line per event."""

from __future__ import annotations

import ast
import io
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tunsec import logs, printable
from tunsec.logs import JsonFormatter, TextFormatter

SRC = str(Path(__file__).resolve().parents[1] / "src")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d")


def _up(tmp_path: Path, log_format: str, journal_stream: str | None) -> list[str]:
    """Run `tunsec up` on a config whose control socket path is a regular file: it logs one error and stops."""
    blocker = tmp_path / "not-a-socket"
    blocker.write_text("")
    conf = tmp_path / "t.conf"
    conf.write_text(f'tunsec {{\n  control_socket = {blocker}\n  log_format = {log_format}\n}}\n')
    err = tmp_path / "stderr"
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"} | {"PYTHONPATH": SRC}
    with err.open("w") as f:
        if journal_stream == "this file":
            st = os.fstat(f.fileno())
            journal_stream = f"{st.st_dev}:{st.st_ino}"
        if journal_stream is not None:
            env["JOURNAL_STREAM"] = journal_stream
        rc = subprocess.run([sys.executable, "-m", "tunsec", "up", "-c", str(conf)], stderr=f, env=env,
                            timeout=60).returncode
    assert rc == 1
    return err.read_text().splitlines()


def test_json_lines_parse_and_carry_the_fields(tmp_path: Path) -> None:
    lines = _up(tmp_path, "json", None)
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert doc["level"] == "error"
    assert doc["logger"] == "tunsec"
    assert doc["msg"] == (f"cannot start: the control socket {tmp_path / 'not-a-socket'} (tunsec {{ control_socket }}) "
                          "exists and is a regular file, not a socket: move it away or choose another path in "
                          "tunsec { control_socket }")
    assert doc["process"] == "tunsec" and isinstance(doc["pid"], int)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", doc["ts"])


def test_text_lines_have_a_timestamp_off_journald(tmp_path: Path) -> None:
    # JOURNAL_STREAM inherited from a unit but stderr redirected elsewhere: not journald
    [line] = _up(tmp_path, "text", "1:2")
    assert TIMESTAMP.match(line), line
    assert " tunsec[" in line and " ERROR cannot start: " in line


def test_journald_stream_gets_no_timestamp_but_a_priority(tmp_path: Path) -> None:
    [line] = _up(tmp_path, "text", "this file")
    assert not TIMESTAMP.search(line), line
    assert re.fullmatch(r"<3>tunsec\[\d+\] ERROR cannot start: .* exists and is a regular file, not a socket: .*",
                        line), line


@pytest.mark.parametrize("fmt", [TextFormatter("tunsec"), TextFormatter("tunsec", journald=True),
                                 JsonFormatter("tunsec")])
def test_a_peer_cannot_split_or_forge_a_line(fmt: logging.Formatter) -> None:
    forged = "moon\n2026-01-01 00:00:00,000 tunsec[1] ERROR forged\r\x1b[2J"
    record = logging.LogRecord("tunsec.ike", logging.INFO, __file__, 1, "peer id %s", (forged,), None)
    try:
        raise ValueError("two\nlines")
    except ValueError:
        record.exc_info = sys.exc_info()
    out = fmt.format(record)
    assert "\n" not in out and "\r" not in out and "\x1b" not in out
    if isinstance(fmt, JsonFormatter):
        doc = json.loads(out)
        assert doc["msg"] == f"peer id {forged}" and "ValueError: two\nlines" in doc["exc"]
    else:
        assert "peer id moon\\n2026-01-01" in out and "ValueError: two\\nlines" in out


def test_json_carries_structured_fields() -> None:
    record = logging.LogRecord("tunsec.ike", logging.INFO, __file__, 1, "child up", (), None)
    record.connection = "gw"
    record.spi_in = 0x1234
    doc = json.loads(JsonFormatter("tunsec").format(record))
    assert (doc["connection"], doc["spi_in"], doc["msg"]) == ("gw", 0x1234, "child up")


@pytest.mark.parametrize("text", ["plain ascii", "é ü 日本", "tab\there", "nl\nx", "del\x7f", "c1\x85nel", "\x00", "",
                                  "ls\u2028ps\u2029", "csi\x9b2J", "rlo\u202eevil", "tag\U000e0041", "lone\udcfc"])
def test_escaped_text_is_printable_and_names_each_character(text: str) -> None:
    out = printable.escaped(text)
    assert out.isprintable()
    # what was printable stays as it was; the rest is its Python escape, which reads back as the text
    assert out == text if text.isprintable() else ast.literal_eval(f'"{out}"') == text


# A pre-authentication IDi (a DN's CN) that readers splitting on U+2028 or NEL, or a terminal
# obeying CSI and bidi overrides, would take as a second line saying an IKE SA came up
FORGED = ("x\u2028Dec  3 06:00:00 tunsec[1] INFO b-from-a: IKE SA established with 203.0.113.9"
          "\x85\x9b2J\u202e\u2029\x1b[2J\r\n\v\f\x1c\x1d\x1e\udcfc\U000e0041")


@pytest.mark.parametrize("fmt", [TextFormatter("tunsec"), TextFormatter("tunsec", journald=True),
                                 JsonFormatter("tunsec")])
def test_no_unicode_line_break_or_terminal_control_reaches_a_line(fmt: logging.Formatter) -> None:
    record = logging.LogRecord("tunsec.ike", logging.ERROR, __file__, 1, "b-from-a: AUTHENTICATION_FAILED: %s",
                               (f"peer identity O={FORGED} is not the configured moon.example",), None)
    record.peer = FORGED   # a structured field (extra=) carries it too
    try:
        raise ValueError(FORGED)
    except ValueError:
        record.exc_info = sys.exc_info()
    out = fmt.format(record)
    assert len(out.splitlines()) == 1
    assert out.isprintable(), [c for c in out if not c.isprintable()]
    if isinstance(fmt, JsonFormatter):   # still the same text for a JSON parser
        doc = json.loads(out)
        assert doc["msg"].endswith(f"O={FORGED} is not the configured moon.example")
        assert doc["peer"] == FORGED and f"ValueError: {FORGED}" in doc["exc"]
        assert '"msg": "é"' in fmt.format(logging.LogRecord("t", 20, "", 1, "é", None, None))   # readable, not \\u00e9
    else:
        assert "O=x\\u2028Dec  3 06:00:00" in out and "\\x85\\x9b2J\\u202e" in out


def test_configured_handler_writes_one_flushed_line_per_record() -> None:
    class Stream(io.StringIO):
        flushes = 0

        def flush(self) -> None:
            self.flushes += 1

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    flags = logging._srcfile, logging.logThreads, logging.logMultiprocessing   # configure sets them
    factory = logging.getLogRecordFactory()
    out = Stream()
    try:
        logs.configure("info", stream=out)
        log = logging.getLogger("tunsec.test")
        log.info("peer %s up", "moon\nforged")
        log.debug("not written")
        log.warning("second")
        lines = out.getvalue().splitlines()
        flushes = out.flushes
    finally:
        for h in root.handlers[:]:
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
        logging._srcfile, logging.logThreads, logging.logMultiprocessing = flags
        logging.setLogRecordFactory(factory)
    assert len(lines) == 2 and flushes == 2
    assert lines[0].endswith(" INFO peer moon\\nforged up") and TIMESTAMP.match(lines[0])
    assert lines[1].endswith(" WARNING second")


_TIMED = {"created", "msecs", "relativeCreated"}


@pytest.mark.parametrize("seed", range(4))
def test_the_quick_record_has_logrecords_attributes_and_values(seed: int) -> None:
    """logs._Record (configure's record factory) against logging.LogRecord on random records: the
    same attribute names and values (but the clock's), under each setting of logging's flags."""
    import random
    rng = random.Random(seed)
    paths: list[object] = ["(unknown file)", "/a/b/c.py", "c", "", "/x/.hidden", "/y/z.tar.gz", None, 5]
    argses: list[object] = [None, (), ("a",), ({"k": 1},), ({},), ("a", 2), ({"k": 1}, 2), (0,), [1]]
    flags = logging.logThreads, logging.logMultiprocessing, logging.logProcesses
    try:
        for _ in range(200):
            logging.logThreads, logging.logMultiprocessing, logging.logProcesses = (
                rng.random() < 0.5 for _ in range(3))
            call = ("tunsec.x", rng.choice([10, 20, 30, 40, 50, 25]), rng.choice(paths), rng.randrange(100),
                    rng.choice(["m %s", "m %(k)s", "plain", 7]), rng.choice(argses), rng.choice([None, (None,)]),
                    rng.choice([None, "fn"]), rng.choice([None, "stack"]))
            old = vars(logging.LogRecord(*call))   # type: ignore[arg-type]
            new = vars(logs._Record(*call))   # type: ignore[arg-type]
            assert list(old) == list(new)   # the same attributes, in the same order
            assert {k: v for k, v in old.items() if k not in _TIMED} == \
                   {k: v for k, v in new.items() if k not in _TIMED}, call
            assert 0 <= new["msecs"] < 1000 and new["created"] >= old["created"]
    finally:
        logging.logThreads, logging.logMultiprocessing, logging.logProcesses = flags


def test_the_line_handler_keeps_filters_and_the_lock() -> None:
    """_LineHandler.handle: a filter that refuses a record keeps it out; emit runs under the lock."""
    held: list[bool] = []

    class Handler(logs._LineHandler):
        def emit(self, record: logging.LogRecord) -> None:
            assert self.lock is not None
            held.append(self.lock._is_owned())   # type: ignore[attr-defined]

    h = Handler(io.StringIO())
    rec = logging.LogRecord("t", 20, "", 1, "m", None, None)
    assert h.handle(rec) is True and held == [True]
    h.addFilter(lambda r: False)
    assert h.handle(rec) is False and held == [True]
