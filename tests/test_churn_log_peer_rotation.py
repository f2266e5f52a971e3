"""Review revcfg F4: one more peer than PeerLogLimiter holds lifts the churn log limit for all.

loglimit.PeerLogLimiter (h/fixpeerdos, review revpeerdos F3) holds at most ``cap`` (1024) peers by
Space-Saving; a peer past the cap takes the smallest entry's place and count -- but with a *fresh*
LogLimiter, a full burst.  Peers that rotate through cap + 1 entries evict one another at each line,
so every line starts a fresh burst: none is ever held, the limit is gone.  The keys are cheap for one
attacker: trusted.peer_of hashes (remote_id, proof), so a group-PSK holder names itself anything
(a new peer per IKE SA), and an unproven eap-radius identity is a peer per IKE SA.  The promise of
the limiter is each peer its burst per period, whatever the others do; the clock is stopped here,
so no peer may pass more than its burst."""

from __future__ import annotations

from tunsec.loglimit import PeerLogLimiter
from tunsec.services.ike.churn_log import BURST, limiter

PEERS = 1025    # one more than PeerLogLimiter.cap
ROUNDS = 30     # lines per peer, round robin, at one instant


def test_peers_rotating_past_the_cap_get_no_more_than_their_bursts() -> None:
    lim = limiter()
    assert isinstance(lim, PeerLogLimiter) and lim.cap < PEERS
    lim.clock = lambda: 1000.0   # stopped: no period passes, no burst refills
    admitted = sum(1 for _ in range(ROUNDS) for p in range(PEERS) if lim.admit(("peer", p)) is not None)
    assert admitted <= PEERS * BURST, (
        f"{admitted} of {PEERS * ROUNDS} lines passed, bound {PEERS * BURST}: each eviction gave a fresh burst")
