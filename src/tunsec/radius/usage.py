"""A session's usage in RADIUS accounting (:mod:`tunsec.radius.accounting`): a Child SA by its two
SAs in the worker, the counters of its SAs, and a DUMP's SAs indexed as a Child SA names them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tunsec.dataplane.pipe import Direction, Endpoint, SaInfo


@dataclass(frozen=True)
class ChildRef:
    """A Child SA's two SAs in the worker: the inbound one by its SPI, the outbound by SPI and peer."""

    spi_in: int
    spi_out: int
    remote: Endpoint

    @property
    def key(self) -> tuple[int, int]:
        """The same Child SA after it moved (MOBIKE migrates its SAs, counters and all, to a new peer)."""
        return self.spi_in, self.spi_out


@dataclass
class Usage:
    octets_in: int = 0
    octets_out: int = 0
    packets_in: int = 0
    packets_out: int = 0

    def add(self, other: Usage) -> None:
        self.octets_in += other.octets_in
        self.octets_out += other.octets_out
        self.packets_in += other.packets_in
        self.packets_out += other.packets_out

    def raise_to(self, other: Usage) -> None:
        """Each counter to the other's if that is higher: one SA's counters only grow, and a DUMP
        that missed it (deleted meanwhile, being migrated) says 0."""
        self.octets_in = max(self.octets_in, other.octets_in)
        self.octets_out = max(self.octets_out, other.octets_out)
        self.packets_in = max(self.packets_in, other.packets_in)
        self.packets_out = max(self.packets_out, other.packets_out)


class SaIndex:
    """One DUMP's SAs, found as a Child SA names them; ``epoch``: the worker it came from (see
    Accounting.worker_restarted)."""

    def __init__(self, sas: Sequence[SaInfo], epoch: int = 0) -> None:
        self.epoch = epoch
        self._in = {s.spi: s for s in sas if s.direction is Direction.IN}
        self._out = {(s.spi, s.remote): s for s in sas if s.direction is Direction.OUT}

    def usage(self, ref: ChildRef) -> Usage:
        u = Usage()
        if (sa := self._in.get(ref.spi_in)) is not None:
            u.octets_in, u.packets_in = sa.counters.get("bytes", 0), sa.counters.get("packets", 0)
        if (sa := self._out.get((ref.spi_out, ref.remote))) is not None:
            u.octets_out, u.packets_out = sa.counters.get("bytes", 0), sa.counters.get("packets", 0)
        return u


def usage_of(direction: Direction, octets: int, packets: int) -> Usage:
    """One SA's counters as a Child SA's usage: an inbound SA's are what the client sent."""
    return Usage(octets, 0, packets, 0) if direction is Direction.IN else Usage(0, octets, 0, packets)
