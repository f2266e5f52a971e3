"""Text a peer chose (identities, EAP user names, groups), made safe to show.

A peer may put anything in such text before it is authenticated: newlines, but
also characters other readers take as a line break (U+2028, U+2029, NEL
U+0085), C1 controls (U+009B is a terminal's CSI) and bidi overrides (U+202E)
that reorder what follows.  Every character ``str.isprintable`` refuses (all
controls, format characters and separators but the plain space) is escaped or
replaced, wherever such text leaves the process: the log (tunsec.logs), the
status text (tunsec.status), an updown script's environment (tunsec.updown).
Escaped, a backslash is doubled too, so that what a reader sees is one text only.
"""

from __future__ import annotations

__all__ = ["escaped", "replaced"]


def escaped(text: str, backslash: bool = True) -> str:
    """``text`` with each non-printable character as its Python escape (``\\n``, ``\\x85``,
    ``\\u2028``): visible to a reader, never a line break or a terminal command.  A backslash is
    written ``\\\\``, so that no text reads as another: an identity holding the four characters
    ``\\x1b`` shows as ``\\\\x1b``, one holding an ESC as ``\\x1b``.  backslash=False leaves it
    as it is, for text escaped already (the CLI's pass over what the server answers)."""
    if text.isprintable() and (not backslash or "\\" not in text):   # the common case: no pass over each one
        return text
    # repr escapes exactly the characters isprintable refuses, and a backslash as two
    return "".join(c if c.isprintable() and (c != "\\" or not backslash) else repr(c)[1:-1] for c in text)


def replaced(text: str, by: str = "?") -> str:
    """``text`` with each non-printable character replaced by ``by``, as strongSwan's
    chunk_printable does for what it hands to scripts."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else by for c in text)
