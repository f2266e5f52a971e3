"""What goes wrong in a config file: :class:`ConfigIssue` (file, line, key, message),
:class:`ConfigError` (all issues at once) and :class:`BadValue` (a value parser's complaint).

Key material never reaches a message: :class:`ConfigIssue` withholds long hex
runs whatever path led them there, and :func:`show_value` quotes values for
messages the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["HEX_RUN", "BadValue", "ConfigError", "ConfigIssue", "show_value"]

# Anything this long and hex-only may be key material (a 128-bit key is 32 digits).
HEX_RUN = re.compile(r"[0-9a-fA-F]{16,}")


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
            if HEX_RUN.search(text):
                object.__setattr__(self, name, HEX_RUN.sub("<hex withheld>", text))

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


def show_value(value: str) -> str:
    """Quote a value for an error message, withholding anything that looks like key material."""
    if HEX_RUN.search(value):
        return "<long hex value withheld>"
    if len(value) > 60:
        value = value[:57] + "..."
    return repr(value)
