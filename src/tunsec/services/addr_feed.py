"""One watch of the host's addresses in the control process, and the one place its notices are
handed out: each burst of changes to its subscribers (the IKE service: its list of the host's
addresses, a MOBIKE client's updates), each address added to the dataplane worker.

The worker holds no netlink socket (review revlate4 F1: a route netlink socket it holds, however
it was opened, carries route and address changes sent with sendto() to the kernel's address from a
worker that keeps capabilities, forges address notices to every listener of the namespace, and
answers dumps of the routes, neighbours and links Landlock hides from one that keeps none).  It
learns of each address the host adds from the pipe's ADDR_ADDED notice (docs/pipe.md): an SA whose
source address the kernel refused tries it again with its next message if it is its own
(csrc/addrwatch.c), rather than after its 10 s.  Only an address the host gains counts: not one
changed (the kernel sends RTM_NEWADDR for `ip addr change` and each SLAAC renewal, which anyone on
the link may cause), nor one it has on another interface already, nor a tentative one (its end of
DAD comes as a notice of its own).  The feed knows what the host has from the notices it read (an
address it never saw a notice of is told once, at its first: telling an address the host has costs
the worker nothing, as an SA from it sends).  A turn's addresses go in notices of MAX_ADDRS_ADDED
each (review revlate8 F2: 17 renewals were "any", every SA whose source is gone trying again); a
notice lost (ENOBUFS) or one that does not parse counts as any address, and the feed forgets what
it knew (a removal may be among the lost).
The daemon owns the feed (a daemon with manual tunnels only needs it too); a service started alone
(tests, tools) makes one of its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import MAX_ADDRS_ADDED
from tunsec.policy.selector import IPAddress
from tunsec.services.address_count import AddressCount
from tunsec.services.addrwatch import (
    RTM_DELADDR,
    RTM_NEWADDR,
    AddressChange,
    AddressListener,
    AddressWatch,
    Malformed,
    added_address,
    interface_address,
    messages,
)

if TYPE_CHECKING:
    from tunsec.dataplane.client import WorkerClient

log = logging.getLogger(__name__)


def added_addresses(data: bytes, usable: AddressCount | None = None) -> tuple[list[IPAddress], bool]:
    """The addresses the host gains by one read of the watch, ``usable`` (the host's entries that are
    not tentative: addrwatch.added_address) updated by its notices, and whether all of it was read
    (False: something did not parse, the addresses before it are given)."""
    out: list[IPAddress] = []
    usable = AddressCount() if usable is None else usable
    try:
        for mtype, _flags, _seq, body in messages(data):
            if mtype not in (RTM_NEWADDR, RTM_DELADDR) or (which := interface_address(body)) is None:
                continue
            # a tentative address (DAD again after a link flap) is not the host's until its DAD ends
            gained = mtype == RTM_NEWADDR and added_address(body) is not None
            if usable.one(gained, which) and gained:
                out.append(which.local)
    except Malformed as err:
        log.debug("address watch: %s", err)
        return out, False
    return out, True


@dataclass(eq=False)
class Subscription:
    """A subscriber's bursts and changes; closed with it (and the feed too if it was the subscriber's
    own)."""

    feed: AddressFeed
    on_burst: Callable[[], object]
    listener: AddressListener | None = None
    owned: bool = False

    def close(self) -> None:
        self.feed.unsubscribe(self)
        if self.owned:
            self.feed.close()


class AddressFeed:
    """The control process's one watch of the host's addresses (services/addrwatch.py)."""

    def __init__(self, worker: Callable[[], WorkerClient], settle: float = 0.1) -> None:
        self._worker = worker
        self._settle = settle
        self._watch: AddressWatch | None = None
        self._subscribers: list[Subscription] = []
        self._added: list[IPAddress] = []
        self._usable = AddressCount()   # the host's addresses as the notices read so far tell them
        self._any = False   # notices lost or unreadable since the last ADDR_ADDED
        self._send_at: asyncio.Handle | None = None
        self.notices = 0    # ADDR_ADDED sent to the worker (tests, and a look in a debugger)

    @property
    def running(self) -> bool:
        return self._watch is not None

    def start(self) -> None:
        """The watch opened (a no-op if it is); OSError if rtnetlink refuses."""
        if self._watch is not None:
            return
        watch = AddressWatch(self._burst, self._settle, listener=self, on_read=self._read)
        watch.start()
        self._watch = watch

    def start_or_warn(self) -> None:
        try:
            self.start()
        except OSError as err:
            log.warning("cannot watch the host's addresses (rtnetlink): %s; an SA whose source address went "
                        "away leaves from it again only 10 s after it is back", err)

    def subscribe(self, on_burst: Callable[[], object], listener: AddressListener | None = None,
                  owned: bool = False) -> Subscription:
        """on_burst() after each burst of changes has settled, and listener each change as it is read
        (AddressWatch's; the IKE service's list of the host's addresses)."""
        sub = Subscription(self, on_burst, listener, owned)
        self._subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subscribers:
            self._subscribers.remove(sub)

    # the watch's listener, handing each call on to the subscribers' (AddressListener)
    def apply(self, changes: Sequence[AddressChange]) -> None:
        for sub in list(self._subscribers):
            if sub.listener is not None:
                sub.listener.apply(changes)

    def resync(self) -> None:
        for sub in list(self._subscribers):
            if sub.listener is not None:
                sub.listener.resync()

    def _burst(self) -> None:
        for sub in list(self._subscribers):
            sub.on_burst()

    def _read(self, data: bytes | None) -> None:
        """One read of the watch (None: notices lost): the addresses the host gains go to the worker at
        the end of this turn, in ADDR_ADDED notices of MAX_ADDRS_ADDED."""
        if data is None:
            whole = False
        else:
            added, whole = added_addresses(data, self._usable)
            self._added += added
        if not whole:   # a removal may be among what was lost: what the feed knew may be wrong
            self._any = True
            self._usable = AddressCount()
        if (self._added or self._any) and self._send_at is None:
            self._send_at = asyncio.get_running_loop().call_soon(self._send)

    def _send(self) -> None:
        self._send_at = None
        added, self._added = tuple(dict.fromkeys(self._added)), []
        everything, self._any = self._any, False
        if everything:   # one notice naming none: any address, those read with it among them
            self._notify(())
            return
        for at in range(0, len(added), MAX_ADDRS_ADDED):
            self._notify(added[at:at + MAX_ADDRS_ADDED])

    def _notify(self, addrs: tuple[IPAddress, ...]) -> None:
        if self._worker().notify(pipe.AddrAdded(addrs=addrs)):
            self.notices += 1
        else:   # no worker (a restart under way: the next has no SA whose source went) or its queue full
            log.debug("address watch: the worker was not told of %s", list(addrs) or "any address")

    def close(self) -> None:
        if self._send_at is not None:
            self._send_at.cancel()
            self._send_at = None
        if self._watch is not None:
            self._watch.close()
            self._watch = None
