"""Review revroot3 of h/fixrootfiles2's root-server rule (ctlpeer._not_roots_name): a proof that fails on main.

F4: root's CLI counts a server of root's (SO_PEERCRED uid 0) only "where nobody but root may have put the
name": the socket's directory root's alone (safefs.root_only) and the name a socket of root's, not a link.
But root_only accepts a sticky world-writable directory (/tmp, /dev/shm, /var/tmp): its rule is about renaming
and removing root's entries, and there any user may *add* the name while no tunsec runs.  A root-owned
socket is what a hard link of another root daemon's socket is (fs.protected_hardlinks=0; same file system:
/tmp on the root file system with a daemon's socket under /var/lib), so `control_socket = /tmp/tunsec.sock`
with `user = root` leads root's `tunsec reload` / `initiate` to another root daemon, as F3 of review
revrootfiles did through the service user's /run/tunsec.

Real parts: a listening socket of root's in a directory only root may change, a sticky 1777 directory of
root's, the hard link another user would make (made by root here: this host has fs.protected_hardlinks=1, the
inode and its owner are the same), a real connect and SO_PEERCRED."""

from __future__ import annotations

import os
import pwd
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from reachable import scratch_dir

from tunsec import ctlpeer

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a socket of root's, SO_PEERCRED uid 0)")
SERVICE = "tunsec"


@pytest.fixture
def base() -> Iterator[Path]:
    with scratch_dir("revroot3-ctl-") as d:
        yield d


def test_a_root_daemons_socket_linked_into_a_sticky_directory_is_not_served_as_root(base: Path) -> None:
    other = base / "other-daemon"   # another daemon of root's, in a directory only root may change
    other.mkdir(mode=0o755)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(other / "d.sock"))
    listener.listen(1)
    shared = base / "tmp"   # as /tmp: root's, 1777
    shared.mkdir()
    shared.chmod(0o1777)
    name = shared / "tunsec.sock"   # control_socket = /tmp/tunsec.sock, user = root; no tunsec runs now
    os.link(other / "d.sock", name)   # what another user may add there (a root-owned socket, not a link)
    target = ctlpeer.Target(str(name), frozenset({0, pwd.getpwnam(SERVICE).pw_uid}))
    with listener, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(str(name))
        why = ctlpeer.server_refusal(client, target)
    assert why is not None, (f"root's request would go to another root daemon's socket that any user may have "
                             f"linked into the sticky {shared}")
