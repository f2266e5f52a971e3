"""What the worker says of the IKE service's Child SAs, checked against what the service installed.

A worker taken over can name any installed SA in an EXPIRE (review revworker F2): a soft one would
renegotiate that Child SA with its peer (a CREATE_CHILD_SA, a key exchange and an install on both
ends), a hard one delete it (a DELETE to the peer).  The service installs soft limits in bytes and
packets only, and only when rekey_bytes/rekey_packets are set (conf/children.py soft_limits: the
engine times its own rekeys), and hard ones only for life_bytes/life_packets/life_time: an EXPIRE for
a limit the SA's settings never gave the worker is a lie, refused (counted ``refused_expires``, in
tunsec status and metrics, as ManualService counts its own), its line rate-limited.  SEQ_OVERFLOW
is believed only as a healthy worker sends it (csrc/dp.c), for an outbound SA without ESN: hard when its
2^32 sequence numbers are used up (kill_sa), soft SEQ_SOFT_MARGIN numbers before (seq_soft: the service
rekeys it before the hard stop, RFC 4303 §3.3.3) and only if its counters say it is that far and it
has lived long enough to send that much; one of an inbound or ESN SA, or a soft one of an SA that
cannot be near its end, is refused as the others (review revworker2 F1: else reason 4 instead of 1
passes any lie; a worker taken over may force a rekey of each Child SA once it is old enough, as a
forged soft packet limit may).  LARVAL_TIMEOUT is the SPI pool's (never a Child SA's).

Also how many SAs and policies the service holds in the worker (entries), what a DUMP answer is
bounded by (worker_distrust.dump_cap).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Final

from tunsec.conf.children import Child
from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import SEQ_SOFT_MARGIN, Direction, ExpireReason, Lifetime
from tunsec.loglimit import LogLimiter, suffix
from tunsec.services.ike.spis import SPI_POOL, SPI_POOL_BURST

if TYPE_CHECKING:
    from tunsec.services.ike.service import IkeService
    from tunsec.services.ike.state import ChildState

log = logging.getLogger("tunsec.ike")

_refused_log = LogLimiter()   # one IKE service a process: the worker decides how many lines

# where a Child SA's soft SEQ_OVERFLOW comes: the service's SAs start at sequence number 0, and each
# packet the fast path counts took the next number
SEQ_SOFT_AT: Final = 2**32 - SEQ_SOFT_MARGIN
# faster than any worker can send on one SA (100 Gbit/s of the smallest frames: 148.8 M packets/s):
# only claims no worker can make are refused by it
MAX_PACKET_RATE: Final = 2**28


def installed_limit(plan: Child, hard: bool, reason: ExpireReason) -> bool:
    """Whether a Child SA of these settings went into the worker with a limit of that kind (the
    sequence numbers' is checked by seq_overflow_possible)."""
    if reason is ExpireReason.SEQ_OVERFLOW:
        return True
    if hard:
        limits = {ExpireReason.BYTES: plan.life_bytes, ExpireReason.PACKETS: plan.life_packets,
                  ExpireReason.TIME: plan.life_time}
    else:   # soft_limits: never a time (the engine's timers rekey on time)
        limits = {ExpireReason.BYTES: plan.rekey_bytes, ExpireReason.PACKETS: plan.rekey_packets}
    return limits.get(reason, 0) > 0


def seq_overflow_possible(msg: pipe.Expire, state: ChildState, now: float) -> bool:
    """Whether a worker could truly send this EXPIRE as far as sequence numbers go: only for an outbound
    SA without ESN (64-bit numbers never run out), a soft one only near the end (``now``: the monotonic
    clock); any other reason is not this check's."""
    if msg.reason is not ExpireReason.SEQ_OVERFLOW:
        return True
    if msg.direction is not Direction.OUT or state.esn:
        return False
    return msg.hard or near_the_end(msg.current, now - state.registered)


def near_the_end(current: Lifetime | None, age: float) -> bool:
    """A soft SEQ_OVERFLOW's counters (LIFETIME_CURRENT, sent with every soft EXPIRE of an SA still
    there) past the margin, and no more packets than an SA of that age can have sent."""
    return current is not None and SEQ_SOFT_AT <= current.packets <= age * MAX_PACKET_RATE


def refused_expire(svc: IkeService, msg: pipe.Expire) -> bool:
    """True: the EXPIRE names one of the service's Child SAs at a limit it never installed, and was
    refused (counted, logged rate-limited).  False: not ours, or believable."""
    state = svc._child_of_sa(msg.spi, msg.direction, msg.remote)
    if state is None or (installed_limit(state.plan, msg.hard, msg.reason)
                         and seq_overflow_possible(msg, state, time.monotonic())):
        return False
    svc.refused_expires += 1
    if (held := _refused_log.admit()) is not None:
        log.error("%s: CHILD_SA %s: the worker says SA %s %08x reached its %s %s limit, which it cannot "
                  "have reached (never given, or not that far): ignored%s", state.conn, state.child,
                  msg.direction.name.lower(), msg.spi, "hard" if msg.hard else "soft", msg.reason.name.lower(),
                  suffix(held))
    return True


def entries(svc: IkeService) -> int:
    """The SAs and policies the service holds in the worker, about: each Child SA's two SAs (a
    standby outbound one, an unanswered ADD: the cap's slack), inbound SAs lingering after a rekey,
    Child SA and trap policies, and the larval SAs of the SPI pool and of negotiations under way."""
    sas = 2 * len(svc.children) + sum(len(mine) for mine in svc._lingering.values())
    policies = len(svc.child_policies) + len(svc.trap_policies)
    larval = SPI_POOL + SPI_POOL_BURST + 2 * svc.endpoint.half_open
    return sas + policies + larval
