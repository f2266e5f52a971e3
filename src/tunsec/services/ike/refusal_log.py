"""The lines of what the service refused a peer, or could not do for it, that the peer may ask for
again at once: a Child SA refused for now (TEMPORARY_FAILURE: the peer's answer, or no inbound SPI
from our worker; a rekey the peer's answer leaves to try again: FOR_NOW), one beyond max_child_sas,
an IKE SA beyond max_ike_sas_per_identity, any other request of an authenticated peer's refused
(TS_UNACCEPTABLE, a rekey to other selectors, NO_PROPOSAL_CHOSEN, more selectors than an SA holds), a
Child SA the worker did not take.

Each kind passes BURST lines a PERIOD per peer (loglimit.PeerLogLimiter, as churn_log.py's lines):
one limiter per kind for the whole service let one peer's repeated refusals spend every line, and
the other peers' were then only counted in the next line that passed (review revpeerdos R3).  What
a peer's limit holds is counted in its next line admitted; the counters and metrics count every one.

The peer a line is charged to (``peer_key``): an established IKE SA's identity and proof
(trusted.peer_of, the same over all its IKE SAs and their successors); an authenticated IKE SA not,
or no longer, established the same of its identity (one refused over max_ike_sas_per_identity); any
other the connection and the source it came from (dos_source.source_key: an IPv6 prefix), so that
made-up names share their source's lines: one not authenticated, and one whose name the client
chooses (``chosen_name``: an unproven eap-radius name, or any name a group PSK's holder gives), up or
not (review revpool2 F1, F2: keyed by their names, one host's IKE SAs took a share each, and past the
table's 1024 peers another client's new entry took a spent one).  An established IKE SA's source is
the address it authenticated from, not one it floated to since (a spoofed source can float an IKE
SA without MOBIKE: review revlast F1).  Names the administrator gave (a named peer, a per-peer PSK),
certificates and EAP accounts keep their identity's share wherever they come from.  The engine's
own lines a peer can repeat are charged alike (ike/peer_logs.py, where ``chosen_name`` lives), and
so are the peer's shares of updown's slots (installs._updown_event: ``up_key``).

After the peer's own limit each kind has a ceiling for all peers together (CEILING a PERIOD): the
per-peer limits let 1024 peers pass BURST lines each (25,600 a minute over the kinds, where one
limiter for the service passed 25), and a ceiling checked after them still leaves a peer that
spends its own share unable to spend the others' (review revpool2's remark).  What it holds is
counted in the next line it admits, any peer's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tunsec.ike.dos_source import source_key
from tunsec.ike.events import ChildSaLimit, IkeSaLimit, IkeSaUp, NegotiationFailed
from tunsec.ike.peer_logs import chosen_name
from tunsec.ike.sa import IkeSa
from tunsec.loglimit import PeerLogLimiter, suffix
from tunsec.services.ike.trusted import identity_peer, peer_of

if TYPE_CHECKING:
    from tunsec.services.ike.service import IkeService

log = logging.getLogger("tunsec.ike")

BURST = 5        # lines of one kind per peer per PERIOD ...
PERIOD = 60.0    # ... seconds, then held and counted
CEILING = 100    # lines of one kind per PERIOD for all peers together (20 peers' bursts)
# a Child SA refused for now and tried again: TEMPORARY_FAILURE; our rekey answered CHILD_SA_NOT_FOUND
# before the peer could have the Child SA, or an answer the peer deleted before it came (review
# revrekey2 R3: the peer may answer each of our rekeys so)
FOR_NOW = frozenset({"TEMPORARY_FAILURE", "CHILD_SA_NOT_FOUND", "DELETED_BY_PEER"})


def _limiter() -> PeerLogLimiter:
    return PeerLogLimiter(burst=BURST, period=PERIOD, ceiling=CEILING)


@dataclass
class RefusalLogs:
    """The service's limiters of these lines, one per kind (a peer's refusals of one kind do not
    hold back its lines of another)."""

    busy: PeerLogLimiter = field(default_factory=_limiter)            # Child SAs refused for now
    refused: PeerLogLimiter = field(default_factory=_limiter)         # the peer's other requests refused
    child_limit: PeerLogLimiter = field(default_factory=_limiter)     # Child SAs beyond max_child_sas
    ike_limit: PeerLogLimiter = field(default_factory=_limiter)       # IKE SAs beyond max_ike_sas_per_identity
    install_failed: PeerLogLimiter = field(default_factory=_limiter)  # Child SAs the worker did not take


def peer_key(self: IkeService, sa: IkeSa | None, fallback: object) -> object:
    """The peer whose share a line about ``sa`` takes (see the module docstring); ``fallback``
    without an IKE SA (gone already)."""
    if sa is None:
        return fallback
    if (record := self.ike_up.get(sa.local_spi)) is not None:
        return up_key(self, sa, record.ev)
    peer = sa.peer_id
    if peer is not None and not chosen_name(sa.config, peer):
        return identity_peer(peer, sa.config.lease_proof)
    return _source(self, sa.name, sa.remote_addr[0])


def up_key(self: IkeService, sa: IkeSa, ev: IkeSaUp) -> object:
    """peer_key of ``sa`` established as ``ev`` says (also of its successors: churn_log's IKE rekey)."""
    if chosen_name(sa.config, ev.remote_id):
        return _source(self, sa.name, ev.remote_addr[0])   # where it authenticated, not where it floated since
    return peer_of(ev)


def _source(self: IkeService, conn: str, addr: str) -> tuple[str, str]:
    return (conn, source_key(addr, self.endpoint.limits.ipv6_source_prefix))


def failure(self: IkeService, sa: IkeSa, ev: NegotiationFailed) -> int | None:
    """Whether a NegotiationFailed's line passes (how many were held), None: held.  A refusal for
    now (FOR_NOW) is tried again, and may fail again for every Child SA at once (a full
    SAD); our refusal of an authenticated peer's request may come again as fast as it likes, and so
    may a Child SA refused for more selectors than an SA holds (a peer's, or its answer's; each
    IKE_AUTH of the peer's can ask again): these per peer.  Other failures of an IKE SA a peer opened
    and never authenticated pass the service's limit of what anyone can cause; ours always log."""
    if ev.reason in FOR_NOW:
        return self.refusals.busy.admit(peer_key(self, sa, ev.name))
    if ev.peer_request or ev.ts_limit:
        return self.refusals.refused.admit(peer_key(self, sa, ev.name))
    return self._admit_log(sa)


def child_sa_limit(self: IkeService, sa: IkeSa, ev: ChildSaLimit) -> None:
    """An authenticated peer asked for more Child SAs than max_child_sas: counted always, logged
    within its limit (it may ask again and again, each request a line otherwise)."""
    self.events.child_sa_limit[ev.name] += 1
    if (held := self.refusals.child_limit.admit(peer_key(self, sa, ev.name))) is not None:
        what = (f"a rekey with {ev.held} replaced Child SAs left undeleted" if ev.rekey
                else f"a Child SA beyond the {ev.held} it holds")
        log.warning("%s: peer %s at %s asked for %s; max_child_sas is %d: refused with NO_ADDITIONAL_SAS%s",
                    ev.name, ev.peer, ev.remote_addr[0], what, ev.limit, suffix(held))


def ike_sa_limit(self: IkeService, sa: IkeSa, ev: IkeSaLimit) -> None:
    """An authenticated peer's IKE_AUTH refused, its identity holding max_ike_sas_per_identity IKE SAs
    (counted by the endpoint: ike_refused, ike_sa_limit): logged within its limit."""
    if (held := self.refusals.ike_limit.admit(peer_key(self, sa, ev.name))) is not None:
        log.warning("%s: peer %s at %s holds %d IKE SAs; max_ike_sas_per_identity is %d: IKE_AUTH "
                    "refused with AUTHENTICATION_FAILED%s", ev.name, ev.peer, ev.remote_addr[0], ev.held,
                    ev.limit, suffix(held), extra={"remote": ev.remote_addr[0]})
