"""strongSwan's settings syntax (swanctl.conf, strongswan.conf), file- and line-aware.

:func:`parse_settings` reads ``name { }`` sections, ``key = value``, ``#``
comments, quoted strings and ``include`` into a :class:`Section` tree that
remembers the file and line of every key and section. It knows nothing about
tunsec's keys: :mod:`tunsec.conf.config` gives the tree its meaning.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import stat
from dataclasses import dataclass, field

from tunsec import safefs
from tunsec.conf.errors import HEX_RUN, ConfigError, ConfigIssue, show_value
from tunsec.conf.filecheck import GLOB_MAGIC, FileCheck, folder_untrusted, glob_folders, kind_of

__all__ = [
    "MAX_INCLUDE_DEPTH",
    "MAX_SECTION_DEPTH",
    "ReadRecord",
    "Refused",
    "Section",
    "Setting",
    "Unreadable",
    "ValueTail",
    "parse_settings",
    "parse_tree",
    "read_config_source",
    "read_config_text",
    "withhold_tails",
]

# Deep enough for any real swanctl.conf (connections.<c>.children.<c>.x is 4),
# shallow enough that the recursive parser can never hit Python's recursion limit.
MAX_SECTION_DEPTH = 32
MAX_INCLUDE_DEPTH = 16


@dataclass(frozen=True)
class ValueTail:
    """A bare value that ended at '}' with more statements after it on the '}''s line (strongSwan
    reads those on, review revcfg F1).  They may be the rest of a secret that holds a '}' (``secret =
    Tr0ub}dor = x``), so what is wrong with them, the key they are under or any of their text, is never
    echoed: :meth:`issue` reports it at this value's ``key`` and ``line`` instead."""

    file: str
    line: int
    key: str

    def issue(self, what: str = "an error") -> ConfigIssue:
        return ConfigIssue(self.file, self.line, self.key, (
            f"what follows the '}}' that ends this value on its line has {what} (not shown: it may be the "
            "rest of the value): quote a value that holds '}', or start the next statement on a new line"))


@dataclass
class Setting:
    """``name = value`` with where its (last, effective) value was written.  ``tail``: written after
    the '}' of that value on its line (its errors are that value's, see :class:`ValueTail`)."""

    name: str
    value: str
    file: str
    line: int
    tail: ValueTail | None = None


@dataclass
class Section:
    """A ``name { }`` block. Repeated blocks merge into the first one, as in strongSwan.

    ``file``/``line`` are those of the first block. ``damaged`` is set when a
    syntax error occurred directly inside, so validators can skip "missing key"
    complaints that would only repeat the syntax error.  ``tail``: opened after
    the '}' that ended that value on its line, so its name and all in it are not
    echoed (:class:`ValueTail`).
    """

    name: str
    path: str
    file: str
    line: int
    settings: dict[str, Setting] = field(default_factory=dict)
    sections: dict[str, Section] = field(default_factory=dict)
    damaged: bool = False
    tail: ValueTail | None = None

    def key_path(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def child(self, name: str, file: str, line: int, tail: ValueTail | None = None) -> Section:
        existing = self.sections.get(name)
        if existing is None:   # one that exists already was named elsewhere: its name is not a secret's
            existing = Section(name, self.key_path(name), file, line, tail=tail)
            self.sections[name] = existing
        return existing

    def set(self, name: str, value: str, file: str, line: int, tail: ValueTail | None = None) -> None:
        # strongSwan: a repeated key silently takes the later value.
        self.settings.pop(name, None)
        self.settings[name] = Setting(name, value, file, line, tail)


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
_SAFE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")


def _echo_name(name: str) -> str | None:
    """The name if it is fit to echo in an error: short and not key-like hex."""
    if _SAFE_NAME.fullmatch(name) and not HEX_RUN.search(name):
        return name
    return None


def _word_after_brace(cur: _Cursor) -> bool:
    """Whether the line goes on with more than braces and a comment after the '}' at cur."""
    rest = cur.text[cur.pos + 1 :].split("\n", 1)[0].split("#", 1)[0]
    return bool(rest.replace("}", "").strip())


class _SettingsParser:
    """Recursive-descent parser over strongSwan's settings grammar.

    Unlike strongSwan it does not stop at the first syntax error: it reports
    the error, skips the rest of the offending line (keeping braces balanced)
    and carries on, so one run finds every mistake.
    """

    def __init__(self, issues: list[ConfigIssue], check: FileCheck | None, record: ReadRecord) -> None:
        self.issues = issues
        self.files: list[str] = []
        self.check = check   # who may change what is read (filecheck.py); None: nothing checked
        self.record = record
        # the latest value that ended at '}' with more on that line: (file, the '}''s line, the tail)
        self.brace: tuple[str, int, ValueTail] | None = None
        self.hiding: ValueTail | None = None   # the statement being read is that value's tail

    def error(self, file: str, line: int, key: str, message: str) -> None:
        if self.hiding is not None:   # neither the key nor the text of what may be a secret's rest
            self.issues.append(self.hiding.issue())
            return
        self.issues.append(ConfigIssue(file, line, key, message))

    def _tail_at(self, cur: _Cursor, section: Section) -> ValueTail | None:
        """The value whose tail a statement at cur in section is: the section's, or one whose '}'
        ended on this line."""
        if section.tail is not None:
            return section.tail
        if self.brace is not None and self.brace[:2] == (cur.file, cur.line):
            return self.brace[2]
        return None

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
        outer = self.hiding   # a nested section's statements leave the enclosing one's as it was
        try:
            while True:
                cur.skip_blanks()
                c = cur.peek()
                self.hiding = self._tail_at(cur, section) if c else section.tail
                if c == "":
                    self._unclosed(cur, section, opened_at)
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
        finally:
            self.hiding = outer

    def _unclosed(self, cur: _Cursor, section: Section, opened_at: int | None) -> None:
        """The end of the file: an error if the section was opened (not the top level)."""
        if opened_at is not None:
            self.error(cur.file, opened_at, section.path, f"section '{section.name}' is never closed (missing '}}')")
            section.damaged = True

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
            value = self._value(cur, section, section.key_path(name), line)
            if value is not None:
                section.set(name, value, cur.file, line, self.hiding)
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
        child = parent.child(name, cur.file, line, self.hiding)
        self._body(cur, child, depth + 1, line, stack)

    def _value(self, cur: _Cursor, section: Section, key: str, line: int) -> str | None:
        """The value after '=' (of ``key``, on ``line``): parts separated by blanks, joined by one space.

        Like strongSwan, a bare value ends at '#', '}' or the end of the line;
        quoted parts keep their spaces. An empty value is returned as ''. After
        a '}' the line is read on, as strongSwan does (``a { x = 1 } b { y = 2 }``);
        but the statements there may be a secret's rest: their errors are this
        value's (:class:`ValueTail`).
        """
        parts: list[str] = []
        while True:
            cur.skip_spaces()
            c = cur.peek()
            if c == "}" and _word_after_brace(cur):
                # a value that is itself a tail keeps the first value's key: its own names the tail
                tail = self.hiding or ValueTail(cur.file, line, key)
                self.brace = (cur.file, cur.line, tail)
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
                scratch = Section("", section.path, cur.file, line, tail=self.hiding)
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
        pattern = self._anchored(cur.file, pattern)
        try:
            paths = sorted(glob.glob(pattern)) if GLOB_MAGIC.search(pattern) else [pattern]  # no match is fine
        except ValueError:  # NUL or unencodable characters in the pattern
            self.error(cur.file, line, "include", f"invalid file pattern {show_value(pattern)}")
            return
        for path in paths:
            self._include_file(path, section, cur.file, line, depth, stack)
        if self.check is not None and GLOB_MAGIC.search(pattern):
            self._check_folders(pattern)

    def _check_folders(self, pattern: str) -> None:
        """The folders a glob looks in, even empty: a file another user adds there later would be included
        by the next reload (filecheck.py).  The first refused one is refused as a file would be."""
        assert self.check is not None
        for folder in glob_folders(pattern):
            err = folder_untrusted(folder, self.check.owners)
            if err is not None:
                self.record.refused.append(Refused(folder, err, self.check.owners, pattern=pattern))
                return

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
    def _anchored(including: str, pattern: str) -> str:
        """Relative patterns are relative to the including file, as in strongSwan."""
        if not os.path.isabs(pattern):
            return os.path.join(glob.escape(os.path.dirname(including)), pattern)
        return pattern

    def _include_file(
        self,
        path: str,
        section: Section,
        from_file: str,
        line: int,
        depth: int,
        stack: tuple[str, ...],
    ) -> None:
        if self.record.refused:   # nothing of this configuration is acted on: no include of a refused one read
            return
        try:
            try:
                text = read_config_text(path, regular_only=True, check=self.check)
            except Refused as exc:   # its user = (the refusal's hint) only; never acted on
                self.record.refused.append(exc)
                text = exc.text
            if self.check is None:
                self.record.unchecked.append(path)
            real = os.path.realpath(path)
        except Unreadable as exc:
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


class Unreadable(Exception):
    """A file that cannot serve as config text; ``issue`` says why."""

    def __init__(self, issue: ConfigIssue) -> None:
        super().__init__(str(issue))
        self.issue = issue


class Refused(Exception):
    """root_check: root (or the service user at its reload: ``owners`` its uid) may not act on the file
    ``path`` (``why``, ``fix``: safefs.Untrusted), or on what an include glob (``pattern``) finds in the folder
    ``path``.  ``text``: what the file holds if it is a regular file (read without following a link or
    blocking), for the refusal's hint (its ``tunsec { user }``) alone."""

    def __init__(self, path: str, err: safefs.Untrusted, owners: tuple[int, ...] = (), pattern: str = "") -> None:
        super().__init__(f"{path}: {err.why}")
        self.path, self.why, self.fix, self.owners, self.pattern = path, err.why, err.fix, owners, pattern
        self.text = ""
        if not pattern:
            with contextlib.suppress(OSError, UnicodeDecodeError, ValueError):
                self.text = safefs.read_regular(path, safefs.MAX_CONFIG).decode("utf-8-sig")


@dataclass
class ReadRecord:
    """How the files of a configuration were read: those refused (root_check), those read without the check."""

    refused: list[Refused] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)


def read_config_text(path: str, *, regular_only: bool = False, check: FileCheck | None = None) -> str:
    """A config file's text, or :class:`Unreadable` (chained to any ``OSError``).

    Included files must be regular: a glob that picks up a FIFO or a device
    would hang or never end. The main file may be a pipe (``-c <(...)``).
    check (filecheck.FileCheck: as root, or the service user at its reload): only a file nobody but root (and
    that user) may change, checked before it is opened and compared with what was opened (safefs.read_checked),
    else :class:`Refused`: tunsec acts on what it says.
    """
    return read_config_source(path, regular_only=regular_only, check=check)[0]


def read_config_source(path: str, *, regular_only: bool = False, check: FileCheck | None = None) -> tuple[str, str]:
    """read_config_text's text, and "" or what the file was when not a regular file ("a pipe": read once)."""
    if check is not None:
        return _read_checked(path, regular_only, check)
    try:
        if regular_only and not stat.S_ISREG(os.stat(path).st_mode):
            raise Unreadable(ConfigIssue(path, 0, "", "not a regular file"))
        with open(path, "rb") as f:
            kind = kind_of(f.fileno())
            data = f.read()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise Unreadable(ConfigIssue(path, 0, "", f"cannot read: {reason}")) from exc
    except ValueError as exc:  # NUL or unencodable characters in the name
        raise Unreadable(ConfigIssue(path, 0, "", "invalid file name")) from exc
    return _decode(path, data), kind


def _read_checked(path: str, regular_only: bool, check: FileCheck) -> tuple[str, str]:
    try:
        data, kind = check.read(path)
    except safefs.Untrusted as err:
        if check.owners and not err.fix:   # the service user cannot read it: not a question of who may change it
            raise Unreadable(ConfigIssue(path, 0, "", f"cannot read: {err.error or err.why}")) from None
        raise Refused(path, err, check.owners) from None
    except ValueError as exc:  # NUL or unencodable characters in the name
        raise Unreadable(ConfigIssue(path, 0, "", "invalid file name")) from exc
    if regular_only and kind:
        raise Unreadable(ConfigIssue(path, 0, "", "not a regular file"))
    return _decode(path, data), kind


def _decode(path: str, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise Unreadable(ConfigIssue(path, line, "", "not valid UTF-8")) from None


def parse_tree(text: str, path: str, issues: list[ConfigIssue], *, check: FileCheck | None = None,
               record: ReadRecord | None = None) -> tuple[Section, list[str]]:
    """The tree and the files read (``path`` first, then includes in reading order); errors go to ``issues``.
    Includes are read as read_config_text does with check, the folders globs look in checked too; record says
    which were refused or unchecked."""
    root = Section("", "", path, 0)
    parser = _SettingsParser(issues, check, record if record is not None else ReadRecord())
    stack = (os.path.realpath(path),) if os.path.exists(path) else ()
    parser.parse_text(text, path, root, 0, stack)
    return root, parser.files


def withhold_tails(root: Section, issues: list[ConfigIssue], what: str = "an error") -> list[ConfigIssue]:
    """``issues`` with each one about a value's tail (a key or section written after the '}' that
    ended a value on its line, or in such a section) replaced by that value's :meth:`ValueTail.issue`:
    a validator names keys and quotes values, which there may be a secret's rest (review revcfg F1).
    Also one keyed elsewhere whose message names a tail's key or section, by its path or its name alone
    (``EAP user 'bob' is the user 'Bob' of secrets.eap-x``, ``overlaps pool p``): that name is the rest
    too (review revlast2 F4)."""
    tails = _Tails()
    todo = [root]
    while todo:
        section = todo.pop()
        if section.tail is not None:
            tails.add(section.path, section.name, section.tail)
        for n, s in section.settings.items():
            if s.tail is not None:
                tails.add(section.key_path(n), n, s.tail)
        todo.extend(section.sections.values())
    if not tails.paths:
        return issues
    named = tails.names_pattern()
    return [_withheld(issue, tails, named, what) for issue in issues]


@dataclass
class _Tails:
    """The keys and sections written in values' tails: by path, and by their own name."""

    paths: dict[str, ValueTail] = field(default_factory=dict)
    names: dict[str, ValueTail] = field(default_factory=dict)

    def add(self, path: str, name: str, tail: ValueTail) -> None:
        self.paths[path] = tail
        self.names.setdefault(name, tail)

    def names_pattern(self) -> re.Pattern[str]:
        """A name as a word of its own: not part of a longer name (a '.' of a path around it is not:
        ``secrets.eap-x`` names ``eap-x``).  Longest first, so that the match says which one it is."""
        words = "|".join(re.escape(n) for n in sorted(self.names, key=len, reverse=True))
        return re.compile(rf"(?<![A-Za-z0-9_-])(?:{words})(?![A-Za-z0-9_-])")


def _withheld(issue: ConfigIssue, tails: _Tails, named: re.Pattern[str], what: str) -> ConfigIssue:
    """The issue, or its value's if its key is a tail's path or under one (names hold no '.' that
    matters here: a prefix that is not a tail's path matches nothing), or its message names a tail's
    key or section (a name that is also another's, e.g. ``addrs``, only withholds more)."""
    key = issue.key
    while key:
        tail = tails.paths.get(key)
        if tail is not None:
            return tail.issue(what)
        key = key.rpartition(".")[0]
    if (word := named.search(issue.message)) is not None:
        return tails.names[word.group()].issue(what)
    return issue


def parse_settings(text: str, path: str = "<string>", issues: list[ConfigIssue] | None = None) -> Section:
    """Parse strongSwan settings syntax into a tree (the root has ``path == ''``).

    Syntax errors are appended to ``issues`` when it is given (and the partial
    tree is returned); without it they are raised as one :class:`ConfigError`.
    Includes are resolved relative to ``path``'s directory.
    """
    collected: list[ConfigIssue] = [] if issues is None else issues
    before = len(collected)
    root, _files = parse_tree(text, path, collected)
    if issues is None and len(collected) > before:
        raise ConfigError(collected)
    return root
