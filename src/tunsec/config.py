"""tunsec configuration: strongSwan's swanctl.conf syntax, typed and validated.

Two layers:

* :func:`parse_settings` reads the strongSwan settings syntax (``name { }``
  sections, ``key = value``, ``#`` comments, quoted strings, ``include``) into
  a :class:`Section` tree that remembers the file and line of every key and
  section. It knows nothing about tunsec.
* :func:`parse_config` / :func:`load_config` check that tree against a small
  validator per top-level section (see ``_TOP_LEVEL``) and build frozen
  dataclasses. Every problem becomes a :class:`ConfigIssue` naming file, line
  and key; all of them are collected and raised together as one
  :class:`ConfigError`, so ``tunsec check`` can show everything at once.

This module does ``tunsec { }`` and ``manual { }``; swanctl.conf's
``connections``, ``secrets`` and ``authorities`` (IKEv2) are validated by
:mod:`tunsec.ike_config`, which builds the engine's config objects and finds
certificates and keys next to the config file as swanctl does.

Key material is wrapped in :class:`~tunsec.ike.secret.Secret` as soon as it is
parsed and is never echoed in an error message.
"""

from __future__ import annotations

import difflib
import enum
import glob
import ipaddress
import os
import pwd
import re
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeVar

from tunsec.ike.secret import Secret
from tunsec.policy.selector import SelectorError, Ts, TsError, fast_selectors
from tunsec.policy.selector import parse_ts_list as _parse_ts_list

if TYPE_CHECKING:  # ike_config imports this module; it is loaded when a config needs it
    from tunsec.ike_config import Connection, IkeSecret

__all__ = [
    "BadValue",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "Esp",
    "IPAddress",
    "IPNetwork",
    "LogLevel",
    "ManualTunnel",
    "Secret",
    "Section",
    "SectionReader",
    "Setting",
    "Ts",
    "TunsecSettings",
    "load_config",
    "parse_bool",
    "parse_bytes",
    "parse_config",
    "parse_duration",
    "parse_manual_ts_list",
    "parse_settings",
    "parse_ts_list",
]

T = TypeVar("T")
# Anything this long and hex-only may be key material (a 128-bit key is 32 digits).
_HEX_RUN = re.compile(r"[0-9a-fA-F]{16,}")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
LogLevel = Literal["debug", "info", "warning", "error"]

# Deep enough for any real swanctl.conf (connections.<c>.children.<c>.x is 4),
# shallow enough that the recursive parser can never hit Python's recursion limit.
MAX_SECTION_DEPTH = 32
MAX_INCLUDE_DEPTH = 16


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file. ``line`` is 0 when it concerns a whole file."""

    file: str
    line: int
    key: str
    message: str

    def __post_init__(self) -> None:
        # Last line of defence for secrets: whatever path led a key's hex here
        # (a key pasted as a name, a section, a value of the wrong key), it
        # never reaches a terminal or a log.
        for name in ("key", "message"):
            text = getattr(self, name)
            if _HEX_RUN.search(text):
                object.__setattr__(self, name, _HEX_RUN.sub("<hex withheld>", text))

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line > 0 else self.file
        if self.key:
            return f"{where}: {self.key}: {self.message}"
        return f"{where}: {self.message}"


class ConfigError(Exception):
    """All problems found in a configuration; ``str()`` lists one per line."""

    def __init__(self, errors: Iterable[ConfigIssue]) -> None:
        self.errors: list[ConfigIssue] = list(errors)
        super().__init__("\n".join(str(issue) for issue in self.errors))

    def __reduce__(self) -> tuple[type[ConfigError], tuple[list[ConfigIssue]]]:
        # The default would call ConfigError(message_str) and lose the issues.
        return (ConfigError, (self.errors,))


class BadValue(ValueError):
    """Raised by value parsers; the message is shown after ``file:line: key:``."""


# --------------------------------------------------------------------------
# The settings tree (strongSwan's settings syntax, no tunsec semantics)
# --------------------------------------------------------------------------


@dataclass
class Setting:
    """``name = value`` with where its (last, effective) value was written."""

    name: str
    value: str
    file: str
    line: int


@dataclass
class Section:
    """A ``name { }`` block. Repeated blocks merge into the first one, as in strongSwan.

    ``file``/``line`` are those of the first block. ``damaged`` is set when a
    syntax error occurred directly inside, so validators can skip "missing key"
    complaints that would only repeat the syntax error.
    """

    name: str
    path: str
    file: str
    line: int
    settings: dict[str, Setting] = field(default_factory=dict)
    sections: dict[str, Section] = field(default_factory=dict)
    damaged: bool = False

    def key_path(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def child(self, name: str, file: str, line: int) -> Section:
        existing = self.sections.get(name)
        if existing is None:
            existing = Section(name, self.key_path(name), file, line)
            self.sections[name] = existing
        return existing

    def set(self, name: str, value: str, file: str, line: int) -> None:
        # strongSwan: a repeated key silently takes the later value.
        self.settings.pop(name, None)
        self.settings[name] = Setting(name, value, file, line)


class _Cursor:
    """Position in one file's text. ``peek()`` returns '' at the end."""

    __slots__ = ("file", "line", "pos", "text")

    def __init__(self, text: str, file: str) -> None:
        self.text = text
        self.file = file
        self.pos = 0
        self.line = 1

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def next(self) -> str:
        c = self.peek()
        if c:
            self.pos += 1
            if c == "\n":
                self.line += 1
        return c

    def skip_spaces(self) -> None:
        while self.peek() in (" ", "\t", "\r"):
            self.pos += 1

    def skip_to_eol(self) -> None:
        """Leave the cursor on the next newline (or at the end)."""
        end = self.text.find("\n", self.pos)
        self.pos = len(self.text) if end < 0 else end

    def skip_blanks(self) -> None:
        """Skip spaces and a trailing comment, never the newline."""
        self.skip_spaces()
        if self.peek() == "#":
            self.skip_to_eol()

    def read_while(self, stop: str) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in stop:
            self.pos += 1
        return self.text[start : self.pos]


# Characters that end a bare name, and a bare value part (strongSwan's lexer).
_NAME_STOP = '#{}="\r\n\t '
_VALUE_STOP = '#}"\r\n\t '
_STRING_ESCAPES = {"n": "\n", "r": "\r", "t": "\t"}
_GLOB_MAGIC = re.compile(r"[*?[]")
_SAFE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")


def _echo_name(name: str) -> str | None:
    """The name if it is fit to echo in an error: short and not key-like hex."""
    if _SAFE_NAME.fullmatch(name) and not _HEX_RUN.search(name):
        return name
    return None


class _SettingsParser:
    """Recursive-descent parser over strongSwan's settings grammar.

    Unlike strongSwan it does not stop at the first syntax error: it reports
    the error, skips the rest of the offending line (keeping braces balanced)
    and carries on, so one run finds every mistake.
    """

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        self.files: list[str] = []

    def error(self, file: str, line: int, key: str, message: str) -> None:
        self.issues.append(ConfigIssue(file, line, key, message))

    # -- files ----------------------------------------------------------

    def parse_text(
        self,
        text: str,
        file: str,
        into: Section,
        depth: int,
        stack: tuple[str, ...],
    ) -> None:
        self.files.append(file)
        self._body(_Cursor(text, file), into, depth, None, stack)

    # -- grammar ----------------------------------------------------------

    def _body(
        self,
        cur: _Cursor,
        section: Section,
        depth: int,
        opened_at: int | None,
        stack: tuple[str, ...],
    ) -> None:
        """Statements until the matching '}' (or the end of the file at top level)."""
        while True:
            cur.skip_blanks()
            c = cur.peek()
            if c == "":
                if opened_at is not None:
                    self.error(
                        cur.file,
                        opened_at,
                        section.path,
                        f"section '{section.name}' is never closed (missing '}}')",
                    )
                    section.damaged = True
                return
            if c == "\n":
                cur.next()
            elif c == "}":
                line = cur.line
                cur.next()
                if opened_at is not None:
                    return
                self.error(cur.file, line, section.path, "'}' without a matching '{'")
            else:
                self._statement(cur, section, depth, stack)

    def _statement(self, cur: _Cursor, section: Section, depth: int, stack: tuple[str, ...]) -> None:
        line = cur.line
        c = cur.peek()
        if c in ("{", "=", '"'):
            self._stray(cur, section, depth)
            return
        name = cur.read_while(_NAME_STOP)
        if name == "include" and self._include_follows(cur):
            self._include(cur, section, line, depth, stack)
            return
        cur.skip_blanks()
        c = cur.peek()
        if c == "=":
            cur.next()
            value = self._value(cur, section, section.key_path(name))
            if value is not None:
                section.set(name, value, cur.file, line)
        elif c == "{" or (c == "\n" and self._brace_on_later_line(cur)):
            cur.next()
            self._subsection(cur, section, name, line, depth, stack)
        else:
            shown = _echo_name(name)
            key = section.key_path(shown) if shown else section.path
            self.error(cur.file, line, key, "expected '= value' or '{' after the name")
            section.damaged = True
            self._skip_line(cur, section, depth)

    def _stray(self, cur: _Cursor, section: Section, depth: int) -> None:
        line = cur.line
        c = cur.peek()
        section.damaged = True
        if c == "{":
            self.error(cur.file, line, section.path, "'{' without a section name")
        elif c == "=":
            self.error(cur.file, line, section.path, "'=' without a key name")
        else:
            self.error(
                cur.file,
                line,
                section.path,
                "unexpected quoted string (quotes are only allowed in values)",
            )
        self._skip_line(cur, section, depth)

    def _brace_on_later_line(self, cur: _Cursor) -> bool:
        """strongSwan accepts ``name`` and ``{`` on separate lines; look ahead for it."""
        pos, line = cur.pos, cur.line
        while cur.peek() == "\n":
            cur.next()
            cur.skip_blanks()
        if cur.peek() == "{":
            return True
        cur.pos, cur.line = pos, line
        return False

    def _subsection(
        self,
        cur: _Cursor,
        parent: Section,
        name: str,
        line: int,
        depth: int,
        stack: tuple[str, ...],
    ) -> None:
        if depth + 1 > MAX_SECTION_DEPTH:
            self.error(
                cur.file,
                line,
                parent.path,
                f"sections nested deeper than {MAX_SECTION_DEPTH} levels",
            )
            parent.damaged = True
            self._skip_block(cur)
            return
        child = parent.child(name, cur.file, line)
        self._body(cur, child, depth + 1, line, stack)

    def _value(self, cur: _Cursor, section: Section, key: str) -> str | None:
        """The value after '=': parts separated by blanks, joined by one space.

        Like strongSwan, a bare value ends at '#', '}' or the end of the line;
        quoted parts keep their spaces. An empty value is returned as ''.
        """
        parts: list[str] = []
        while True:
            cur.skip_spaces()
            c = cur.peek()
            if c in ("", "\n", "#", "}"):
                return " ".join(parts)
            if c == '"':
                text = self._string(cur, section, key)
                if text is None:
                    return None
                parts.append(text)
            else:
                parts.append(cur.read_while(_VALUE_STOP))

    def _string(self, cur: _Cursor, section: Section, key: str) -> str | None:
        """A double-quoted string; may span lines. None (reported) if unterminated."""
        start_pos, start_line = cur.pos, cur.line
        cur.next()
        out: list[str] = []
        while True:
            c = cur.next()
            if c == '"':
                return "".join(out)
            if c == "\\":
                c = cur.next()
                if c == "\r" and cur.peek() == "\n":
                    c = cur.next()
                if c == "\n":
                    continue  # an escaped line end joins the lines
                if c:
                    out.append(_STRING_ESCAPES.get(c, c))
                    continue
            if c == "":
                self.error(cur.file, start_line, key, "unterminated quoted string")
                section.damaged = True
                # Resume after the line the quote opened on, not at the end of file.
                cur.pos, cur.line = start_pos, start_line
                cur.skip_to_eol()
                return None
            if c != "\r":
                out.append(c)

    def _skip_line(self, cur: _Cursor, section: Section, depth: int) -> None:
        """Error recovery: drop the rest of the line but keep braces balanced."""
        while True:
            c = cur.peek()
            if c in ("", "\n", "}"):
                return
            if c == "#":
                cur.skip_to_eol()
            elif c == '"':
                self._string(cur, section, section.path)
            elif c == "{":
                line = cur.line
                cur.next()
                scratch = Section("", section.path, cur.file, line)
                if depth + 1 > MAX_SECTION_DEPTH:
                    self._skip_block(cur)
                else:
                    self._body(cur, scratch, depth + 1, line, ())
            else:
                cur.next()

    def _skip_block(self, cur: _Cursor) -> None:
        """Skip to the '}' matching an already consumed '{', without recursion."""
        level = 1
        while level:
            c = cur.next()
            if c == "":
                return
            if c == "#":
                cur.skip_to_eol()
            elif c == "{":
                level += 1
            elif c == "}":
                level -= 1

    # -- include ----------------------------------------------------------

    @staticmethod
    def _include_follows(cur: _Cursor) -> bool:
        """``include`` + blank + not '='/'{': a directive, else a key or section name."""
        if cur.peek() not in (" ", "\t"):
            return False
        rest = cur.text[cur.pos : cur.pos + 256].lstrip(" \t")
        return not rest.startswith(("=", "{"))

    def _include(
        self,
        cur: _Cursor,
        section: Section,
        line: int,
        depth: int,
        stack: tuple[str, ...],
    ) -> None:
        pattern = self._include_pattern(cur, section)
        if pattern is None:
            return
        cur.skip_blanks()
        if cur.peek() not in ("", "\n", "}"):
            self.error(
                cur.file,
                line,
                "include",
                "takes one file pattern (quote it or escape spaces with '\\')",
            )
            self._skip_line(cur, section, depth)
            return
        if not pattern:
            self.error(cur.file, line, "include", "missing file pattern")
            return
        try:
            paths = self._resolve(cur.file, pattern)
        except ValueError:  # NUL or unencodable characters in the pattern
            self.error(cur.file, line, "include", f"invalid file pattern {_show(pattern)}")
            return
        for path in paths:
            self._include_file(path, section, cur.file, line, depth, stack)

    def _include_pattern(self, cur: _Cursor, section: Section) -> str | None:
        """strongSwan: a bare pattern may escape '"', '#', '}' and ' ' with '\\'."""
        cur.skip_spaces()
        out: list[str] = []
        while True:
            c = cur.peek()
            if c in ("", "\n", "#", "}", " ", "\t"):
                return "".join(out)
            if c == '"':
                text = self._string(cur, section, "include")
                return None if text is None else "".join(out) + text
            cur.next()
            if c == "\\" and cur.peek() in ('"', "#", "}", " "):
                out.append(cur.next())
            elif c != "\r":
                out.append(c)

    @staticmethod
    def _resolve(including: str, pattern: str) -> list[str]:
        """Relative patterns are relative to the including file, as in strongSwan."""
        if not os.path.isabs(pattern):
            pattern = os.path.join(glob.escape(os.path.dirname(including)), pattern)
        if _GLOB_MAGIC.search(pattern):
            return sorted(glob.glob(pattern))  # no match is fine for a glob
        return [pattern]

    def _include_file(
        self,
        path: str,
        section: Section,
        from_file: str,
        line: int,
        depth: int,
        stack: tuple[str, ...],
    ) -> None:
        try:
            text = _read_text(path, regular_only=True)
            real = os.path.realpath(path)
        except _Unreadable as exc:
            if exc.issue.line:  # a problem inside the file: point there
                self.issues.append(exc.issue)
            else:
                self.error(from_file, line, "include", f"'{path}': {exc.issue.message}")
            return
        if real in stack:
            self.error(from_file, line, "include", f"'{path}' includes itself (include loop)")
            return
        if len(stack) >= MAX_INCLUDE_DEPTH:
            self.error(from_file, line, "include", f"includes nested deeper than {MAX_INCLUDE_DEPTH}")
            return
        self.parse_text(text, path, section, depth, (*stack, real))


class _Unreadable(Exception):
    """A file that cannot serve as config text; ``issue`` says why."""

    def __init__(self, issue: ConfigIssue) -> None:
        super().__init__(str(issue))
        self.issue = issue


def _read_text(path: str, *, regular_only: bool = False) -> str:
    """A config file's text, or :class:`_Unreadable` (chained to any ``OSError``).

    Included files must be regular: a glob that picks up a FIFO or a device
    would hang or never end. The main file may be a pipe (``-c <(...)``).
    """
    try:
        if regular_only and not stat.S_ISREG(os.stat(path).st_mode):
            raise _Unreadable(ConfigIssue(path, 0, "", "not a regular file"))
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise _Unreadable(ConfigIssue(path, 0, "", f"cannot read: {reason}")) from exc
    except ValueError as exc:  # NUL or unencodable characters in the name
        raise _Unreadable(ConfigIssue(path, 0, "", "invalid file name")) from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise _Unreadable(ConfigIssue(path, line, "", "not valid UTF-8")) from None


def _parse_tree(text: str, path: str, issues: list[ConfigIssue]) -> tuple[Section, list[str]]:
    root = Section("", "", path, 0)
    parser = _SettingsParser(issues)
    stack = (os.path.realpath(path),) if os.path.exists(path) else ()
    parser.parse_text(text, path, root, 0, stack)
    return root, parser.files


def parse_settings(text: str, path: str = "<string>", issues: list[ConfigIssue] | None = None) -> Section:
    """Parse strongSwan settings syntax into a tree (the root has ``path == ''``).

    Syntax errors are appended to ``issues`` when it is given (and the partial
    tree is returned); without it they are raised as one :class:`ConfigError`.
    Includes are resolved relative to ``path``'s directory.
    """
    collected: list[ConfigIssue] = [] if issues is None else issues
    before = len(collected)
    root, _files = _parse_tree(text, path, collected)
    if issues is None and len(collected) > before:
        raise ConfigError(collected)
    return root


# --------------------------------------------------------------------------
# Value parsers: str -> typed value, or BadValue with a message
# --------------------------------------------------------------------------

_UINT = re.compile(r"0[xX][0-9a-fA-F]+|[0-9]+")
_U64_MAX = (1 << 64) - 1


def _show(value: str) -> str:
    """Quote a value for an error message, withholding anything that looks like key material."""
    if _HEX_RUN.search(value):
        return "<long hex value withheld>"
    if len(value) > 60:
        value = value[:57] + "..."
    return repr(value)


def _uint(text: str, what: str) -> int:
    """Decimal or 0x-hex, as swanctl.conf documents; at most 64 bits."""
    text = text.strip()
    if not _UINT.fullmatch(text):
        raise BadValue(f"not {what}: {_show(text)}")
    if len(text) > 24:  # also keeps int() clear of its digit limit
        raise BadValue(f"{_show(text)} is too large")
    if len(text) > 1 and text[0] == "0" and text[1] not in "xX":
        # strongSwan's strtoul(..., 0) would read this as octal; refuse to guess.
        raise BadValue(f"leading zero in {_show(text)} is ambiguous (octal in strongSwan)")
    return int(text, 0)


def _int_range(lo: int, hi: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = _uint(text, what)
        if not lo <= value <= hi:
            raise BadValue(f"{value} is out of range {lo}..{hi}")
        return value

    return parse


def _auto_or(parse: Callable[[str], int]) -> Callable[[str], int | None]:
    """'auto' becomes None, anything else goes to ``parse``."""

    def parse_auto(text: str) -> int | None:
        if text.strip().lower() == "auto":
            return None
        return parse(text)

    return parse_auto


_BOOLEANS = {
    "yes": True, "true": True, "enabled": True, "1": True,
    "no": False, "false": False, "disabled": False, "0": False,
}  # fmt: skip


def parse_bool(text: str) -> bool:
    """strongSwan booleans: yes/no, true/false, enabled/disabled, 1/0 (any case)."""
    try:
        return _BOOLEANS[text.strip().lower()]
    except KeyError:
        raise BadValue(f"not a boolean (yes or no): {_show(text)}") from None


_DURATION = re.compile(r"\s*([0-9]+)\s*([smhdSMHD]?)\s*")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """Seconds from strongSwan's time format: ``30``, ``30s``, ``5m``, ``1h``, ``1d``."""
    m = _DURATION.fullmatch(text)
    if not m:
        raise BadValue(f"not a duration (e.g. 30s, 5m, 1h, 1d): {_show(text)}")
    seconds = _uint(m.group(1), "a duration") * _DURATION_UNITS[m.group(2).lower()]
    if seconds > _U64_MAX:
        raise BadValue(f"{_show(text)} does not fit in 64 bits")
    return seconds


_BYTES = re.compile(r"\s*(0[xX][0-9a-fA-F]+|[0-9]+)\s*([kmgKMG]?)\s*")
_BYTE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_bytes(text: str) -> int:
    """A byte count with strongSwan's optional binary suffix: ``512k``, ``100M``, ``2g``."""
    m = _BYTES.fullmatch(text)
    if not m:
        raise BadValue(f"not a byte count (e.g. 1000000, 512k, 100m, 2g): {_show(text)}")
    value = _uint(m.group(1), "a byte count") * _BYTE_UNITS[m.group(2).lower()]
    if value > _U64_MAX:
        raise BadValue(f"{_show(text)} does not fit in 64 bits")
    return value


def _parse_packets(text: str) -> int:
    value = _uint(text, "a packet count")
    if value > _U64_MAX:
        raise BadValue(f"{value} does not fit in 64 bits")
    return value


def _parse_address(text: str) -> IPAddress:
    text = text.strip()
    if "%" in text:
        raise BadValue(f"scoped addresses are not supported: {_show(text)}")
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise BadValue(f"not an IPv4 or IPv6 address: {_show(text)}") from None
    if addr.is_unspecified or addr.is_multicast:
        raise BadValue(f"{addr} cannot be a tunnel endpoint (unspecified or multicast)")
    return addr


# --------------------------------------------------------------------------
# Traffic selectors: one parser (tunsec.policy.selector) for manual{} and connections{}
# --------------------------------------------------------------------------


def parse_ts_list(text: str) -> tuple[Ts, ...]:
    """local_ts / remote_ts: every bad item reported, as config errors."""
    try:
        return _parse_ts_list(text)
    except TsError as exc:
        raise BadValue(str(exc)) from None


def parse_manual_ts_list(text: str) -> tuple[Ts, ...]:
    """A manual tunnel's local_ts / remote_ts: like IKE's, without ``dynamic``."""
    selectors = parse_ts_list(text)
    if any(t.dynamic for t in selectors):
        raise BadValue("'dynamic' needs IKE; manual tunnels need explicit subnets or ranges")
    return selectors


# --------------------------------------------------------------------------
# ESP, SPIs and keys
# --------------------------------------------------------------------------


class Esp(enum.StrEnum):
    """The AEAD transforms the dataplane implements (RFC 4106, 16-byte ICV)."""

    AES128GCM16 = "aes128gcm16"
    AES256GCM16 = "aes256gcm16"

    @property
    def key_bytes(self) -> int:
        return 16 if self is Esp.AES128GCM16 else 32

    @property
    def keymat_bytes(self) -> int:
        """AES key || 4-byte salt (RFC 4106 §8.1)."""
        return self.key_bytes + 4


# strongSwan names the ICV length in bytes (gcm16) or bits (gcm128); plain
# "aes128gcm" is its alias for the 16-byte ICV too.
_ESP_ALIASES = {f"aes{bits}gcm{suffix}": Esp(f"aes{bits}gcm16") for bits in (128, 256) for suffix in ("", "16", "128")}
_SHORT_ICV = re.compile(r"aes(128|192|256)gcm(8|12|64|96)")


def _parse_esp(text: str) -> Esp:
    name = text.strip().lower()
    esp = _ESP_ALIASES.get(name)
    if esp is not None:
        return esp
    if _SHORT_ICV.fullmatch(name):
        raise BadValue(f"{_show(text)}: tunsec supports only the 16-byte ICV (aes128gcm16, aes256gcm16)")
    raise BadValue(f"unsupported ESP algorithm {_show(text)} (use aes128gcm16 or aes256gcm16)")


def _parse_spi(text: str) -> int:
    try:
        value = _uint(text, "a 32-bit SPI")
    except BadValue:
        raise BadValue(f"not a 32-bit SPI: {_show(text.strip())}") from None
    if value > 0xFFFFFFFF:
        raise BadValue(f"not a 32-bit SPI: {_show(text.strip())}")
    if value < 256:
        # RFC 4303 §2.1: 0 is never sent, 1..255 are reserved by IANA.
        raise BadValue(f"SPI {value} is reserved (SPIs 0..255 are); use 256 or more")
    return value


_HEX_KEY = re.compile(r"0[xX]([0-9a-fA-F]*)")


def _parse_key(text: str) -> Secret:
    """0x-hex key material. Messages never contain the value, not even in part."""
    m = _HEX_KEY.fullmatch(text.strip())
    if not m:
        raise BadValue("must be 0x followed by hex digits (AES key || 4-byte salt)")
    digits = m.group(1)
    if len(digits) % 2:
        raise BadValue(f"has an odd number of hex digits ({len(digits)})")
    return Secret(bytes.fromhex(digits))


# --------------------------------------------------------------------------
# tunsec { } settings
# --------------------------------------------------------------------------


def _parse_ifname(text: str) -> str:
    """Linux dev_valid_name(): 1..15 bytes, no '/', ':' or whitespace, not '.'/'..'."""
    name = text.strip()
    size = len(name.encode("utf-8", "surrogatepass"))
    if not 1 <= size <= 15:
        raise BadValue(f"interface names are 1..15 bytes, got {size}")
    if name in (".", "..") or any(c in "/:\0" or c.isspace() for c in name):
        raise BadValue(f"not a valid Linux interface name: {_show(name)}")
    return name


_SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes including the NUL


def _parse_socket_path(text: str) -> str:
    path = text.strip()
    if "\0" in path:
        raise BadValue("path contains a NUL character")
    if len(path.encode("utf-8", "surrogatepass")) > _SUN_PATH_MAX:
        raise BadValue(f"unix socket paths are at most {_SUN_PATH_MAX} bytes")
    return path


_LOG_LEVELS: dict[str, LogLevel] = {
    "debug": "debug", "info": "info", "warning": "warning", "error": "error"
}  # fmt: skip


def _parse_log_level(text: str) -> LogLevel:
    try:
        return _LOG_LEVELS[text.strip().lower()]
    except KeyError:
        raise BadValue(f"not a log level (debug, info, warning, error): {_show(text)}") from None


def _parse_user(text: str) -> str:
    name = text.strip()
    try:
        pwd.getpwnam(name)
    except KeyError:
        raise BadValue(f"no such user on this host: {_show(name)}") from None
    return name


WORKER_USER = "tunsec"   # the system user scripts/install-deps.sh creates for the worker


def worker_user(configured: str | None) -> str | None:
    """Whom the dataplane worker runs as; None keeps root (only ``user = root`` asks for that).

    Unset means the dedicated ``tunsec`` user when the install created it, else
    ``nobody``: the worker parses packets from the network and needs no privilege
    once the daemon has handed it the TUN and sockets."""
    names = [configured] if configured else [WORKER_USER, "nobody"]
    for name in names:
        try:
            uid = pwd.getpwnam(name).pw_uid
        except KeyError:
            continue
        return None if uid == 0 else name
    raise LookupError(
        f"no user to run the dataplane worker as: {' or '.join(names)} does not exist on this host; "
        f"create it (useradd --system --no-create-home --shell /usr/sbin/nologin {WORKER_USER}, as "
        "scripts/install-deps.sh does), or write user = root in tunsec { } to keep the worker root"
    )


def _parse_state_dir(text: str) -> str:
    path = text.strip()
    if "\0" in path:
        raise BadValue("path contains a NUL character")
    if not os.path.isabs(path):
        raise BadValue(f"must be an absolute path (a directory on persistent storage), got {_show(path)}")
    return os.path.normpath(path)


def _parse_larval_timeout(text: str) -> int:
    seconds = parse_duration(text)
    if seconds < 1:
        raise BadValue("must be at least 1 second")
    return seconds


_parse_mtu = _auto_or(_int_range(576, 65535, "an MTU"))
_parse_workers = _auto_or(_int_range(1, 1 << 16, "a worker count"))


def _float_range(lo: float, hi: float, what: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            raise BadValue(f"not {what}: {_show(text)}") from None
        if not lo <= value <= hi:  # also refuses nan
            raise BadValue(f"{_show(text)} is out of range {lo:g}..{hi:g}")
        return value

    return parse


# IKE retransmission, as strongswan.conf's charon.retransmit_timeout/_base/_tries
_parse_retransmit_timeout = _float_range(0.05, 3600, "a number of seconds")
_parse_retransmit_base = _float_range(1, 10, "a number")
_parse_retransmit_tries = _int_range(0, 100, "a number of retransmissions")
# unauthenticated IKE_SA_INIT, as strongswan.conf's charon.half_open_timeout,
# charon.cookie_threshold and charon.init_limit_half_open (which has no "unlimited" here)
_parse_half_open_timeout = _float_range(0.5, 3600, "a number of seconds")
_parse_cookie_threshold = _int_range(0, 1 << 20, "a number of half-open IKE SAs")
_parse_half_open_limit = _int_range(1, 1 << 20, "a number of half-open IKE SAs")


@dataclass(frozen=True)
class TunsecSettings:
    """The ``tunsec { }`` section. ``None`` stands for ``auto``."""

    tun: str = "tunsec0"
    mtu: int | None = None
    outer_mtu: int | None = None
    control_socket: str = ""   # "" = the default runtime.default_control_socket() resolves
    workers: int | None = None
    log_level: LogLevel = "info"
    larval_timeout: int = 30
    # IKE requests: first retransmission after retransmit_timeout seconds, each
    # wait retransmit_base times the one before, give up after retransmit_tries
    # (strongswan.conf's charon.retransmit_* and their defaults)
    retransmit_timeout: float = 4.0
    retransmit_base: float = 1.8
    retransmit_tries: int = 5
    # the dataplane worker drops to this user once its TUN and sockets are open
    # (it holds Child SA keys only; the control process keeps root for routes);
    # None = tunsec if it exists, else nobody; "root" keeps root (worker_user)
    user: str | None = None
    # IKE SAs a peer has not authenticated yet ("half-open"): closed after
    # half_open_timeout seconds; above cookie_threshold of them a COOKIE is
    # demanded (RFC 7296 §2.6); above half_open_limit requests are dropped
    half_open_timeout: float = 30.0
    cookie_threshold: int = 30
    half_open_limit: int = 1000
    # manual tunnels persist their sequence number reservations here (RFC 4106
    # forbids GCM with static keys unless nonces never repeat across restarts)
    state_dir: str = "/var/lib/tunsec"


# --------------------------------------------------------------------------
# Validating a section against its keys
# --------------------------------------------------------------------------


class SectionReader:
    """Reads one section's keys with value parsers and reports what is wrong.

    Every key asked for with :meth:`get`/:meth:`require` (and every section
    asked for with :meth:`subsection`) becomes "known"; :meth:`finish`
    reports the rest as unknown. A key whose value failed to parse lands in
    :attr:`failed`, so a validator can skip cross-checks that would only
    repeat that error.
    """

    def __init__(self, section: Section, issues: list[ConfigIssue]) -> None:
        self.section = section
        self.issues = issues
        self.failed: set[str] = set()
        self._known: set[str] = set()
        self._known_sections: set[str] = set()

    def where(self, key: str) -> tuple[str, int]:
        setting = self.section.settings.get(key)
        if setting is None:
            return self.section.file, self.section.line
        return setting.file, setting.line

    def error(self, key: str, message: str) -> None:
        file, line = self.where(key)
        self.issues.append(ConfigIssue(file, line, self.section.key_path(key), message))
        self.failed.add(key)

    def _parse(self, key: str, parse: Callable[[str], T]) -> T | None:
        self._known.add(key)
        setting = self.section.settings.get(key)
        if setting is None or setting.value == "":
            return None  # strongSwan: "key =" resets the key to its default
        try:
            return parse(setting.value)
        except BadValue as exc:
            self.error(key, str(exc))
            return None

    def get(self, key: str, parse: Callable[[str], T], default: T) -> T:
        value = self._parse(key, parse)
        return default if value is None else value

    def require(self, key: str, parse: Callable[[str], T]) -> T | None:
        value = self._parse(key, parse)
        if value is None and key not in self.failed:
            if key in self.section.settings:
                self.error(key, "required value is empty")
            elif not self.section.damaged:
                self.error(key, "required key is missing")
            self.failed.add(key)
        return value

    def subsection(self, name: str) -> Section | None:
        """A nested section this schema allows (e.g. ``children``); None if absent."""
        self._known_sections.add(name)
        return self.section.sections.get(name)

    def finish(self) -> None:
        """Report keys and subsections that nobody asked for."""
        known = sorted(self._known)
        for name, setting in self.section.settings.items():
            if name in self._known:
                continue
            hint = difflib.get_close_matches(name, known, n=1)
            suffix = f" (did you mean '{hint[0]}'?)" if hint else ""
            self.issues.append(
                ConfigIssue(setting.file, setting.line, self.section.key_path(name), "unknown key" + suffix)
            )
        for name, sub in self.section.sections.items():
            if name in self._known_sections:
                continue
            self.issues.append(ConfigIssue(sub.file, sub.line, sub.path, _section_not_allowed(name, known)))


def _section_not_allowed(name: str, known_keys: Sequence[str]) -> str:
    if name in known_keys:
        return f"'{name}' is a key: write '{name} = value', not a section"
    return "unknown section"


# --------------------------------------------------------------------------
# manual { <name> { } }
# --------------------------------------------------------------------------



# strongSwan's default is 32, but tunsec's loop threads share an SA's sequence
# numbers, and a window that narrow would count their reordering as replays
DEFAULT_REPLAY_WINDOW = 4096

@dataclass(frozen=True)
class ManualTunnel:
    """One manually keyed tunnel (RFC 4301 §4.5): a pair of SAs with fixed keys.

    Lifetimes and soft limits are 0 for "none". ``file``/``line`` locate the
    tunnel's section for messages and are ignored when comparing tunnels.
    """

    name: str
    local_addr: IPAddress
    remote_addr: IPAddress
    local_ts: tuple[Ts, ...]
    remote_ts: tuple[Ts, ...]
    spi_in: int
    spi_out: int
    key_in: Secret
    key_out: Secret
    local_port: int = 4500
    remote_port: int = 4500
    esp: Esp = Esp.AES128GCM16
    esn: bool = False
    replay_window: int = DEFAULT_REPLAY_WINDOW
    life_bytes: int = 0
    life_packets: int = 0
    life_time: int = 0
    rekey_bytes: int = 0
    rekey_packets: int = 0
    rekey_time: int = 0
    file: str = field(default="", compare=False)
    line: int = field(default=0, compare=False)


_parse_port = _int_range(1, 65535, "a port")


def _parse_replay_window(text: str) -> int:
    value = _uint(text, "a replay window size")
    if value != 0 and not 32 <= value <= 65536:
        raise BadValue(f"{value} is not 0 (off) or 32..65536")
    return value


def _check_key_length(r: SectionReader, key: str, secret: Secret | None, esp: Esp) -> None:
    if secret is None or "esp" in r.failed or len(secret) == esp.keymat_bytes:
        return
    want = esp.keymat_bytes
    r.error(key, f"must be {2 * want} hex digits ({want} bytes) for {esp}, got {len(secret)} bytes")


def _check_soft_below_hard(r: SectionReader, soft_key: str, soft: int, hard_key: str, hard: int) -> None:
    if soft and hard and soft >= hard and soft_key not in r.failed and hard_key not in r.failed:
        r.error(soft_key, f"must be below {hard_key} ({soft} >= {hard})")


_LIMITS: tuple[tuple[str, Callable[[str], int]], ...] = (
    ("life_bytes", parse_bytes),
    ("life_packets", _parse_packets),
    ("life_time", parse_duration),
    ("rekey_bytes", parse_bytes),
    ("rekey_packets", _parse_packets),
    ("rekey_time", parse_duration),
)


def _read_limits(r: SectionReader) -> dict[str, int]:
    limits = {key: r.get(key, parse, 0) for key, parse in _LIMITS}
    for what in ("bytes", "packets", "time"):
        soft, hard = f"rekey_{what}", f"life_{what}"
        _check_soft_below_hard(r, soft, limits[soft], hard, limits[hard])
    return limits


def _check_families(r: SectionReader, local: IPAddress | None, remote: IPAddress | None) -> None:
    if local and remote and local.version != remote.version:
        r.error("remote_addr", f"is IPv{remote.version} but local_addr is IPv{local.version}")


def _check_fast_selectors(r: SectionReader, local: tuple[Ts, ...] | None, remote: tuple[Ts, ...] | None) -> None:
    """The pairs must fit the fast path: none would admit nothing, and too many are never cut silently.

    ``dynamic`` (IKE only) is resolved per SA; the engine checks those then.
    """
    if local is None or remote is None or any(t.dynamic for t in (*local, *remote)):
        return
    try:
        fast_selectors(local, remote)
    except SelectorError as exc:
        r.error("remote_ts", str(exc))


def _manual_tunnel(section: Section, issues: list[ConfigIssue]) -> ManualTunnel | None:
    r = SectionReader(section, issues)
    local_addr = r.require("local_addr", _parse_address)
    remote_addr = r.require("remote_addr", _parse_address)
    local_ts = r.require("local_ts", parse_manual_ts_list)
    remote_ts = r.require("remote_ts", parse_manual_ts_list)
    spi_in = r.require("spi_in", _parse_spi)
    spi_out = r.require("spi_out", _parse_spi)
    esp = r.get("esp", _parse_esp, Esp.AES128GCM16)
    key_in = r.require("key_in", _parse_key)
    key_out = r.require("key_out", _parse_key)
    local_port = r.get("local_port", _parse_port, 4500)
    remote_port = r.get("remote_port", _parse_port, 4500)
    esn = r.get("esn", parse_bool, False)
    replay_window = r.get("replay_window", _parse_replay_window, DEFAULT_REPLAY_WINDOW)
    limits = _read_limits(r)
    r.finish()
    _check_families(r, local_addr, remote_addr)
    _check_key_length(r, "key_in", key_in, esp)
    _check_key_length(r, "key_out", key_out, esp)
    _check_fast_selectors(r, local_ts, remote_ts)
    if (
        r.failed
        or local_addr is None or remote_addr is None
        or local_ts is None or remote_ts is None
        or spi_in is None or spi_out is None
        or key_in is None or key_out is None
    ):  # fmt: skip
        return None
    return ManualTunnel(
        name=section.name,
        local_addr=local_addr,
        remote_addr=remote_addr,
        local_ts=local_ts,
        remote_ts=remote_ts,
        spi_in=spi_in,
        spi_out=spi_out,
        key_in=key_in,
        key_out=key_out,
        local_port=local_port,
        remote_port=remote_port,
        esp=esp,
        esn=esn,
        replay_window=replay_window,
        life_bytes=limits["life_bytes"],
        life_packets=limits["life_packets"],
        life_time=limits["life_time"],
        rekey_bytes=limits["rekey_bytes"],
        rekey_packets=limits["rekey_packets"],
        rekey_time=limits["rekey_time"],
        file=section.file,
        line=section.line,
    )


def _check_unique_spi_in(section: Section, issues: list[ConfigIssue]) -> None:
    """Inbound SAs are found by SPI alone, so two tunnels may not share one."""
    seen: dict[int, Setting] = {}
    for tunnel in section.sections.values():
        setting = tunnel.settings.get("spi_in")
        if setting is None:
            continue
        try:
            spi = _parse_spi(setting.value)
        except BadValue:
            continue  # already reported by the tunnel's own validation
        first = seen.setdefault(spi, setting)
        if first is not setting:
            issues.append(
                ConfigIssue(
                    setting.file,
                    setting.line,
                    tunnel.key_path("spi_in"),
                    f"SPI {spi:#x} is already the spi_in of another tunnel ({first.file}:{first.line})",
                )
            )


# --------------------------------------------------------------------------
# Top level: one handler per section
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """A validated configuration file.

    ``connections`` are the IKEv2 connections (:class:`tunsec.ike_config.Connection`:
    ``.ike`` is the engine's ``IkeConfig``, the rest is for the daemon);
    ``ike_secrets`` the ``secrets.ike*`` PSKs (already attached to the
    connections that use them); ``warnings`` are values accepted although
    tunsec behaves a little differently from strongSwan, for the daemon to log.
    """

    path: str
    tunsec: TunsecSettings = field(default_factory=TunsecSettings)
    manual: tuple[ManualTunnel, ...] = ()
    connections: tuple[Connection, ...] = ()
    ike_secrets: tuple[IkeSecret, ...] = ()
    warnings: tuple[ConfigIssue, ...] = ()

    def connection(self, name: str) -> Connection:
        for conn in self.connections:
            if conn.name == name:
                return conn
        raise KeyError(f"no connection {name!r}")


@dataclass
class _Parts:
    """What the section handlers have built so far; becomes a :class:`Config`."""

    tunsec: TunsecSettings = field(default_factory=TunsecSettings)
    manual: tuple[ManualTunnel, ...] = ()
    # connections, secrets and authorities depend on each other: collected
    # here and validated together by tunsec.ike_config once all are known.
    ike_sections: dict[str, Section] = field(default_factory=dict)


def _tunsec_section(section: Section, issues: list[ConfigIssue], parts: _Parts) -> None:
    r = SectionReader(section, issues)
    d = TunsecSettings()
    parts.tunsec = TunsecSettings(
        tun=r.get("tun", _parse_ifname, d.tun),
        mtu=r.get("mtu", _parse_mtu, d.mtu),
        outer_mtu=r.get("outer_mtu", _parse_mtu, d.outer_mtu),
        control_socket=r.get("control_socket", _parse_socket_path, d.control_socket),
        workers=r.get("workers", _parse_workers, d.workers),
        log_level=r.get("log_level", _parse_log_level, d.log_level),
        larval_timeout=r.get("larval_timeout", _parse_larval_timeout, d.larval_timeout),
        retransmit_timeout=r.get("retransmit_timeout", _parse_retransmit_timeout, d.retransmit_timeout),
        retransmit_base=r.get("retransmit_base", _parse_retransmit_base, d.retransmit_base),
        retransmit_tries=r.get("retransmit_tries", _parse_retransmit_tries, d.retransmit_tries),
        user=r.get("user", _parse_user, d.user),
        half_open_timeout=r.get("half_open_timeout", _parse_half_open_timeout, d.half_open_timeout),
        cookie_threshold=r.get("cookie_threshold", _parse_cookie_threshold, d.cookie_threshold),
        half_open_limit=r.get("half_open_limit", _parse_half_open_limit, d.half_open_limit),
        state_dir=r.get("state_dir", _parse_state_dir, d.state_dir),
    )
    r.finish()


def _manual_section(section: Section, issues: list[ConfigIssue], parts: _Parts) -> None:
    for name, setting in section.settings.items():
        issues.append(
            ConfigIssue(
                setting.file,
                setting.line,
                section.key_path(name),
                "manual takes one section per tunnel ('<name> { ... }'), not keys",
            )
        )
    tunnels = [_manual_tunnel(sub, issues) for sub in section.sections.values()]
    _check_unique_spi_in(section, issues)
    parts.manual = tuple(t for t in tunnels if t is not None)


def _ike_section(section: Section, issues: list[ConfigIssue], parts: _Parts) -> None:
    parts.ike_sections[section.name] = section


def _pools_section(section: Section, issues: list[ConfigIssue], parts: _Parts) -> None:
    issues.append(
        ConfigIssue(section.file, section.line, section.path, "section not supported (tunsec assigns no virtual IPs)")
    )


_SectionHandler = Callable[[Section, list[ConfigIssue], _Parts], None]

# The schema's top level: swanctl.conf's sections plus tunsec's own.
_TOP_LEVEL: dict[str, _SectionHandler] = {
    "tunsec": _tunsec_section,
    "manual": _manual_section,
    "connections": _ike_section,
    "secrets": _ike_section,
    "authorities": _ike_section,
    "pools": _pools_section,
}


def _check_top_level(root: Section, issues: list[ConfigIssue], parts: _Parts) -> None:
    known = sorted(_TOP_LEVEL)
    for name, setting in root.settings.items():
        message = (
            f"'{name}' is a section: write '{name} {{ ... }}'"
            if name in _TOP_LEVEL
            else f"unknown key at the top level (sections are: {', '.join(known)})"
        )
        issues.append(ConfigIssue(setting.file, setting.line, name, message))
    for name, section in root.sections.items():
        handler = _TOP_LEVEL.get(name)
        if handler is not None:
            handler(section, issues, parts)
            continue
        hint = difflib.get_close_matches(name, known, n=1)
        suffix = f" (did you mean '{hint[0]}'?)" if hint else f" (known: {', '.join(known)})"
        issues.append(ConfigIssue(section.file, section.line, name, "unknown section" + suffix))


def _ordered(issues: list[ConfigIssue], files: list[str]) -> list[ConfigIssue]:
    """File by file in reading order, then by line; exact duplicates dropped."""
    rank = {f: i for i, f in reversed(list(enumerate(files)))}
    unique = list(dict.fromkeys(issues))
    return sorted(unique, key=lambda i: (rank.get(i.file, -1), i.line))


def parse_config(text: str, path: str = "<string>") -> Config:
    """Parse and validate config text; raises :class:`ConfigError` listing every problem.

    ``path`` names the text in messages and anchors relative ``include`` patterns
    and the credential folders (x509/, x509ca/, private/...) of ``connections``.
    """
    issues: list[ConfigIssue] = []
    root, files = _parse_tree(text, path, issues)
    parts = _Parts()
    _check_top_level(root, issues, parts)
    connections: tuple[Connection, ...] = ()
    ike_secrets: tuple[IkeSecret, ...] = ()
    warnings: tuple[ConfigIssue, ...] = ()
    if parts.ike_sections:
        from tunsec.ike_config import read_ike  # here: ike_config imports this module

        ike = read_ike(parts.ike_sections, os.path.dirname(path), issues)
        connections, ike_secrets, warnings = ike.connections, ike.ike_secrets, ike.warnings
    if issues:
        raise ConfigError(_ordered(issues, files))
    return Config(
        path=path,
        tunsec=parts.tunsec,
        manual=parts.manual,
        connections=connections,
        ike_secrets=ike_secrets,
        warnings=tuple(_ordered(list(warnings), files)),
    )


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read, parse and validate a config file.

    An unreadable file is reported as a :class:`ConfigError` (chained from the
    ``OSError``) so callers handle one exception type.
    """
    name = os.fspath(path)
    try:
        text = _read_text(name)
    except _Unreadable as exc:
        raise ConfigError([exc.issue]) from exc.__cause__
    return parse_config(text, name)
