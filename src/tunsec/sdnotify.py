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


def notify(*assignments: str) -> bool:
    """Send e.g. notify("READY=1", "STATUS=..."); True if the message went out."""
    addr = _address()
    if addr is None:
        return False
    message = "\n".join(assignments).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(message)
    except OSError as err:
        # the service still runs; systemd will time the start out and say so
        log.warning("cannot notify systemd on %s: %s", os.environ.get("NOTIFY_SOCKET"), err.strerror or err)
        return False
    return True
