"""Log lines as `tunsec up` writes them: text (journald-aware) and JSON, one line per event."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tunsec import logs
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
    assert doc["msg"] == f"cannot start: {tmp_path / 'not-a-socket'} exists and is not a socket"
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
    assert re.fullmatch(r"<3>tunsec\[\d+\] ERROR cannot start: .* exists and is not a socket", line), line


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


@pytest.mark.parametrize("text", ["plain ascii", "é ü 日本", "tab\there", "nl\nx", "del\x7f", "c1\x85nel", "\x00", ""])
def test_escape_without_a_control_character_is_the_text(text: str) -> None:
    # _escape skips its regex when the text is printable: the same result as the regex pass
    assert logs._escape(text) == logs._CONTROL.sub(
        lambda m: f"\\x{ord(m.group()):02x}" if m.group() != "\n" else "\\n", text)


def test_configured_handler_writes_one_flushed_line_per_record() -> None:
    class Stream(io.StringIO):
        flushes = 0

        def flush(self) -> None:
            self.flushes += 1

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    flags = logging._srcfile, logging.logThreads, logging.logMultiprocessing   # configure sets them
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
    assert len(lines) == 2 and flushes == 2
    assert lines[0].endswith(" INFO peer moon\\nforged up") and TIMESTAMP.match(lines[0])
    assert lines[1].endswith(" WARNING second")
