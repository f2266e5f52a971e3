"""systemd's readiness protocol (sd_notify(3)): one datagram to $NOTIFY_SOCKET.

With `Type=notify` systemd starts the units ordered after tunsec only once it
says READY=1, and shows STATUS= in `systemctl status`. Outside systemd (no
NOTIFY_SOCKET) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("tunsec")


def _address() -> str | None:
    """$NOTIFY_SOCKET as a socket address: a path, or '@name' in the abstract namespace."""
    addr = os.environ.get("NOTIFY_SOCKET", "")
    if addr.startswith("@"):
        return "\0" + addr[1:]
    if addr.startswith("/"):
        return addr
    return None     # unset, or a transport this sender does not speak (vsock:)


_sock: socket.socket | None = None
_sock_addr: str | None = None


def connect() -> None:
    """Connect to $NOTIFY_SOCKET now, while the process may still reach it.

    The daemon calls this before it drops to its user: systemd's socket is
    writable by anyone, but one made by a supervisor (or a test) may be root's
    alone, and a connected datagram socket keeps working after the drop."""
    global _sock, _sock_addr
    addr = _address()
    if addr is None or (_sock is not None and _sock_addr == addr):
        return
    if _sock is not None:
        _sock.close()
        _sock = None
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        s.connect(addr)
    except OSError as err:
        s.close()
        log.warning("cannot notify systemd on %s: %s", os.environ.get("NOTIFY_SOCKET"), err.strerror or err)
        return
    _sock, _sock_addr = s, addr


def notify(*assignments: str) -> bool:
    """Send e.g. notify("READY=1", "STATUS=..."); True if the message went out."""
    if _address() is None:
        return False
    connect()
    if _sock is None:
        return False
    try:
        _sock.send("\n".join(assignments).encode())
    except OSError as err:
        # the service still runs; systemd will time the start out and say so
        log.warning("cannot notify systemd on %s: %s", os.environ.get("NOTIFY_SOCKET"), err.strerror or err)
        return False
    return True
