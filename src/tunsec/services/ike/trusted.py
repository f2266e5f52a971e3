"""Our SPIs of the established IKE SAs, as the worker holds them (IKE_SPI_ADD / IKE_SPI_DELETE): the
IKE datagrams on port 4500 that name one as ours have a reserve in the worker's queues that a
flood of spoofed IKE cannot take (docs/pipe.md, "When the control process does not keep up"), so
an established peer's DPD, rekeys, DELETEs and MOBIKE updates still reach the engine.

An SPI is added when its IKE SA is established (IkeSaUp) or is the successor of a rekey, and deleted
when the engine forgets the SA (IkeEndpoint.on_forget), whichever way it went: deleted by either
side, expired, a dead peer, replaced (INITIAL_CONTACT, unique), dropped by a reload; a rekeyed SA
keeps its SPI until its DELETE exchange is through or it gives up lingering, so that exchange has
the reserve too.  The set is IkeService.ike_up's keys and the rekeyed SAs still lingering (at most
sa_successor.MAX_UNDELETED per IKE SA).  Each comes with its peer (peer_of: the authenticated
identity and how it was proven), so that all the IKE SAs one peer opens share one share of the
reserve: a peer may open as many as it likes (unique=no) and flood with their SPIs.  Half-open SAs
are never added: whoever sent the IKE_SA_INIT knows our SPI of those.  A new worker starts empty:
the set is sent again (worker_restarted).  Requests go without a task each (request_soon: a burst of
clients brings one per IKE SA) and nothing waits for them; one the client refuses (no worker, or
SEND_QUEUE_MAX requests already waiting for the pipe) stays due and is sent again, before any later
one, until it goes: a lost DELETE would leave a gone SA's SPI with the reserve for good.  A worker
that holds as many as it may (ENOSPC) leaves that SA without a reserve, which is said and counted
(``ike_reserve_refused`` in ``tunsec status``, tunsec_ike_reserve_refused_total).

The worker also holds the key of the tags in our IKE SPIs (IKE_SPI_KEY, ike/spi_tag.py), with which it
tells a half-open SA's IKE_AUTH from where our IKE_SA_INIT answer went from a spoofed datagram: every
new worker is sent it before the SPIs, and a refused send is retried as they are."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

from tunsec.dataplane import client, pipe
from tunsec.dataplane.client import WorkerClient, WorkerError
from tunsec.dataplane.pipe import Errno
from tunsec.ike.events import IkeSaUp
from tunsec.ike.identity import Identity
from tunsec.ike.spi_tag import ROTATE, IkeSpiTag
from tunsec.loglimit import LogLimiter, suffix

log = logging.getLogger("tunsec.ike")

RETRY = 1.0   # seconds between tries of requests the client refused (the pipe drains meanwhile)


@dataclass(slots=True)
class _Sent:
    """A request waiting for its answer: the SPI it is for (None: the tag key), True an ADD."""

    fut: asyncio.Future[list[pipe.Reply]]
    spi: bytes | None
    add: bool
    at: float   # the loop's time it was sent


def peer_of(ev: IkeSaUp) -> int:
    """The worker's id of the peer of an IKE SA: its authenticated identity (with EAP the one EAP
    proved) and how it was proven (``proof``: IkeConfig.lease_proof), the same for all of that
    peer's IKE SAs and for their rekeyed successors; never 0.  The proof, as a lease's (policy/pools.py):
    a group-PSK client naming itself "alice" (as many IKE SAs as it likes) floods in a share of its
    own, not in EAP user alice's, whose DPD and rekeys keep their reserve (review reveapfix F1).
    A process-keyed hash (Python's, seeded at random), so nobody outside can make two identities
    share one.  An unproven identity (eap-radius without a User-Name) is equal only to itself:
    each such IKE SA is a peer of its own, held only to its sender address's share."""
    return identity_peer(ev.remote_id, ev.proof)


def identity_peer(identity: Identity, proof: str) -> int:
    """peer_of of an IKE SA that authenticated ``identity`` by ``proof`` (IkeConfig.lease_proof),
    asked before (or after) its IkeSaUp is at hand (refusal_log.py)."""
    return hash((identity, proof)) & 0xFFFF_FFFF_FFFF_FFFF or 1


class TrustedSpis:
    def __init__(self, worker: Callable[[], WorkerClient], tag: IkeSpiTag) -> None:
        self.worker = worker
        self.tag = tag
        self.key_due = True                # the worker has not been sent the tag key yet
        self.spis: dict[bytes, int] = {}   # what the worker is to hold: SPI -> its peer
        # what the worker has not been sent yet, in order: True an ADD, False a DELETE
        self.unsent: dict[bytes, bool] = {}
        self.refused = 0                   # IKE_SPI_ADDs the worker had no room for (ENOSPC)
        self._retry: asyncio.TimerHandle | None = None
        self._rotation: asyncio.TimerHandle | None = None
        self._log = LogLimiter(burst=1, period=60.0)
        # answers refused with another errno: the worker's word, a line for each of them without this
        self._refused_log = LogLimiter(burst=1, period=60.0)
        # requests of this worker not answered yet, by request id, oldest first; one timer gives up
        # on those unanswered after REQUEST_TIMEOUT (see _watch)
        self._waiting: dict[int, _Sent] = {}
        self._give_up: asyncio.TimerHandle | None = None
        self.unanswered = 0                # requests the worker left unanswered past REQUEST_TIMEOUT
        self._unanswered_log = LogLimiter(burst=1, period=60.0)

    def add(self, spi: bytes, peer: int = 0) -> None:
        if spi in self.spis:
            return
        self.spis[spi] = peer
        self._due(spi, True)

    def remove(self, spi: bytes) -> None:
        if self.spis.pop(spi, None) is None:
            return
        if self.unsent.pop(spi, None):   # its ADD never went: the worker holds nothing to delete
            return
        self._due(spi, False)

    def resend(self) -> None:
        """A new worker holds none: the key and all of them again (and no DELETE: it has nothing to
        delete).  Also the first worker's start."""
        self.key_due = True
        self.unsent = dict.fromkeys(self.spis, True)
        self._waiting.clear()   # the gone worker's (failed): the new one's request ids start again
        self._flush()

    def start(self) -> None:
        """The first worker: the key (and SPIs, none yet), and a new key every ROTATE seconds."""
        self.resend()
        self._rotation = asyncio.get_running_loop().call_later(ROTATE, self._rotated)

    def _rotated(self) -> None:
        self.rotate()
        self._rotation = asyncio.get_running_loop().call_later(ROTATE, self._rotated)

    def close(self) -> None:
        for timer in (self._retry, self._rotation, self._give_up):
            if timer is not None:
                timer.cancel()
        self._retry = self._rotation = self._give_up = None

    def _due(self, spi: bytes, add: bool) -> None:
        self.unsent.pop(spi, None)
        self.unsent[spi] = add
        self._flush()

    def _flush(self) -> None:
        """Send what is due, the key and then the oldest first; at the first refusal the rest waits
        for a retry."""
        if self.key_due:
            if not self._send_key():
                self._retry_later()
                return
            self.key_due = False
        while self.unsent:
            spi, add = next(iter(self.unsent.items()))
            if not self._send(spi, add):
                self._retry_later()
                return
            del self.unsent[spi]

    def _retry_later(self) -> None:
        if self._retry is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:   # no loop (a test's plain call): the next add, remove or resend tries again
            return
        self._retry = loop.call_later(RETRY, self._retried)

    def _retried(self) -> None:
        self._retry = None
        self._flush()

    def rotate(self) -> None:
        """A new key for the tags from now on; the worker keeps taking the one before as well."""
        self.tag.rotate()
        self.key_due = True
        self._flush()

    def _send_key(self) -> bool:
        """The worker keeps the last two keys it was sent: the one before, then the current one."""
        worker = self.worker
        keys = [k for k in (self.tag.previous, self.tag.key) if k is not None]
        try:
            for key in keys:
                self._request(worker(), functools.partial(pipe.IkeSpiKey, key=key), None, True)
        except WorkerError:
            return False
        return True

    def _send(self, spi: bytes, add: bool) -> bool:
        peer = self.spis.get(spi, 0)
        try:
            if add:
                self._request(self.worker(), lambda req_id: pipe.IkeSpiAdd(req_id, spi, peer), spi, True)
            else:
                self._request(self.worker(), lambda req_id: pipe.IkeSpiDelete(req_id, spi), spi, False)
        except WorkerError:
            return False   # no worker (the next one is sent the whole set), or the pipe is backed up
        return True

    def _request(self, worker: WorkerClient, build: Callable[[int], pipe.Message], spi: bytes | None,
                 add: bool) -> None:
        """Send it (WorkerError if the client refuses) and watch it: given up REQUEST_TIMEOUT after it
        was sent if still unanswered, as every other request is (review revworker F4).  A request
        waited for for ever stays among the client's pending ones, whose count must come back to 0 for
        the key pairs to be refilled (IkeService._setting_up).  One timer for all (a burst of IKE SAs
        comes up together), not one per request."""
        ids: list[int] = []

        def built(req_id: int) -> pipe.Message:
            ids.append(req_id)
            return build(req_id)

        fut = worker.request_soon(built, self._answered, _quiet)
        loop = asyncio.get_running_loop()
        self._waiting[ids[0]] = _Sent(fut, spi, add, loop.time())
        if self._give_up is None:
            self._give_up = loop.call_later(client.REQUEST_TIMEOUT, self._gave_up)

    def _gave_up(self) -> None:
        """The requests the worker has left unanswered for REQUEST_TIMEOUT: forgotten (cancelled) and,
        if still wanted, due again after RETRY (the worker may be slow, not lying); the timer again
        for the oldest still waiting."""
        self._give_up = None
        loop = asyncio.get_running_loop()
        now, waiting, late = loop.time(), self._waiting, 0
        while waiting:
            req_id, sent = next(iter(waiting.items()))
            if now - sent.at < client.REQUEST_TIMEOUT:
                self._give_up = loop.call_at(sent.at + client.REQUEST_TIMEOUT, self._gave_up)
                break
            del waiting[req_id]
            if sent.fut.done():   # failed (the worker went): resend() sends it again
                continue
            sent.fut.cancel()
            late += 1
            if sent.spi is None:
                self.key_due = True
            elif sent.add == (sent.spi in self.spis) and sent.spi not in self.unsent:   # still wanted
                self.unsent[sent.spi] = sent.add
        if late:
            self.unanswered += late
            if (held := self._unanswered_log.admit()) is not None:
                log.warning("the worker left %d IKE SPI request(s) unanswered for %.0f s: given up, to be sent "
                            "again%s", late, client.REQUEST_TIMEOUT, suffix(held))
            self._retry_later()
    def _answered(self, replies: list[pipe.Reply]) -> None:
        if replies:
            self._waiting.pop(replies[0].req_id, None)
        # EEXIST/ENOENT: the worker's set is already as asked (a resend raced an add or delete)
        for reply in replies:
            if reply.errno is Errno.ENOSPC:
                self.refused += 1
                if (held := self._log.admit()) is not None:
                    log.warning("the worker holds as many established IKE SAs' SPIs as it may: this one's IKE "
                                "has no reserve against floods%s", suffix(held))
            elif (reply.errno not in (Errno.OK, Errno.EEXIST, Errno.ENOENT)
                  and (held := self._refused_log.admit()) is not None):
                log.warning("%s refused by the worker: %s%s", reply.type.name, reply.errno.name, suffix(held))


def _quiet(err: WorkerError) -> None:
    """A request the worker never answered (it went): nothing waits for it, and its error is not one
    to log (the worker's end is handled where it is seen); request_soon takes it as retrieved."""
