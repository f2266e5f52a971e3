"""Which IKE peers the exclude gate may route around the TUN (services/ike/exclude_gate.py): the peer of
the IKE SA a datagram belongs to, once that IKE SA is authenticated, or the gateway an authenticated
REDIRECT (in IKE_AUTH) named.  Asked only for a captured address without an exclude route: an IKE_SA_INIT
answer, a COOKIE, an INIT REDIRECT (no IKE SA, or a half-open one) are not trusted (review revfull F1).

Only an address the peer has proven is trusted, not one it merely sent from (an authenticated peer holds
the keys and may send from any source; review revfull3 F2): while a MOBIKE update's return routability
check is under way only the checked address (``esp_remote``, where ESP still goes), the new one once the
check succeeded; a peer without MOBIKE only at the address it authenticated from (IkeSaUp's): a NAT float
is a request from that address and no more, so IKE there leaves by the uplink's interface and gets no
exclude route.  Nor does the gate answer it there (Trust.UNPROVEN: dropped, counted): its ESP would follow the
TUN's routes while its DPD succeeded by the uplink, and it would never reconnect; unanswered, its DPD fails
and it connects again from the new address, which it then proves (review revfull4 F2)."""

from __future__ import annotations

import enum
from collections.abc import Container, Iterable, Mapping

from tunsec.ike.address_role import unmapped
from tunsec.ike.constants import IKE_HEADER_LEN, HeaderFlag
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.sa import IkeSa
from tunsec.ike.sa_redirect import target_authenticated
from tunsec.policy.selector import IPAddress, parse_ip
from tunsec.services.ike.record import IkeUpRecord


def our_spi(data: bytes) -> bytes | None:
    """Our SPI in the header of an IKE message we send: the initiator's if we are the original initiator."""
    if len(data) < IKE_HEADER_LEN:
        return None
    return data[0:8] if data[19] & HeaderFlag.INITIATOR else data[8:16]


class Trust(enum.Enum):
    """What the gate may do with IKE to an address: true only for PROVEN (an exclude route)."""

    NONE = "none"           # no authenticated IKE SA's proven peer: by the uplink's interface
    PROVEN = "proven"       # the authenticated peer's proven address: an exclude route
    UNPROVEN = "unproven"   # an up IKE SA without MOBIKE, to where it floated: not answered there

    def __bool__(self) -> bool:
        return self is Trust.PROVEN


def authenticated_peer(endpoint: IkeEndpoint, up: Container[bytes] | Mapping[bytes, IkeUpRecord], ip: IPAddress,
                       data: bytes) -> Trust:
    """data (a message we send to ip) belongs to an IKE SA whose peer is at ip and is authenticated: the
    SA is up (``up``: the service's established SAs by our SPI, filled on IkeSaUp before its IKE_AUTH
    answer leaves), or its initiation follows a REDIRECT in IKE_AUTH; and ip is an address the peer proved
    (the module's doc).  ``up`` a mapping (the service's ike_up): its IkeSaUp says where a peer without
    MOBIKE authenticated from; a set of SPIs (tests) does not."""
    spi = our_spi(data)
    sa = endpoint.sa_by_spi(spi) if spi is not None else None
    if sa is None or sa.is_closed:
        return Trust.NONE
    if target_authenticated(sa):
        return _trust(_same(sa.remote_addr[0], ip))
    if sa.local_spi not in up:
        return Trust.NONE
    # esp_remote: remote_addr, unless a MOBIKE update's return routability check is under way
    if not _same(sa.esp_remote[0], ip):
        return Trust.NONE
    record = up.get(sa.local_spi) if isinstance(up, Mapping) else None
    if record is None or sa.mobike or _same(record.ev.remote_addr[0], ip):
        return Trust.PROVEN
    return Trust.UNPROVEN   # a NAT float proves nothing


def kept_address(sa: IkeSa, up: Mapping[bytes, IkeUpRecord]) -> str | None:
    """The address of live IKE SA ``sa`` whose exclude route the sweep keeps: one the peer proved, as
    authenticated_peer trusts, or None.  A REDIRECT's target authenticated in IKE_AUTH: where it is.  An
    SA without an IkeSaUp record nothing (a half-open one: its address is the source of an IKE_SA_INIT
    anyone may forge, which would keep a departed client's route for good, review revlast2 F1; an IKE
    rekey's predecessor: the record went to its heir, which keeps it, R2).  With MOBIKE ``esp_remote``:
    during a return routability check the checked address ESP still goes to, not the new one, unproven
    (F3).  Without MOBIKE the address it authenticated from, not where it floated (which proves nothing:
    else it would keep a route another client proved there after that client left, review revlast)."""
    if target_authenticated(sa):
        return sa.remote_addr[0]
    record = up.get(sa.local_spi)
    if record is None:
        return None
    return sa.esp_remote[0] if sa.mobike else record.ev.remote_addr[0]


def kept_addresses(sas: Iterable[IkeSa], up: Mapping[bytes, IkeUpRecord]) -> list[IPAddress]:
    """The addresses the live IKE SAs of ``sas`` keep an exclude route for (the sweep's pass)."""
    return [parse_ip(a) for sa in sas if not sa.is_closed and (a := kept_address(sa, up)) is not None]


def _trust(proven: bool) -> Trust:
    return Trust.PROVEN if proven else Trust.NONE


def _same(addr: str, ip: IPAddress) -> bool:
    try:
        return unmapped(parse_ip(addr)) == unmapped(ip)
    except ValueError:
        return False
