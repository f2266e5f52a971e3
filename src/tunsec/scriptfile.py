"""Programs tunsec executes (updown scripts): only files nobody but root and the user who runs them may change.

An updown script runs as the user of the control process: root with ``tunsec { user = root }``, else the
service user.  Whoever may change the script, its ``#!`` interpreter or a directory on the way to either
runs code as that user -- as root, with ``user = root``.  So a program must pass safefs.trusted with the
runner as the only owner besides root (as root: root alone): the file and every directory and symbolic
link on its path root's or the runner's, writable by their owner alone (no ACL granting write).  A service
user that may change its own script gains nothing: the script runs as that user anyway.

It is checked when the configuration is loaded (start, reload: an error naming the path, its owner and
mode, and the fix) and again before each run.  What the kernel executes is the file that check found,
through an O_PATH descriptor compared with it (/proc/self/fd/N): a binary itself, or for a #! script its
interpreter (checked the same way), which is handed the script's path as the kernel would hand it (so $0
stays the script's path: scripts find their files next to it).  That path is one only root and the runner
may change (the check), and they gain nothing by swapping the script before the interpreter opens it.  The
kernel's own checks on the script, which executing the interpreter skips, are made first: the runner may
execute it and its mount is not noexec (``chmod -x`` disables a script).  A NUL in the #! line is refused.  An
interpreter that is ``/usr/bin/env NAME`` searches the fixed PATH updown scripts get (system directories).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tunsec import privilege
from tunsec.safefs import Checked, Untrusted, trusted, who

_HEAD = 256            # what the kernel reads of a file for its #! line (BINPRM_BUF_SIZE)
_DEPTH = 4             # interpreters of interpreters the kernel follows (a few)
_READ = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def owners_for(uid: int) -> tuple[int, ...]:
    """Who besides root may change a program uid runs: nobody when it is root, else uid itself."""
    return () if uid == 0 else (uid,)


def check(path: str, uid: int) -> Checked:
    """The program path as uid would run it, when nobody but root and uid may change it or its
    interpreter(s); Untrusted (why, fix) otherwise."""
    return _check(path, owners_for(uid), _DEPTH)


def _check(path: str, owners: tuple[int, ...], depth: int) -> Checked:
    checked = trusted(path, owners)
    line = shebang(checked, owners[0] if owners else 0)
    if line is not None:
        interp = line[0]
        if depth <= 0:
            raise Untrusted(f"{path}: too many levels of #! interpreters")
        if not interp.startswith("/"):
            # the kernel resolves it against the working directory: whatever is there at that moment
            raise Untrusted(f"{checked.path}: its #! interpreter {interp!r} is not an absolute path",
                            f"write the interpreter's absolute path in the first line of {checked.path}")
        try:
            _check(interp, owners, depth - 1)
        except Untrusted as err:
            raise Untrusted(f"{checked.path}'s #! interpreter: {err.why}", err.fix) from None
    return checked


def shebang(checked: Checked, uid: int | None = None) -> tuple[str, str | None] | None:
    """The interpreter a checked file's #! line names and its one optional argument, as the kernel splits
    the line; None: no #! (or a file this user may only execute: then no interpreter can read it either)."""
    # through an O_PATH descriptor of the file checked (_open: no driver's open, compared with the check),
    # opened again for reading through /proc: root reads that file, whatever the runner renames meanwhile on
    # its way (a directory swapped for a link to /dev would otherwise have root open /dev/watchdog)
    ref = _open(checked)
    try:
        who_reads = privilege.target_of(uid) if checked.by_owner and uid is not None and uid != os.geteuid() else None
        with privilege.acting_as(who_reads):
            fd = os.open(f"/proc/self/fd/{ref}", _READ)
    except PermissionError:
        return None
    except OSError as err:
        raise Untrusted(f"{checked.path} cannot be opened as checked: {err.strerror or err}") from None
    finally:
        os.close(ref)
    try:
        head = os.read(fd, _HEAD)
    except OSError as err:
        raise Untrusted(f"{checked.path} cannot be read: {err.strerror or err}") from None
    finally:
        os.close(fd)
    if not head.startswith(b"#!"):
        return None
    if b"\n" not in head:
        raise Untrusted(f"{checked.path}: its #! line is longer than {_HEAD - 1} bytes")
    line = head[2:].split(b"\n", 1)[0]
    if b"\0" in line:   # no file name holds one: the kernel would run something other than the line says
        raise Untrusted(f"{checked.path}: its #! line holds a NUL byte")
    words = line.strip(b" \t").split(None, 1)
    if not words:
        raise Untrusted(f"{checked.path}: its #! line names no interpreter")
    return os.fsdecode(words[0]), os.fsdecode(words[1].lstrip(b" \t")) if len(words) > 1 else None


@dataclass(frozen=True)
class Launch:
    """How to run a checked program: execute /proc/self/fd/``fd`` (passed on, closed by the caller after the
    exec) with ``argv``."""

    fd: int
    argv: tuple[str, ...]


def launch(argv: Sequence[str], uid: int) -> Launch:
    """argv[0] checked for uid now (check), and how to run it.  A binary runs through a descriptor of the file
    checked (open_checked).  A #! script runs as the kernel would run it -- its interpreter, the line's
    argument, the script's path, argv[1:] -- but with the interpreter through its own checked descriptor: the
    script keeps its path as its name ($0: scripts find their files next to it), and only root and uid may
    change that path (the check), who gain nothing by swapping the file before the interpreter opens it."""
    checked = check(argv[0], uid)
    line = shebang(checked)
    if line is None:   # the kernel checks the execute permission and the mount when it executes the file
        return Launch(_open(checked), tuple(argv))
    _may_execute(checked, uid)
    interp, arg = line
    return Launch(open_checked(interp, uid), (interp, *([arg] if arg is not None else []), *argv))


def _may_execute(checked: Checked, uid: int) -> None:
    """The kernel's checks on a #! script itself, which executing its interpreter skips: the runner (this
    process's effective ids) may execute it, and its file system is not mounted noexec.  So ``chmod -x``
    still disables a script, and a noexec /tmp or volume still runs nothing, as when the kernel runs it."""
    try:
        noexec = os.statvfs(checked.path).f_flag & os.ST_NOEXEC
        allowed = os.access(checked.path, os.X_OK, effective_ids=True)
        mode = stat.S_IMODE(os.stat(checked.path).st_mode)
    except OSError as err:
        raise Untrusted(f"{checked.path} cannot be looked at: {err.strerror or err}") from None
    if noexec:
        raise Untrusted(f"{checked.path} is on a file system mounted noexec: nothing on it is executed")
    if not allowed:
        raise Untrusted(f"{checked.path} is not executable by {runner(uid)} (mode {mode:04o}): chmod +x it to run it")


def open_checked(path: str, uid: int) -> int:
    """A descriptor (O_PATH, close-on-exec) of the program path, checked for uid now and compared once
    open with what the check found: execute it as /proc/self/fd/N with the descriptor passed on."""
    return _open(check(path, uid))


def _open(checked: Checked) -> int:
    try:
        fd = os.open(checked.path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        raise Untrusted(f"{checked.path} cannot be opened as checked: {err.strerror or err} (replaced or removed "
                        "since?)") from None
    try:
        if not _same(os.fstat(fd), checked):
            raise Untrusted(f"{checked.path} was replaced between the check and the run")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _same(st: os.stat_result, checked: Checked) -> bool:
    return stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) == checked.ident


def runner(uid: int) -> str:
    return "root" if uid == 0 else who(uid)


def refusal(what: str, err: Untrusted, uid: int) -> str:
    """The error for a program uid would run that someone else may change (what: its name and path): why,
    and the fix."""
    allowed = "root" if uid == 0 else f"root and {runner(uid)}"
    fix = f"as root, {err.fix}" if err.fix else "make it a regular file of root's that stays in place"
    return (f"refusing {what}: {err.why}; tunsec runs it as {runner(uid)}, so nobody but {allowed} may "
            f"change it, its interpreter or a directory on their path: {fix}")


def refusals(programs: Iterable[tuple[str, str]], uid: int) -> list[str]:
    """The refusal of each (what, path) of programs uid would run, once per path (what names it)."""
    out: list[str] = []
    seen: set[str] = set()
    for what, path in programs:
        if path in seen:
            continue
        seen.add(path)
        try:
            check(path, uid)
        except Untrusted as err:
            out.append(refusal(what, err, uid))
    return out
