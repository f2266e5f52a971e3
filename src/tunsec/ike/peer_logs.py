"""The engine's lines a peer can make us write again and again, limited per peer.

An authenticated peer decides how often it rekeys its IKE SA past MAX_UNDELETED
(sa_successor.rekey_refused), moves with MOBIKE, flips its NAT detection, claims addresses that
never answer, asks for Child SAs while ours is out or for selectors we narrow; anyone past
IKE_SA_INIT how often its first IKE_AUTH comes from another IP (sa_responder.foreign).  Each kind
(``Line``) passes BURST lines a PERIOD per peer (loglimit.PeerLogLimiter, as the service's
refusal_log.py and churn_log.py), and CEILING a PERIOD for all peers together.  One LogLimiter per
kind for the whole process let one peer's repeats spend the kind's every line, and the other
peers' lines of it were then only counted in the next that passed (h/fixpeerdos2's item).

The peer a line is charged to (``PeerLogs.peer_of``) is the one refusal_log.peer_key charges the
service's lines to: an authenticated identity with its proof (IkeConfig.lease_proof: a group-PSK
client naming itself alice is not EAP user alice), over all its IKE SAs and their successors; a
name the client chose (``chosen_name``) or none yet, the connection and the source
(dos_source.source_key: an IPv6 sender's prefix), so that made-up names share their source's
lines.  The source is the address the peer has shown it receives at (IkeSaState.proven_addr): its
IKE_SA_INIT's, which its IKE_AUTH came from (a first IKE_AUTH from elsewhere is dropped), later a
MOBIKE address that passed the return routability check; never one a request merely came from (a
NAT float, a copy from a spoofed source: review revlast F1).  The service keys an established IKE
SA's chosen name by where it authenticated (IkeSaUp.remote_addr) and does not follow a checked
MOBIKE move: an address the client answered at is one it could have connected from anyway.

The limiters are the endpoint's (IkeEndpoint.peer_logs), handed to each of its IKE SAs as its drop
counters are, not the module's: the source key needs the endpoint's ipv6_source_prefix, and two
endpoints in one process (a test's gateway and clients, one test after another) must not spend
each other's lines.  Each kind's limiter is made on its first line (a stand-alone IKE SA's own
PeerLogs costs a dict until then).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tunsec.loglimit import PeerLogLimiter

from .config import IkeConfig
from .dos_source import DEFAULT_IPV6_SOURCE_PREFIX, source_key
from .identity import Identity
from .psk import proves_any_name

if TYPE_CHECKING:
    from .state import IkeSaState

BURST = 5        # lines of one kind per peer per PERIOD ...
PERIOD = 60.0    # ... seconds, then held and counted in the peer's next line
CEILING = 100    # lines of one kind per PERIOD for all peers together (20 peers' bursts)


class Line(enum.Enum):
    """The kinds of line, each limited apart (a peer's lines of one kind do not hold back another)."""

    IKE_REKEY_REFUSED = "IKE SA rekey refused, its replaced SAs not deleted"   # sa_successor
    ELSEWHERE = "first IKE_AUTH from another IP"                                # sa_responder
    MOBIKE_REFUSED = "MOBIKE move refused, or NO_NATS_ALLOWED translated"       # exchanges/mobike
    MOBIKE_MOVE = "MOBIKE move, and its return routability confirmed"
    MOBIKE_NAT = "MOBIKE NAT detection changed"
    MOBIKE_FAILED = "MOBIKE address never answered"
    NO_LEASE = "dynamic selectors in a pool without a lease"                    # exchanges/child
    NARROWED = "the peer's TSi narrowed"
    FOR_NOW = "CREATE_CHILD_SA refused for now while ours is out"               # exchanges/create_child_sa
    DNS_DROPPED = "a gateway's DNS servers dropped"                              # exchanges/ike_config


@dataclass
class PeerLogs:
    """An endpoint's limiters of the lines above, one PeerLogLimiter per kind.  ``burst``, ``period``,
    ``ceiling`` and ``clock`` are read as a kind's limiter is made (its first line); ``clock`` at
    every line (tests set a fake one)."""

    ipv6_prefix: int = DEFAULT_IPV6_SOURCE_PREFIX
    burst: int = BURST
    period: float = PERIOD
    ceiling: int = CEILING
    clock: Callable[[], float] = time.monotonic
    _kinds: dict[Line, PeerLogLimiter] = field(default_factory=dict, init=False, repr=False)

    def admit(self, line: Line, st: IkeSaState) -> int | None:
        """None: hold this line of ``st``'s peer.  Else how many were held since its last one passed
        (loglimit.suffix says so in the line)."""
        limiter = self._kinds.get(line)
        if limiter is None:
            limiter = self._kinds[line] = PeerLogLimiter(self.burst, self.period, clock=lambda: self.clock(),
                                                         ceiling=self.ceiling)
        return limiter.admit(self.peer_of(st))

    def peer_of(self, st: IkeSaState) -> object:
        """The peer whose share a line about ``st`` takes (see the module docstring)."""
        peer = st.peer_id
        if peer is not None and not chosen_name(st.config, peer):
            return (peer, st.config.lease_proof)
        return (st.name, source_key(st.proven_addr or st.remote_addr[0], self.ipv6_prefix))


def chosen_name(config: IkeConfig, peer: Identity) -> bool:
    """Whether ``peer``, authenticated on ``config``, is a name its client chose: an unproven one
    (eap-radius whose server named no user), or one a key that proves any name proved (remote.id
    %any and one key for every holder, or a group entry among ``peer_psks``: IkeConfig.lease_proof,
    ike/psk.py).  The entry is the one the peer's name picks, as the responder's IKE_AUTH picks it
    (psk_for): a client's made-up names come to us so; an IKE SA we initiated proved the
    connection's own key (services/ike/revoked.proved_entry), to a peer we chose."""
    if peer.tag:
        return True
    if config.remote.method != "psk" or config.names_its_peer:
        return False
    entry = config.psk_for(peer)
    return entry is not None and proves_any_name(entry, config.local.id)
