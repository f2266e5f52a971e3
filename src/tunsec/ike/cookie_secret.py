"""The COOKIE of RFC 7296 §2.6, made and checked for ``endpoint.py`` (when one is demanded:
``cookie_demand.py``).

The cookie is ``version | HMAC-SHA256(secret, Ni | IPi | port | SPIi)``; the secret is replaced
every ``cookie_lifetime`` seconds and the previous one is still accepted for one more period
(initiators in flight keep working); after a whole period without a request, only the new one.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import struct

from .events import Address
from .init_request import find_nonce
from .message import Message
from .state import Rng


class CookieSecret:
    """The current secret and its version, the previous one, and when the next rotation is due."""

    def __init__(self, rng: Rng) -> None:
        self._rng = rng
        self.version = 0
        self._secret = rng(32)
        self._previous: bytes | None = None
        self._rotate_at: float | None = None

    def rotate(self) -> None:
        """Start a new secret; cookies of the previous one work until the next rotation."""
        self.version = (self.version + 1) & 0xFFFFFFFF
        self._previous = self._secret
        self._secret = self._rng(32)

    def rotate_if_due(self, now: float, lifetime: float) -> None:
        if self._rotate_at is None:
            self._rotate_at = now + lifetime
        elif now >= self._rotate_at:
            stale = now >= self._rotate_at + lifetime  # idle for a whole period: nothing is in flight
            self.rotate()
            if stale:
                self._previous = None
            self._rotate_at = now + lifetime

    def cookie(self, msg: Message, addr: Address) -> bytes:
        """The cookie the request ``msg`` from ``addr`` must bring back, of the current secret."""
        return _cookie_for(msg, find_nonce(msg), addr, self.version, self._secret)

    def verifies(self, msg: Message, cookie: bytes, addr: Address) -> bool:
        """Whether ``cookie`` (the COOKIE notify's data) is one we gave ``msg``'s sender at ``addr``."""
        version = struct.unpack_from("!I", cookie)[0] if len(cookie) >= 4 else None
        if version == self.version:
            secret: bytes | None = self._secret
        elif version == (self.version - 1) & 0xFFFFFFFF:
            secret = self._previous
        else:
            secret = None
        if secret is None or version is None:
            return False
        return hmac.compare_digest(cookie, _cookie_for(msg, find_nonce(msg), addr, version, secret))


def _cookie_for(msg: Message, nonce: bytes, addr: Address, version: int, secret: bytes) -> bytes:
    ip = ipaddress.ip_address(addr[0]).packed
    bound = nonce + ip + struct.pack("!H", addr[1]) + msg.spi_i
    return struct.pack("!I", version) + hmac.new(secret, bound, hashlib.sha256).digest()
