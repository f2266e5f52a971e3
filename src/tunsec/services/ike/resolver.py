"""Looking up a gateway a REDIRECT (RFC 5685) named by FQDN."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from typing import TYPE_CHECKING

from tunsec.ike.sa import IkeSa

if TYPE_CHECKING:
    from tunsec.services.ike.service import IkeService

log = logging.getLogger("tunsec.ike")

RESOLVE_WAIT = 5.0  # seconds a lookup of a gateway named by FQDN (RFC 5685 REDIRECT) may take


async def _resolve_gateway(self: IkeService, sa: IkeSa, gateway: str) -> None:
    """Look up the gateway a REDIRECT named by FQDN with the system resolver, in the loop's
    executor (getaddrinfo blocks) and bounded in time; the engine gives up by itself too."""
    family = ipaddress.ip_address(sa.remote_addr[0]).version
    try:
        infos = await asyncio.wait_for(
            asyncio.get_running_loop().getaddrinfo(gateway, None, type=socket.SOCK_DGRAM), RESOLVE_WAIT)
    except (OSError, UnicodeError, TimeoutError) as exc:
        log.error("%s: cannot resolve gateway %s we were redirected to: %s", sa.name, gateway,
                  str(exc) or "no answer in time")  # an exception is true even with no message
        infos = []
    addrs = list(dict.fromkeys(str(info[4][0]) for info in infos))
    # addresses of the family we reached the redirecting gateway in first (a route for it exists)
    addrs.sort(key=lambda a: ipaddress.ip_address(a.split("%")[0]).version != family)
    sa.gateway_resolved(gateway, addrs, time.monotonic())
    self._pump()
