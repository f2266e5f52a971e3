"""Whether a process opened a file (inotify IN_OPEN), asked without blocking: a test that root never opened
a file a user led it to.  An O_PATH descriptor is no open here (the kernel sends no IN_OPEN for it)."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

IN_OPEN = 0x20


class Inotify:
    """Who opened a file (IN_OPEN), without blocking."""

    def __init__(self, path: Path) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self.fd >= 0 and libc.inotify_add_watch(self.fd, bytes(path), IN_OPEN) >= 0, ctypes.get_errno()

    def opened(self) -> bool:
        try:
            return bool(os.read(self.fd, 4096))
        except BlockingIOError:
            return False

    def close(self) -> None:
        os.close(self.fd)
