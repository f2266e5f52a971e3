"""MOBIKE (RFC 4555): an IKE SA and its Child SAs move with a peer that changed its address.

Negotiation (§3.3): with ``mobike = yes`` (``IkeConfig.mobike``, strongSwan's default) both
sides send N(MOBIKE_SUPPORTED) in IKE_AUTH; ``st.mobike`` once both did. From then on the IKE
SA no longer follows the source address of just any authenticated request (RFC 7296 §2.23's
implicit update, which ``sa.py`` applies to SAs without MOBIKE): as in strongSwan ("with
MOBIKE, we do no implicit updates"), only an INFORMATIONAL request with N(UPDATE_SA_ADDRESSES)
moves it (§3.5). Everything here happens after the request was decrypted and its integrity
verified, and acts on the one IKE SA whose keys did that and on its own Child SAs.

The responder (``respond``, a gateway whose client moved), in §3.5's order:

* N(NO_NATS_ALLOWED) (§3.9) carries the addresses and ports the sender put in the IP header;
  if they are not what arrived, the answer is N(UNEXPECTED_NAT_DETECTED) and nothing moves
  (``translated``; ike_auth.py checks the first IKE_AUTH request, which §3.9 has carry it
  too, the same way). §3.9 puts it in no other exchange: in IKE_SA_INIT it means nothing
  (the NAT_DETECTION hashes are checked there) and is ignored, as strongSwan does.
* NAT_DETECTION_SOURCE_IP / _DESTINATION_IP are checked against the request's addresses
  (``st.nat_peer``, ``st.nat_here``) and answered with ours. tunsec's dataplane carries ESP
  only in UDP (RFC 3948, ``encap = yes``), so a result of "no NAT" never switches to plain
  ESP; the result is logged and kept. UDP encapsulation stays on, which RFC 3948 permits
  without a NAT, and which is what a strongSwan peer with ``encap = yes`` does too.
* An address the connection does not accept (another family than the Child SAs, which
  cannot move across families without new SAs, not the configured ``remote_addrs``, or one
  this host routes into the TUN or to itself: its own, a pool's, inside a tunnel's remote_ts,
  address_role.refused_address) gets N(UNACCEPTABLE_ADDRESSES) and nothing moves.  A road
  warrior's update sent through its own tunnel from its virtual IP would otherwise pass the
  return routability check (it goes back through the tunnel) and loop its ESP through the TUN.
* N(UPDATE_SA_ADDRESSES): the IKE SA moves to the request's source (its response goes there).
* N(COOKIE2) is echoed in every answer, the refusals too (§3.7: 8 to 64 octets; another length
  is not echoed).

Return routability (§3.5, §5.2.1): strongSwan as a responder does no check, it moves the IKE
and Child SAs at once (ike_mobike.c, process_r). tunsec checks before it moves ESP: an
authenticated peer could otherwise point the Child SAs' traffic at a third party's address.
The Child SAs stay at the address they had (``st.esp_hold``; ``st.esp_remote`` is where they
send), and send from our address they had (``st.esp_hold_local``, ``st.esp_local``: the update may
have come in on another of ours) until our INFORMATIONAL with a fresh 16-octet COOKIE2, sent to the new address, comes
back with the same COOKIE2 (``ReturnRoutabilityTask``); then the IKE service MIGRATEs them,
and new Child SAs take that address for the peer's ``dynamic`` (``st.proven_addr``; until then
the old one, see child.remote_dynamic).
A mismatching COOKIE2 closes the IKE SA, as strongSwan does. No answer at all, to the check or
to any other request of ours while the new address is unproven (``go_back``), takes the IKE SA
back to the addresses the Child SAs stayed at, the peer's and ours (counted ``mobike_checks_failed``): the update may
have been a copy of the peer's, injected from a made-up source ahead of the genuine one (which is
then a retransmission, answered and moving nothing), so the peer need not be gone; the unanswered
request goes on there, and only if the peer does not answer there either is it unreachable (the
IKE SA goes). The check goes ahead of our queued requests (``jumps_queue``), so that none of them
is sent first to an address nobody proved. The cookie of a check goes only to the address under
check, and only the answer to a check still current proves anything (``ReturnRoutabilityTask``): an
update that moves the IKE SA again makes the check in flight stale. At most one check is
queued or in flight: one that finds the peer moved meanwhile starts one more, with a fresh
cookie, for the newest address. An IKE SA that replaces this one by a rekey while a check is
under way takes ``esp_hold`` and checks again.

The initiator (a client that moved, ``UpdateSaAddressesTask``): one update at a time.  A move
reported while one is out sends it again from the new address at once (sa.py update_addresses);
the peer moved to where the first copy it got came from and answers the others from storage, so
once answered one more update goes from the address then ours (RFC 4555 §3.5, review revlate5 F2).

ADDITIONAL_IP4/IP6_ADDRESS and NO_ADDITIONAL_ADDRESSES (§3.6) are accepted and ignored: tunsec
uses only the address a peer speaks from and keeps no list (no state for a peer to grow).
MOBIKE_SUPPORTED carries no address list from us either (optional, §3.4).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Sequence

from tunsec.loglimit import suffix
from tunsec.policy.pad import AddressMatch, address_match

from ..address_role import refused_address
from ..constants import NATT_PORT, ExchangeType, NotifyType
from ..events import Address
from ..message import DeletePayload, NotifyPayload, Payload
from ..peer_logs import Line
from ..state import IkeSaState, nat_hash
from . import informational
from .base import Outcome, Response, Task, find_all, find_notify, notify

log = logging.getLogger(__name__)
# Lines a peer may cause as fast as it likes are limited per peer (st.peer_logs, peer_logs.py): its
# refused requests (an address we do not accept, NO_NATS_ALLOWED translated: Line.MOBIKE_REFUSED) and
# the addresses it claims that never answer (MOBIKE_FAILED), a line each otherwise; its moves and their
# confirmations (MOBIKE_MOVE) and its NAT detection changing (MOBIKE_NAT): news, but an authenticated
# peer sets their pace (its round trip: thousands a second on a LAN), so the first of a burst pass at
# INFO, the rest at DEBUG, counted in the next INFO line (review revmobike F3)

COOKIE2_LEN = 16  # what we send (strongSwan's size)
COOKIE2_MIN, COOKIE2_MAX = 8, 64  # RFC 4555 §3.7

# the notifies that make an INFORMATIONAL request a MOBIKE one (strongSwan's task_manager_v2 list)
_MOBIKE_NOTIFIES = frozenset({
    NotifyType.ADDITIONAL_IP4_ADDRESS,
    NotifyType.ADDITIONAL_IP6_ADDRESS,
    NotifyType.NO_ADDITIONAL_ADDRESSES,
    NotifyType.UPDATE_SA_ADDRESSES,
    NotifyType.NO_NATS_ALLOWED,
    NotifyType.COOKIE2,
    NotifyType.NAT_DETECTION_SOURCE_IP,
    NotifyType.NAT_DETECTION_DESTINATION_IP,
})


# ---------------------------------------------------------------- negotiation in IKE_AUTH

def announce(st: IkeSaState) -> list[Payload]:
    """An initiator's N(MOBIKE_SUPPORTED) in its first IKE_AUTH request."""
    return [notify(NotifyType.MOBIKE_SUPPORTED)] if st.config.mobike else []


def accept(st: IkeSaState, payloads: Sequence[Payload]) -> None:
    """An initiator reads the responder's answer (the last IKE_AUTH response)."""
    st.mobike = st.config.mobike and find_notify(payloads, NotifyType.MOBIKE_SUPPORTED) is not None


def answer(st: IkeSaState, payloads: Sequence[Payload]) -> list[Payload]:
    """A responder's N(MOBIKE_SUPPORTED) if the initiator announced it and the connection
    (the one IKE_AUTH picked) allows it; ``payloads`` is the first IKE_AUTH request."""
    st.mobike = st.config.mobike and find_notify(payloads, NotifyType.MOBIKE_SUPPORTED) is not None
    return [notify(NotifyType.MOBIKE_SUPPORTED)] if st.mobike else []


# ---------------------------------------------------------------- the responder

def is_mobike_request(payloads: Sequence[Payload]) -> bool:
    """An INFORMATIONAL with MOBIKE notifies and no Delete (a DELETE goes to informational.py)."""
    if find_all(payloads, DeletePayload):
        return False
    return any(isinstance(p, NotifyPayload) and p.type in _MOBIKE_NOTIFIES for p in payloads)


def respond(st: IkeSaState, payloads: Sequence[Payload]) -> Response:
    if not st.mobike:
        # not negotiated: the notifies mean nothing here (§3.3); answer as any INFORMATIONAL
        return informational.respond(st, payloads)
    assert st.request_path is not None, "sa.py sets the request's addresses before dispatching"
    source, arrived_on = st.request_path
    dest = _destination(st, arrived_on)
    # §3.7: the responder MUST copy COOKIE2 into its answer, a refusal too: a client (tunsec's,
    # strongSwan's) that misses it closes its IKE SA instead of reading the refusal (revmobike F2)
    echo = _cookie2_echo(payloads)
    if translated(st, payloads):
        return Response([notify(NotifyType.UNEXPECTED_NAT_DETECTED), *echo])
    response = _nat_detection(st, payloads, source, dest)
    update = find_notify(payloads, NotifyType.UPDATE_SA_ADDRESSES) is not None
    followups: list[Task] = []
    if update:
        refusal = _unacceptable(st, source)
        if refusal:
            if (held := st.peer_logs.admit(Line.MOBIKE_REFUSED, st)) is not None:
                log.info("%s: MOBIKE: refusing to move to %s[%d]: %s%s", st.name, *source, refusal, suffix(held))
            return Response([notify(NotifyType.UNACCEPTABLE_ADDRESSES), *echo])
        followups = _update(st, source, arrived_on)
    return Response(response + echo, followups=followups)


def _cookie2_echo(payloads: Sequence[Payload]) -> list[Payload]:
    """The request's N(COOKIE2) to copy into the answer (§3.7: 8 to 64 octets; another length is not
    echoed), or nothing."""
    cookie2 = find_notify(payloads, NotifyType.COOKIE2)
    if cookie2 is not None and COOKIE2_MIN <= len(cookie2.data) <= COOKIE2_MAX:
        return [notify(NotifyType.COOKIE2, cookie2.data)]
    return []


def translated(st: IkeSaState, payloads: Sequence[Payload]) -> bool:
    """§3.9 for a request carrying N(NO_NATS_ALLOWED) (the first IKE_AUTH request, or a MOBIKE
    INFORMATIONAL): True if the addresses and ports in it are not the ones the request arrived
    with, so a NAT (or someone) changed them on the way. The answer is then
    N(UNEXPECTED_NAT_DETECTED), sent where the request came from; the notify's contents are used
    for nothing else (§3.9 allows logging them at most)."""
    assert st.request_path is not None, "sa.py sets the request's addresses before dispatching"
    source, arrived_on = st.request_path
    if _no_nats_allowed_holds(payloads, source, _destination(st, arrived_on)):
        return False
    if (held := st.peer_logs.admit(Line.MOBIKE_REFUSED, st)) is not None:
        log.info("%s: NO_NATS_ALLOWED, but the request from %s[%d] was translated on the way%s",
                 st.name, *source, suffix(held))
    return True


def _destination(st: IkeSaState, arrived_on: Address | None) -> Address:
    """Where a request arrived: the socket's address and port, our configured or learned
    address in place of a wildcard the socket was bound to."""
    if arrived_on is None:
        return (st.local_ip or "", st.local_port)
    if arrived_on[0] in ("0.0.0.0", "::") and st.local_ip:
        return (st.local_ip, arrived_on[1])
    return arrived_on


def _no_nats_allowed_holds(payloads: Sequence[Payload], source: Address, dest: Address) -> bool:
    """§3.9: NO_NATS_ALLOWED's data is src IP | dst IP | src port | dst port as the sender saw them."""
    n = find_notify(payloads, NotifyType.NO_NATS_ALLOWED)
    if n is None:
        return True
    try:
        seen = (ipaddress.ip_address(source[0]).packed + ipaddress.ip_address(dest[0]).packed
                + source[1].to_bytes(2, "big") + dest[1].to_bytes(2, "big"))
    except ValueError:
        return False  # we do not know where it arrived: cannot confirm
    return hmac.compare_digest(n.data, seen)


def _nat_detection(st: IkeSaState, payloads: Sequence[Payload], source: Address, dest: Address) -> list[Payload]:
    """Check the request's NAT_DETECTION_* and answer with ours (RFC 7296 §2.23)."""
    sources = [n.data for n in find_all(payloads, NotifyPayload) if n.type == NotifyType.NAT_DETECTION_SOURCE_IP]
    dests = [n.data for n in find_all(payloads, NotifyPayload) if n.type == NotifyType.NAT_DETECTION_DESTINATION_IP]
    if not sources and not dests:
        return []
    peer_hash = nat_hash(st.spi_i, st.spi_r, source)
    try:
        own_hash = nat_hash(st.spi_i, st.spi_r, dest)
    except ValueError:
        own_hash = st.rng(20)  # our address unknown: say "NAT" (we encapsulate in UDP anyway)
    nat_peer = bool(sources) and not any(hmac.compare_digest(h, peer_hash) for h in sources)
    nat_here = bool(dests) and not any(hmac.compare_digest(h, own_hash) for h in dests)
    # a change is news; the same again (a MOBIKE peer's every liveness check) only for debugging
    changed = (nat_peer, nat_here) != (st.nat_peer, st.nat_here)
    held = st.peer_logs.admit(Line.MOBIKE_NAT, st) if changed else None
    log.log(logging.INFO if held is not None else logging.DEBUG,
            "%s: MOBIKE: NAT detection: peer %sbehind a NAT, we %sbehind one (ESP stays in UDP)%s%s",
            st.name, "" if nat_peer else "not ", "" if nat_here else "not ", "" if changed else " (as before)",
            suffix(held or 0))
    st.nat_peer, st.nat_here = nat_peer, nat_here
    return [
        notify(NotifyType.NAT_DETECTION_SOURCE_IP, own_hash),
        notify(NotifyType.NAT_DETECTION_DESTINATION_IP, peer_hash),
    ]


def _unacceptable(st: IkeSaState, source: Address) -> str:
    """Why the connection does not accept the peer at ``source`` (empty if it does): another family
    than the Child SAs', outside ``remote_addrs``, or an address this host routes into the TUN or
    to itself (address_role.refused_address: the peer's ESP would loop through the TUN or go into
    another peer's tunnel)."""
    try:
        new = ipaddress.ip_address(source[0])
        old = ipaddress.ip_address(st.esp_remote[0])
    except ValueError:
        return "not an IP address"
    if new.version != old.version and st.children:
        return f"the Child SAs are IPv{old.version} (they cannot move to another address family)"
    if address_match(st.config.remote_addr, source[0]) is AddressMatch.NONE:
        return f"not the connection's remote address {st.config.remote_addr}"
    if source[0] in (st.remote_addr[0], st.esp_remote[0]):
        return ""   # where it is now, a NAT's new port: the connection took that IP (checked when it moved)
    # this host's own, a pool's, inside a tunnel: routed into the TUN (review revmobike F1)
    return refused_address(st, source[0], "its IKE and ESP", moving=True) or ""


def _update(st: IkeSaState, source: Address, arrived_on: Address | None) -> list[Task]:
    """Move the IKE SA now; hold the Child SAs at their address until the return routability check."""
    old, esp = st.remote_addr, st.esp_remote
    here = st.esp_hold_local or (st.local_addr, st.local_port)   # where the Child SAs send from
    st.remote_addr = source
    if arrived_on is not None:
        st.local_addr = arrived_on
        st.local_port = arrived_on[1]
    else:
        st.local_port = NATT_PORT  # port 500's socket does not say; after IKE_SA_INIT it is 4500
    if old != source:
        # a check under way (or given up) is of an address that is no longer the newest claim
        st.mobike_moves += 1
        held = st.peer_logs.admit(Line.MOBIKE_MOVE, st)
        log.log(logging.INFO if held is not None else logging.DEBUG, "%s: MOBIKE: peer moved from %s[%d] to %s[%d]%s",
                st.name, *old, *source, suffix(held or 0))
    if source == esp:
        st.esp_hold = st.esp_hold_local = None  # back where ESP goes (or never left): nothing to check
        return []
    st.esp_hold, st.esp_hold_local = esp, here
    return [ReturnRoutabilityTask()]


def go_back(st: IkeSaState) -> bool:
    """One of our requests went unanswered to the end (the check, or any other sent or retransmitted
    while the new address was unproven): True if the IKE SA went back to the addresses the Child
    SAs stayed at (the peer's and ours), where the request then goes on; False if there was none to
    go back to (the peer is gone)."""
    back = st.esp_hold
    if back is None:
        return False  # no answer where the Child SAs are either: the peer is gone
    # the new address never answered (a copy of the peer's update from a forged source, sent
    # ahead of the genuine one, gets here too): the peer is where it was, not unreachable
    if (held := st.peer_logs.admit(Line.MOBIKE_FAILED, st)) is not None:
        log.warning("%s: MOBIKE: %s[%d] never answered our request; back to %s[%d], "
                    "where the Child SAs stayed%s", st.name, *st.remote_addr, *back, suffix(held))
    st.remote_addr, st.esp_hold = back, None
    if st.esp_hold_local is not None:   # and to our address the Child SAs send from, not the copy's
        st.local_addr, st.local_port = st.esp_hold_local
        st.esp_hold_local = None
    st.mobike_moves += 1
    return True


class ReturnRoutabilityTask(Task):
    """Our INFORMATIONAL with N(COOKIE2) to the peer's new address (RFC 4555 §3.5); when the
    same COOKIE2 comes back, the Child SAs may follow the IKE SA there.

    The check is *current* while the IKE SA is still at the address it was sent to and no update
    moved it since (``st.mobike_moves``): only then does its cookie go there alone (``resend_to``)
    and does its answer prove that address. One that the peer overtook (it came back, or moved on,
    maybe back to the same address again) proves nothing: the peer's request from the address under
    check may have been a forged or replayed copy, and a retransmission may since have carried the
    cookie to the address the peer came back to. It goes on as a plain request to where the peer
    is now (the window must move on) and, once answered, a new check with a fresh cookie follows."""

    exchange = ExchangeType.INFORMATIONAL
    coalesces = True  # one queued or in flight; it re-checks the newest address (followups)
    jumps_queue = True

    def __init__(self) -> None:
        self._to: Address | None = None
        self._moves = 0
        self._cookie = b""
        self._again = False

    def build(self, st: IkeSaState) -> list[Payload]:
        self._to, self._moves = st.remote_addr, st.mobike_moves
        self._cookie = st.rng(COOKIE2_LEN)
        self._again = False
        return [notify(NotifyType.COOKIE2, self._cookie)]

    def _current(self, st: IkeSaState) -> bool:
        return st.mobike_moves == self._moves and st.remote_addr == self._to

    def resend_to(self, st: IkeSaState, first: Address) -> Address:
        return first if self._current(st) else st.remote_addr

    def process(self, st: IkeSaState, payloads: Sequence[Payload]) -> Outcome:
        echoed = find_notify(payloads, NotifyType.COOKIE2)
        if echoed is None or not hmac.compare_digest(echoed.data, self._cookie):
            log.warning("%s: MOBIKE: the return routability check of %s[%d] came back without our COOKIE2; "
                        "closing the IKE SA", st.name, *(self._to or ("?", 0)))
            return Outcome.CLOSE
        if st.esp_hold is None:
            return Outcome.DONE  # the peer came back to where ESP goes meanwhile (or we went back)
        if not self._current(st):
            log.debug("%s: MOBIKE: the peer moved while %s[%d] was checked: checking %s[%d] afresh",
                      st.name, *(self._to or ("?", 0)), *st.remote_addr)
            self._again = True
            return Outcome.DONE
        held = st.peer_logs.admit(Line.MOBIKE_MOVE, st)
        log.log(logging.INFO if held is not None else logging.DEBUG,
                "%s: MOBIKE: return routability of %s[%d] confirmed; the Child SAs follow%s",
                st.name, *st.remote_addr, suffix(held or 0))
        st.esp_hold = st.esp_hold_local = None
        st.proven_addr = st.remote_addr[0]
        return Outcome.DONE

    def followups(self) -> list[Task]:
        return [ReturnRoutabilityTask()] if self._again else []

    def handover(self, st: IkeSaState) -> list[Task]:
        return []  # the IKE SA that replaced ours checks again by itself (sa.py, _spawn_successor)


# ---------------------------------------------------------------- the initiator (we moved)

class UpdateSaAddressesTask(Task):
    """Our INFORMATIONAL with N(UPDATE_SA_ADDRESSES), N(COOKIE2) and NAT detection, sent from
    our new address (§3.5): the peer moves the IKE SA and its side of the Child SAs to where
    this request came from. ``local`` is our new (address, port) if known, for NAT detection."""

    exchange = ExchangeType.INFORMATIONAL

    def __init__(self, local: Address | None = None) -> None:
        self._local = local
        self._cookie = b""   # ours, once built (sent)
        self._again = False  # see moved

    def moved(self, local: Address | None) -> None:
        """Our address was reported again while this request waits (it leaves from there) or is out
        (copies of it go from there).  The peer moves to where the first copy it gets came from and
        answers the later ones from storage, moving nothing (RFC 7296 §2.1): so once answered, one
        more UPDATE_SA_ADDRESSES goes from our address then (RFC 4555 §3.5, review revlate5 F2), unless
        every copy surely left from one address (both it and the report's known, and equal)."""
        if self._cookie and (local is None or local != self._local):
            self._again = True
        self._local = local

    def followups(self) -> list[Task]:
        # through the answer, not beside this one: one update at a time, the latest address its own
        return [UpdateSaAddressesTask(self._local)] if self._again else []

    def build(self, st: IkeSaState) -> list[Payload]:
        self._cookie = st.rng(COOKIE2_LEN)
        try:
            own = nat_hash(st.spi_i, st.spi_r, self._local) if self._local else st.rng(20)
        except ValueError:
            own = st.rng(20)
        return [
            notify(NotifyType.UPDATE_SA_ADDRESSES),
            notify(NotifyType.COOKIE2, self._cookie),
            notify(NotifyType.NAT_DETECTION_SOURCE_IP, own),
            notify(NotifyType.NAT_DETECTION_DESTINATION_IP, nat_hash(st.spi_i, st.spi_r, st.remote_addr)),
        ]

    def process(self, st: IkeSaState, payloads: Sequence[Payload]) -> Outcome:
        echoed = find_notify(payloads, NotifyType.COOKIE2)
        if echoed is None or not hmac.compare_digest(echoed.data, self._cookie):
            log.warning("%s: MOBIKE: the answer to our UPDATE_SA_ADDRESSES lacks our COOKIE2; closing the IKE SA",
                        st.name)
            return Outcome.CLOSE
        for refusal in (NotifyType.UNACCEPTABLE_ADDRESSES, NotifyType.UNEXPECTED_NAT_DETECTED):
            if find_notify(payloads, refusal) is not None:
                log.warning("%s: MOBIKE: the peer refused our new address: %s", st.name, refusal.name)
                return Outcome.DONE
        sources = [n.data for n in find_all(payloads, NotifyPayload) if n.type == NotifyType.NAT_DETECTION_SOURCE_IP]
        if sources:
            theirs = nat_hash(st.spi_i, st.spi_r, st.remote_addr)
            st.nat_peer = not any(hmac.compare_digest(h, theirs) for h in sources)
        log.info("%s: MOBIKE: the peer updated its SAs to our new address", st.name)
        return Outcome.DONE
