"""Which IKE peers the exclude gate may route around the TUN (services/ike/exclude_gate.py): the peer of
the IKE SA a datagram belongs to, once that IKE SA is authenticated, or the gateway an authenticated
REDIRECT (in IKE_AUTH) named.  Asked only for a captured address without an exclude route: an IKE_SA_INIT
answer, a COOKIE, an INIT REDIRECT (no IKE SA, or a half-open one) are not trusted (review revfull F1)."""

from __future__ import annotations

from collections.abc import Container

from tunsec.ike.address_role import unmapped
from tunsec.ike.constants import IKE_HEADER_LEN, HeaderFlag
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.sa_redirect import target_authenticated
from tunsec.policy.selector import IPAddress, parse_ip


def our_spi(data: bytes) -> bytes | None:
    """Our SPI in the header of an IKE message we send: the initiator's if we are the original initiator."""
    if len(data) < IKE_HEADER_LEN:
        return None
    return data[0:8] if data[19] & HeaderFlag.INITIATOR else data[8:16]


def authenticated_peer(endpoint: IkeEndpoint, up: Container[bytes], ip: IPAddress, data: bytes) -> bool:
    """data (a message we send to ip) belongs to an IKE SA whose peer is at ip and is authenticated: the
    SA is up (``up``: the service's established SAs by our SPI, filled on IkeSaUp before its IKE_AUTH
    answer leaves), or its initiation follows a REDIRECT in IKE_AUTH."""
    spi = our_spi(data)
    sa = endpoint.sa_by_spi(spi) if spi is not None else None
    if sa is None or sa.is_closed:
        return False
    try:
        if unmapped(parse_ip(sa.remote_addr[0])) != unmapped(ip):
            return False
    except ValueError:
        return False
    return sa.local_spi in up or target_authenticated(sa)
