"""Warnings libraries raise while they read what a peer sent: caught, never printed on stderr.

cryptography warns (a UserWarning) when it reads a name attribute whose length its type does not
allow (a countryName that is not 2 characters, a commonName empty or longer than 64), and reads it
all the same: a CA may have signed such a certificate, and anyone may send one (its subject names
it in the refusal before its chain is checked). It warns as it loads a certificate whose serial
number is not positive (a CryptographyDeprecationWarning), before anything of it is checked. Left
alone, the warnings module writes each one to stderr past logging (under systemd into the journal,
as it is), once per distinct text: lines any peer can cause, as often as it likes, and with
``-W error`` an exception out of the exchange.

So what reads a peer's certificate runs inside ``peer_input``: its warnings are caught there (each
of them, whatever the process's filters say), and the first of a call is logged in one line,
escaped and rate-limited.  Only there: a global filter would hide the warnings of everything else.
A ResourceWarning is not the peer's: the collector's finalizers raise it (an unclosed socket of
anything the process holds) wherever they happen to run, so it follows the process's filters as
outside (the CI run of 5df96e79 logged a test harness's unclosed sockets as a certificate's)."""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import warnings
from collections.abc import Iterator
from typing import Literal, TextIO, cast

from tunsec.loglimit import LogLimiter, suffix
from tunsec.printable import escaped

log = logging.getLogger(__name__)

MAX_WARNING_TEXT = 200   # a library's text, but about the peer's data: not all of it in the log
_log_limit = LogLimiter()
_Action = Literal['default', 'error', 'ignore', 'always', 'all', 'module', 'once']


@contextlib.contextmanager
def peer_input(what: str) -> Iterator[None]:
    """Reading ``what`` (a peer's certificate, ...) without a warning reaching stderr; usable as a
    decorator too.  Only the warnings of the thread that reads are taken (the engine reads on the
    event loop's thread): the warnings module's state is the process's, and a warning another thread
    raises meanwhile (a reload's thread loading the operator's certificates) is shown as warnings
    are shown there, not logged as the peer's.  (Its filters are "always" meanwhile: another thread's
    warning is shown, not raised or hidden, for that moment.)"""
    caught: list[warnings.WarningMessage] = []
    reader = threading.get_ident()
    with warnings.catch_warnings():
        shown = warnings.showwarning   # restored by catch_warnings

        def take(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:
            if threading.get_ident() == reader and not issubclass(category, ResourceWarning):
                caught.append(warnings.WarningMessage(message, category, filename, lineno, file, line))
            else:
                shown(message, category, filename, lineno, file, line)

        _take_all_but_resource_warnings()
        warnings.showwarning = take
        yield
    if caught and (held := _log_limit.admit()) is not None:
        first = caught[0]
        text = escaped(f"{first.category.__name__}: {first.message}")[:MAX_WARNING_TEXT]
        more = f" (and {len(caught) - 1} more)" if len(caught) > 1 else ""
        log.info("reading %s: a library warned: %s%s%s", what, text, more, suffix(held))


def _take_all_but_resource_warnings() -> None:
    """Every warning "always" (taken: whatever the filters say, -W error included), but a ResourceWarning
    as the process's filters say (placed ahead of it, in their order)."""
    kept: list[tuple[_Action, re.Pattern[str] | None, re.Pattern[str] | None, int]] = []
    for action, message, category, module, lineno in warnings.filters:
        if isinstance(category, type) and (issubclass(category, ResourceWarning)
                                           or issubclass(ResourceWarning, category)):
            kept.append((cast(_Action, action), message, module, lineno))
    warnings.simplefilter("always")
    # where none of them matches (the module's attribute, not in its stubs)
    warnings.simplefilter(cast(_Action, getattr(warnings, "defaultaction", "default")), ResourceWarning)
    for action, message, module, lineno in reversed(kept):   # each goes to the front
        warnings.filterwarnings(action, message.pattern if message else "", ResourceWarning,
                                module.pattern if module else "", lineno)
