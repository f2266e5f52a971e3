"""IKEv2 in the control process (the IKE service of the daemon).

``service`` holds IkeService and the explanation of how it drives the engine (sockets, SPIs,
make-before-break rekeys, ownership of Child SAs); each other module of this package holds
one concern of it, named in its docstring.  Where that concern's state stands apart, the
module is a class the service holds and hands what it needs (callables, not the service):
``sockets.IkeSockets`` (``service.sockets``), ``spis.SpiPool`` (``spi_pool``), ``barrier.Barrier``
(``barrier``), ``resolver.Resolver`` (``resolver``), ``vips.VirtualIps`` (``vips``); ``status``
is functions of what they report.  The others define IkeService's methods as functions of
the service (``self: IkeService``), bound into the class at the end of service.py."""

from tunsec.services.ike.install_requests import ALGS
from tunsec.services.ike.installs import INBOUND_LINGER, STANDBY_TIMEOUT
from tunsec.services.ike.invalid_spi import INVALID_SPI_INTERVAL
from tunsec.services.ike.resolver import RESOLVE_WAIT
from tunsec.services.ike.service import SHUTDOWN_WAIT, IkeService
from tunsec.services.ike.sockets import IkeSocketKey
from tunsec.services.ike.spis import HELD_BYTES_MAX, HELD_MAX, HELD_PER_SA, SPI_POOL
from tunsec.services.ike.state import ChildState, IPAddress, IPNetwork, Lineage, ts_networks

__all__ = [
    "ALGS", "HELD_BYTES_MAX", "HELD_MAX", "HELD_PER_SA", "INBOUND_LINGER", "INVALID_SPI_INTERVAL", "RESOLVE_WAIT",
    "SHUTDOWN_WAIT", "SPI_POOL", "STANDBY_TIMEOUT", "ChildState", "IPAddress", "IPNetwork", "IkeService",
    "IkeSocketKey", "Lineage", "ts_networks",
]
