"""ESP for an SPI the worker does not know: an INVALID_SPI notify to the peer, rate-limited."""

from __future__ import annotations

import ipaddress
import logging
import time
from typing import TYPE_CHECKING

from tunsec.dataplane.pipe import Endpoint
from tunsec.ike.sa import IkeSa, State

if TYPE_CHECKING:
    from tunsec.services.ike.service import IkeService

log = logging.getLogger("tunsec.ike")

INVALID_SPI_INTERVAL = 1.0   # seconds between two INVALID_SPI notifies in one IKE SA


def _same_addr(sa: IkeSa, remote: Endpoint) -> bool:
    """The IKE SA's peer is at ``remote``'s address (ports differ behind NATs)."""
    try:
        return ipaddress.ip_address(sa.remote_addr[0]) == remote.addr
    except ValueError:
        return False


def invalid_spi(self: IkeService, spi: int, remote: Endpoint) -> bool:
    """ESP from ``remote`` for an SPI the worker does not know (a hint, rate-limited there).

    Tell the peer with an INVALID_SPI notify, but only inside an IKE SA we have
    established with that address (never a new exchange or state for anyone
    else: the ESP packet proves nothing) and at most once per INVALID_SPI_INTERVAL
    per IKE SA.  True if a notify was queued.
    """
    now = time.monotonic()
    sas = [sa for sa in self.endpoint.sas if sa.state is State.ESTABLISHED and _same_addr(sa, remote)]
    live = {sa.local_spi for sa in self.endpoint.sas}
    for key in [k for k in self._invalid_spi_sent if k not in live]:
        del self._invalid_spi_sent[key]   # bounded by the IKE SAs that exist
    if not sas:
        return False
    sa = sas[0]
    last = self._invalid_spi_sent.get(sa.local_spi)
    if last is not None and now - last < INVALID_SPI_INTERVAL:
        return False
    if not sa.send_invalid_spi(spi):
        return False
    self._invalid_spi_sent[sa.local_spi] = now
    log.info("%s: ESP for unknown SPI %08x from %s: telling the peer (INVALID_SPI)", sa.name, spi, remote.addr)
    self._pump()
    return True
