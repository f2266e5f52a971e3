"""Which control socket the CLI (tunsec status, reload, initiate...) talks to, and to whom, when root runs it.

A client of the control socket acts on nothing the server says: the answer is read with a deadline and a
size limit and shown escaped (cli.py), so a server in the socket's place can lie in what it shows and make
the command wait its timeout, no more.  As root two things still matter:
- where the path comes from: read from a configuration file another user may change, it may name any
  socket root may connect to (another daemon's, root's alone), and root would write its request there.  So
  as root the file (and what it includes) is read with load_config's root check (safefs.read_trusted): a
  file refused names why, the fix, and ``--socket``;
- who serves it: a user who may make the name first (a socket path in a directory others may write, no
  tunsec running) would answer root's commands with whatever status it likes.  As root the request goes
  only to a server running as root or as the service user (tunsec { user }: the running tunsec is one of
  those), asked of the kernel (SO_PEERCRED: who listened), before the request is sent.  Root as the server
  counts only when nobody but root may have put the name there -- the directory root's alone, the name a
  socket of root's, not a link: where the service user may change the directory (the shipped unit's
  /run/tunsec is its own), it would link the name to any other root daemon's socket, whose uid 0 would pass
  (review revrootfiles F3).  There only the service user may serve.
Not as root the file decides nothing that user could not do itself (as for tunsec up).
"""

from __future__ import annotations

import os
import socket
import stat
import struct
from collections.abc import Collection
from dataclasses import dataclass

from tunsec.runtime import default_control_socket
from tunsec.safefs import root_only, who


@dataclass(frozen=True)
class Target:
    """The control socket's path; servers: who may serve it (None: anyone, not run as root)."""

    path: str
    servers: frozenset[int] | None


class NotFollowed(Exception):
    """As root: the configuration file that names the socket may be changed by another user (the message says
    what and how to fix it)."""


def target(config: str | None, explicit: str | None) -> Target:
    """Where to connect: explicit (--socket), else the socket config names, else the default; found even when
    the file has errors elsewhere (`tunsec status` still works, a reload of a broken file reaches the daemon,
    which refuses it and says why).  As root the file is read with the root check: NotFollowed when it is
    refused, unless --socket names the socket (then the file's user is not taken either: the default's)."""
    from tunsec.conf.filecheck import FileCheck
    from tunsec.conf.syntax import ReadRecord, Refused, Unreadable, parse_tree, read_config_text
    from tunsec.conf.tunsec_section import TunsecSettings, read_tunsec_section, service_uid

    as_root = os.geteuid() == 0
    check = FileCheck() if as_root else None
    settings = TunsecSettings()
    if config:
        record = ReadRecord()
        try:
            text = read_config_text(config, check=check)
        except Unreadable:
            text = ""
        except Refused as err:
            if os.path.lexists(config):
                record.refused.append(err)
            text = ""   # else no such file: nothing read from it, the default as before
        root, _ = parse_tree(text, config, [], check=check, record=record)
        if record.refused and not explicit:
            named = [(f"{r.path} (include {r.pattern})" if r.pattern else r.path, r) for r in record.refused]
            raise NotFollowed("\n".join(_refusal(name, r.why, r.fix) for name, r in named))
        section = root.sections.get("tunsec")
        if section is not None and not record.refused:   # its user is no more to be trusted than its socket
            settings = read_tunsec_section(section, [])
    path = explicit or settings.control_socket or default_control_socket()
    if not as_root:
        return Target(path, None)
    uid = service_uid(settings.user)
    return Target(path, frozenset({0} if uid is None else {0, uid}))


def _refusal(path: str, why: str, fix: str) -> str:
    todo = f"as root, {fix}, or" if fix else "make it a regular file of root's that stays in place, or"
    return (f"not reading the control socket's path from {path}: {why}; root would connect to whatever socket it "
            f"names: {todo} name the socket with --socket PATH")


def server_refusal(sock: socket.socket, t: Target) -> str | None:
    """Why the connected sock's server may not have root's request (not root nor the service user), or None."""
    if t.servers is None:
        return None
    _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                          struct.calcsize("3i")))
    not_root = _not_roots_name(t.path)
    servers = t.servers - {0} if not_root else t.servers
    if uid in servers:
        return None
    if uid == 0 and not_root:
        others = f"; it may be served only by {_names(servers)}" if servers else ""
        return (f"{t.path} is served by root, but {not_root}: another user may have put another root daemon's "
                f"socket at that name{others}; not sending it root's request; put the control socket in a directory "
                "only root may change (tunsec { control_socket }, or tunsec { user } other than root, whose "
                "daemon then serves it), or name the socket with --socket PATH")
    return (f"{t.path} is served by a process of {who(uid)}, not by {_names(t.servers)}: not sending it root's "
            "request; name the configuration it runs with (-c FILE, whose tunsec { user } it is), "
            "or run the command as that user")


def _not_roots_name(path: str) -> str | None:
    """Why another user may have put what path names there (then a server of root's proves nothing), or None."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        dmode = os.lstat(directory).st_mode
    except OSError:
        dmode = 0o777
    if not root_only(directory) or dmode & 0o022:
        return f"a user other than root may change {directory} or a directory above it"
    try:
        st = os.lstat(path)
    except OSError as err:
        return f"{path} cannot be looked at: {err.strerror or err}"
    if stat.S_ISLNK(st.st_mode):
        return f"{path} is a symbolic link"
    if not stat.S_ISSOCK(st.st_mode) or st.st_uid != 0 or st.st_nlink != 1:
        return f"{path} is not a socket of root's"
    return None


def _names(uids: Collection[int]) -> str:
    names = [*(["root"] if 0 in uids else []), *(f"{who(u)} (tunsec {{ user }})" for u in sorted(uids) if u != 0)]
    return " or ".join(names) or "nobody"
