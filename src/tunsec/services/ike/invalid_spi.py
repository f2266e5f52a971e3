"""ESP for an SPI the worker does not know: an INVALID_SPI notify to the peer, rate-limited."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from tunsec.dataplane.pipe import Endpoint
from tunsec.loglimit import LogLimiter, suffix

if TYPE_CHECKING:
    from tunsec.services.ike.service import IkeService

log = logging.getLogger("tunsec.ike")

INVALID_SPI_INTERVAL = 1.0   # seconds between two INVALID_SPI notifies in one IKE SA
# anyone's ESP causes the line (once a second per IKE SA): not a line per IKE SA per second
INVALID_SPI_LOG = LogLimiter()


def invalid_spi(self: IkeService, spi: int, remote: Endpoint) -> bool:
    """ESP from ``remote`` for an SPI the worker does not know (a hint, rate-limited there).

    Tell the peer with an INVALID_SPI notify, but only inside an IKE SA we have
    established with that address (never a new exchange or state for anyone
    else: the ESP packet proves nothing) and at most once per INVALID_SPI_INTERVAL
    per IKE SA (IkeEndpoint.invalid_spi: found by address, not by a pass over every
    IKE SA, as anyone's ESP causes this).  True if a notify was queued.
    """
    sa = self.endpoint.invalid_spi(spi, remote.addr, remote.port, time.monotonic(), INVALID_SPI_INTERVAL)
    if sa is None:
        return False
    if (held := INVALID_SPI_LOG.admit()) is not None:
        log.info("%s: ESP for unknown SPI %08x from %s: telling the peer (INVALID_SPI)%s", sa.name, spi,
                 remote.addr, suffix(held))
    self._pump()
    return True
