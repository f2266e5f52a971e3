"""Reading one section against its keys: :class:`SectionReader`.

A section's validator asks the reader for each key it knows, with a value
parser from :mod:`tunsec.conf.values`; whatever nobody asked for is reported
as unknown by :meth:`SectionReader.finish`, with a "did you mean" hint. Every
problem is a :class:`~tunsec.conf.errors.ConfigIssue` naming file, line and key.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Sequence
from typing import TypeVar

from tunsec.conf.errors import BadValue, ConfigIssue
from tunsec.conf.syntax import Section
from tunsec.policy.selector import SelectorError, Ts, fast_selectors

__all__ = ["SectionReader", "accept_only", "check_fast_selectors"]

T = TypeVar("T")


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


def refuse_keys(section: Section, issues: list[ConfigIssue], message: str) -> None:
    """One issue per key in ``section``, which takes only subsections (``message`` says which)."""
    for name, setting in section.settings.items():
        issues.append(ConfigIssue(setting.file, setting.line, section.key_path(name), message))


def _section_not_allowed(name: str, known_keys: Sequence[str]) -> str:
    if name in known_keys:
        return f"'{name}' is a key: write '{name} = value', not a section"
    return "unknown section"


def accept_only(r: SectionReader, key: str, parse: Callable[[str], T], allowed: Collection[T], why: str) -> None:
    """A key tunsec accepts only with the value(s) that describe what it does anyway."""
    value = r.get(key, parse, None)
    if value is not None and value not in allowed:
        r.error(key, why)


def check_fast_selectors(r: SectionReader, local: tuple[Ts, ...] | None, remote: tuple[Ts, ...] | None) -> None:
    """The pairs must fit the fast path: none would admit nothing, and too many are never cut silently.

    ``dynamic`` (IKE only) is resolved per SA; the engine checks those then.
    """
    if local is None or remote is None or any(t.dynamic for t in (*local, *remote)):
        return
    try:
        fast_selectors(local, remote)
    except SelectorError as exc:
        r.error("remote_ts", str(exc))
