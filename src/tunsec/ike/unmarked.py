"""An IKE_SA_INIT response goes back the way its request came: with the non-ESP marker or without.

Where IKE may come marked or not -- port 4500 through the worker, a custom IKE port from a peer port
other than 500 -- an IKE_SA_INIT response goes back the way its request came (review revcsmall F1).
A strongSwan peer marks when neither port is 500 and its receiver takes IKE there only so: one
that starts from its port 4500 (a reauthentication keeps the old IKE SA's ports) marks, whatever
port a NAT shows us, and drops an unmarked answer as ESP; one with ``remote_port = 4500`` sends from
its port 500 unmarked (a NAT may show us another port) and takes only an unmarked answer there, then
floats to 4500.  No rule of the port or the message alone serves both.

The decision is the request's, made as it goes into the engine (``IkeEndpoint.receive``'s
``unmarked``) and carried with its answer (``Datagram.unmarked``) to the socket: nothing is
remembered of the peer, so neither a spoofed unmarked request from its address and port nor a
flood of them changes how the answer to its own request goes, however long that answer waits
(behind the SPI pool's refill: barrier.py; review revnatt).  Only IKE_SA_INIT responses go back
unmarked, and only those to the request that came so: anyone can send a datagram with a peer's
address, and an unauthenticated header must not make a marking peer's later messages unmarked
(it drops them as ESP)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .constants import HeaderFlag, is_ike_sa_init
from .events import Address

if TYPE_CHECKING:
    from .endpoint import Datagram


def unmark_answers(outbox: list[Datagram], start: int, request: bytes, addr: Address) -> None:
    """The datagrams queued in ``outbox`` from ``start`` on that answer the IKE_SA_INIT ``request``
    from ``addr`` (an IKE_SA_INIT response to it, with its SPI: a new one, or the one stored for a
    copy of it) leave without the marker."""
    spi = request[:8]
    for i in range(start, len(outbox)):
        d = outbox[i]
        if d.addr == addr and d.data[:8] == spi and is_ike_sa_init(d.data, HeaderFlag.RESPONSE):
            outbox[i] = d._replace(unmarked=True)
