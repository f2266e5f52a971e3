"""Text a peer chose (identities, EAP user names, groups), made safe to show.

A peer may put anything in such text before it is authenticated: newlines, but
also characters other readers take as a line break (U+2028, U+2029, NEL
U+0085), C1 controls (U+009B is a terminal's CSI) and bidi overrides (U+202E)
that reorder what follows.  Every character ``str.isprintable`` refuses (all
controls, format characters and separators but the plain space) is escaped or
replaced, wherever such text leaves the process: the log (tunsec.logs), the
status text (tunsec.status), an updown script's environment (tunsec.updown).
"""

from __future__ import annotations

__all__ = ["escaped", "replaced"]


def escaped(text: str) -> str:
    """``text`` with each non-printable character as its Python escape (``\\n``, ``\\x85``,
    ``\\u2028``): visible to a reader, never a line break or a terminal command."""
    if text.isprintable():   # the common case: no pass over each character
        return text
    # repr escapes exactly the characters isprintable refuses
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def replaced(text: str, by: str = "?") -> str:
    """``text`` with each non-printable character replaced by ``by``, as strongSwan's
    chunk_printable does for what it hands to scripts."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else by for c in text)
