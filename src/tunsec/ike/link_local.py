"""IKE_SA_INIT requests from link-local IPv6 sources (fe80::/10) are refused: a counted drop with a
rate-limited line, before anything is kept (review revipv6 F1).

A link-local address means something only with its zone (the interface), and only the port-500
socket knows it (``fe80::1%eth0``): the worker's pipe carries 16 address bytes, so the same peer on
port 4500 is ``fe80::1`` and its IKE_AUTH looks like another address's, and the kernel refuses to
send IKE or ESP to an unscoped fe80:: address (sad.c sets no scope).  Such a peer would retransmit
until it gave up; refusing its IKE_SA_INIT says why at once.  Configured addresses cannot be scoped
(conf/values.py), and redirects and MOBIKE already refuse link-local targets (address_role.py)."""

from __future__ import annotations

import ipaddress
import logging

from tunsec.loglimit import LogLimiter, suffix

from .events import Address
from .stats import EndpointStats

log = logging.getLogger(__name__)

_LINK_LOCAL = ipaddress.IPv6Network("fe80::/10")


def is_link_local(ip: str) -> bool:
    """``ip`` (as a socket names it: ``fe80::1%eth0``, or as the worker's path: ``fe80::1``) is an
    IPv6 link-local address; anything unparsable is not (the engine's other checks see it).  A text
    without a colon is no IPv6 address: not parsed (every client's IKE_SA_INIT asks, ~5k instructions)."""
    if ":" not in ip:
        return False
    try:
        addr = ipaddress.ip_address(ip.partition("%")[0])
    except ValueError:
        return False
    return addr.version == 6 and addr in _LINK_LOCAL


def refuse_link_local(addr: Address, stats: EndpointStats, log_limit: LogLimiter) -> bool:
    """True (counted in ``stats.link_local``, logged at most a burst a period of ``log_limit``: a
    link full of such peers must not flood the log) when an IKE_SA_INIT request from ``addr`` is to be
    dropped for its link-local source."""
    if not is_link_local(addr[0]):
        return False
    stats.link_local += 1
    if (held := log_limit.admit()) is not None:
        log.warning("IKE_SA_INIT from link-local %s[%d] dropped%s: link-local IKE peers are not supported "
                    "(use a global or unique local address)", addr[0], addr[1], suffix(held))
    return True
