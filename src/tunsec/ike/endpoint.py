"""``IkeEndpoint``: routes datagrams to IKE SAs and creates responder SAs.

Still sans-I/O: the daemon feeds every IKE datagram (port 500, and port 4500
with the non-ESP marker stripped) to :meth:`IkeEndpoint.receive`, sends what
:meth:`IkeEndpoint.datagrams_to_send` returns from the given local port, calls
:meth:`IkeEndpoint.handle_timer` at :meth:`IkeEndpoint.get_timer`, and reads
``(IkeSa, Event)`` pairs from :meth:`IkeEndpoint.next_event`.

Denial-of-service protection (RFC 7296 §2.6): when more than
``cookie_threshold`` responder SAs are half-open, an IKE_SA_INIT request without
a valid COOKIE gets a stateless COOKIE response and no state at all. The cookie
is ``version | HMAC-SHA256(secret, Ni | IPi | SPIi)``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import struct
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import NamedTuple

from .config import IkeConfig
from .constants import ExchangeType, HeaderFlag, NotifyType
from .events import Address, Event, IkeSaUp
from .message import (
    DecodeError,
    Message,
    NoncePayload,
    NotifyPayload,
    decode_header,
    decode_message,
)
from .sa import IkeSa
from .state import Rng, SpiAllocator, now_utc, random_spi_allocator


class Datagram(NamedTuple):
    """Send ``data`` to ``addr`` from ``local_port`` (add the non-ESP marker on 4500)."""

    data: bytes
    addr: Address
    local_port: int


class IkeEndpoint:
    def __init__(
        self,
        configs: Sequence[IkeConfig],
        rng: Rng = os.urandom,
        *,
        spi_allocator: SpiAllocator | None = None,
        wall_clock: Callable[[], datetime] = now_utc,
        cookie_threshold: int = 10,
        config_selector: Callable[[Address], Sequence[IkeConfig]] | None = None,
    ) -> None:
        self._configs = {c.name: c for c in configs}
        self._rng = rng
        self._spi_allocator = spi_allocator or random_spi_allocator(rng)
        self._wall_clock = wall_clock
        self._cookie_threshold = cookie_threshold
        self._select = config_selector or self._default_selector
        self._sas: dict[bytes, IkeSa] = {}
        self._by_init: dict[tuple[bytes, Address], IkeSa] = {}
        self._events: deque[tuple[IkeSa, Event]] = deque()
        self._outbox: list[Datagram] = []
        self._cookie_version = 0
        self._cookie_secret = rng(32)

    # ------------------------------------------------------------------ API

    @property
    def sas(self) -> list[IkeSa]:
        return list(self._sas.values())

    def initiate(self, config_name: str, child_name: str | None, now: float) -> IkeSa:
        sa = self._new_sa(self._configs[config_name], True, now, None, None)
        sa.initiate(child_name)
        self._collect(now)
        return sa

    def receive(self, datagram: bytes, addr: Address, now: float, local_addr: Address | None = None) -> None:
        try:
            hdr = decode_header(datagram)
        except DecodeError:
            return
        if hdr.exchange == ExchangeType.IKE_SA_INIT and hdr.from_initiator and not hdr.is_response:
            self._on_init_request(datagram, addr, now, local_addr, hdr.spi_i)
        else:
            our_spi = hdr.spi_r if hdr.from_initiator else hdr.spi_i
            sa = self._sas.get(our_spi)
            if sa is not None:
                sa.receive(datagram, addr, now, local_addr)
        self._collect(now)

    def handle_timer(self, now: float) -> None:
        for sa in list(self._sas.values()):
            sa.handle_timer(now)
        self._collect(now)

    def get_timer(self) -> float | None:
        timers = [t for t in (sa.get_timer() for sa in self._sas.values()) if t is not None]
        return min(timers) if timers else None

    def datagrams_to_send(self, now: float) -> list[Datagram]:
        self._collect(now)
        out, self._outbox = self._outbox, []
        return out

    def next_event(self) -> tuple[IkeSa, Event] | None:
        return self._events.popleft() if self._events else None

    def rotate_cookie_secret(self) -> None:
        """Start a new cookie secret; cookies of the previous one stop working."""
        self._cookie_version = (self._cookie_version + 1) & 0xFFFFFFFF
        self._cookie_secret = self._rng(32)

    @property
    def half_open(self) -> int:
        return sum(1 for sa in self._sas.values() if sa.is_half_open)

    # ------------------------------------------------------------------ internals

    def _default_selector(self, addr: Address) -> list[IkeConfig]:
        """Connections whose remote address is the peer's, then those open to any (``%any``)."""
        exact = [c for c in self._configs.values() if c.remote_addr and _same_ip(c.remote_addr, addr[0])]
        anyone = [c for c in self._configs.values() if c.remote_addr in (None, "%any", "0.0.0.0", "::")]
        return exact + anyone

    def _new_sa(
        self,
        config: IkeConfig,
        initiator: bool,
        now: float,
        remote: Address | None,
        local: Address | None,
        candidates: Sequence[IkeConfig] = (),
    ) -> IkeSa:
        while True:  # SPIs are random; a clash is unlikely but possible
            sa = IkeSa(
                config,
                initiator,
                now,
                self._rng,
                spi_allocator=self._spi_allocator,
                remote_addr=remote,
                local_addr=local,
                wall_clock=self._wall_clock,
                candidates=candidates,
            )
            if sa.local_spi not in self._sas:
                self._sas[sa.local_spi] = sa
                return sa

    def _on_init_request(self, datagram: bytes, addr: Address, now: float, local: Address | None, spi_i: bytes) -> None:
        existing = self._by_init.get((spi_i, addr))
        if existing is not None and not existing.is_closed:
            existing.receive(datagram, addr, now, local)  # a retransmission: answered from storage
            return
        if self.half_open >= self._cookie_threshold and not self._cookie_ok(datagram, addr):
            self._send_cookie(datagram, addr, local)
            return
        candidates = list(self._select(addr))
        if not candidates:
            return
        sa = self._new_sa(candidates[0], False, now, addr, local, candidates)
        self._by_init[(spi_i, addr)] = sa
        sa.receive(datagram, addr, now, local)

    def _cookie_for(self, nonce: bytes, addr: Address, spi_i: bytes, version: int, secret: bytes) -> bytes:
        ip = ipaddress.ip_address(addr[0]).packed
        return struct.pack("!I", version) + hmac.new(secret, nonce + ip + spi_i, hashlib.sha256).digest()

    def _cookie_ok(self, datagram: bytes, addr: Address) -> bool:
        try:
            msg = decode_message(datagram)
        except DecodeError:
            return False
        nonce = next((p for p in msg.payloads if isinstance(p, NoncePayload)), None)
        first = msg.payloads[0] if msg.payloads else None
        if nonce is None or not isinstance(first, NotifyPayload) or first.type != NotifyType.COOKIE:
            return False
        expected = self._cookie_for(nonce.data, addr, msg.spi_i, self._cookie_version, self._cookie_secret)
        return hmac.compare_digest(first.data, expected)

    def _send_cookie(self, datagram: bytes, addr: Address, local: Address | None) -> None:
        try:
            msg = decode_message(datagram)
        except DecodeError:
            return
        nonce = next((p for p in msg.payloads if isinstance(p, NoncePayload)), None)
        if nonce is None:
            return
        cookie = self._cookie_for(nonce.data, addr, msg.spi_i, self._cookie_version, self._cookie_secret)
        reply = Message(
            msg.spi_i,
            bytes(8),
            ExchangeType.IKE_SA_INIT,
            int(HeaderFlag.RESPONSE),
            0,
            (NotifyPayload(NotifyType.COOKIE, cookie),),
        )
        self._outbox.append(Datagram(reply.encode(), addr, local[1] if local else 500))

    def _collect(self, now: float) -> None:
        """Move datagrams and events out of the SAs, then forget closed SAs."""
        pending = list(self._sas.items())
        while pending:
            spi, sa = pending.pop(0)
            port = sa.local_port
            for data, addr in sa.datagrams_to_send(now):
                self._outbox.append(Datagram(data, addr, port))
            while (event := sa.next_event()) is not None:
                self._events.append((sa, event))
                if isinstance(event, IkeSaUp) and event.initial_contact:
                    pending += [(old.local_spi, old) for old in self._initial_contact(sa, event)]
            successor = sa.take_successor()
            if successor is not None:  # a rekeyed IKE SA: route its new SPI to the new object
                self._sas[successor.local_spi] = successor
                pending.append((successor.local_spi, successor))
            if sa.is_closed and self._sas.get(spi) is sa:
                del self._sas[spi]
        for key, sa in list(self._by_init.items()):
            if sa.is_closed or not sa.is_half_open:
                del self._by_init[key]

    def _initial_contact(self, fresh: IkeSa, up: IkeSaUp) -> list[IkeSa]:
        """The peer rebooted: forget our older IKE SAs with the same identities (RFC 7296 §2.4)."""
        dropped = []
        for sa in list(self._sas.values()):
            if sa is not fresh and not sa.is_closed and sa.name == fresh.name and sa.peer_id == up.remote_id:
                sa.drop("replaced (peer sent INITIAL_CONTACT)")
                dropped.append(sa)
        return dropped


def _same_ip(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a == b
