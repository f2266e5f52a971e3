"""The IKE service's Child SAs (``IkeService.children``) by the names the worker's events give their
SAs: an inbound SA by its SPI, an outbound one by (SPI, peer), and how many there are of each
(connection, child).

FIRST_USE (one for every rekey a peer makes), EXPIRE and the ACQUIRE of a trap found their Child SA
by a pass over every peer's Child SAs, in the control process's one thread: at 50,000 Child SAs,
about a millisecond for each peer rekey, and a peer rekeying in a loop made each of its rekeys cost
that (review revrekey F4).  Here each is a dict lookup.

``children`` and the index change together, only through ``book``, ``unbook`` and ``clear``; an
outbound SA's peer through ``set_remote``, a move in flight through ``move``."""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import TYPE_CHECKING, Generic, TypeVar

from tunsec.dataplane.pipe import Direction, Endpoint
from tunsec.services.ike import rekey_hold
from tunsec.services.ike.state import ChildState

if TYPE_CHECKING:
    from tunsec.services.ike.service import IkeService

K = TypeVar("K", bound=Hashable)


class _Named(Generic[K]):
    """Child SAs by a name, oldest booked first.  A name is nearly always one Child SA's: a second
    (two peers at one address and port that chose one SPI, both booked until the worker refuses the
    second's ADD) waits in ``more``, so that no list is kept per Child SA."""

    __slots__ = ("first", "more")

    def __init__(self) -> None:
        self.first: dict[K, ChildState] = {}
        self.more: dict[K, list[ChildState]] = {}

    def add(self, key: K, state: ChildState) -> None:
        if key in self.first:
            self.more.setdefault(key, []).append(state)
        else:
            self.first[key] = state

    def remove(self, key: K, state: ChildState) -> bool:
        """Take ``state`` off ``key``; False if it was not there."""
        if self.first.get(key) is state:
            rest = self.more.get(key)
            if rest:
                self.first[key] = rest.pop(0)
                if not rest:
                    del self.more[key]
            else:
                del self.first[key]
            return True
        rest = self.more.get(key)
        if rest is None or state not in rest:
            return False
        rest.remove(state)
        if not rest:
            del self.more[key]
        return True

    def get(self, key: K) -> Iterator[ChildState]:
        if (state := self.first.get(key)) is not None:
            yield state
            yield from self.more.get(key, ())

    def clear(self) -> None:
        self.first.clear()
        self.more.clear()


class ChildIndex:
    """See the module's docstring."""

    __slots__ = ("_in", "_kinds", "_moving", "_out")

    def __init__(self) -> None:
        self._in: _Named[int] = _Named()                        # spi_in -> Child SA
        self._out: _Named[tuple[int, Endpoint]] = _Named()      # (spi_out, remote) -> Child SA
        # (spi_out, the peer's new endpoint) -> a Child SA a MIGRATE is moving there (ChildState.moving_to)
        self._moving: dict[tuple[int, Endpoint], ChildState] = {}
        self._kinds: dict[tuple[str, str], int] = {}            # (connection, child) -> how many

    def inbound(self, spi: int) -> Iterator[ChildState]:
        """The Child SAs whose inbound SA is ``spi`` (one; or none)."""
        return self._in.get(spi)

    def outbound(self, spi: int, remote: Endpoint | None) -> Iterator[ChildState]:
        """The Child SAs whose outbound SA is (``spi``, ``remote``), oldest first."""
        return self._out.get((spi, remote)) if remote is not None else iter(())

    def moving(self, spi: int, remote: Endpoint | None) -> ChildState | None:
        """The Child SA with outbound SPI ``spi`` being moved to ``remote``, if any."""
        return self._moving.get((spi, remote)) if remote is not None else None

    def has(self, conn: str, child: str) -> bool:
        """Whether a Child SA of ``child`` of connection ``conn`` is booked."""
        return (conn, child) in self._kinds

    def _add(self, state: ChildState) -> None:
        self._in.add(state.spi_in, state)
        self._out.add((state.spi_out, state.remote), state)
        kind = (state.conn, state.child)
        self._kinds[kind] = self._kinds.get(kind, 0) + 1

    def _remove(self, state: ChildState) -> None:
        self._in.remove(state.spi_in, state)
        self._out.remove((state.spi_out, state.remote), state)
        self._unmove(state)
        kind = (state.conn, state.child)
        if (n := self._kinds.get(kind, 0)) > 1:
            self._kinds[kind] = n - 1
        else:
            self._kinds.pop(kind, None)

    def set_remote(self, state: ChildState, remote: Endpoint) -> None:
        """``state``'s outbound SA now goes to ``remote`` (a MIGRATE went through)."""
        if self._out.remove((state.spi_out, state.remote), state):   # (not if it was unbooked meanwhile)
            self._out.add((state.spi_out, remote), state)
        state.remote = remote

    def move(self, state: ChildState, target: tuple[Endpoint, Endpoint] | None) -> None:
        """A MIGRATE of ``state`` to ``target`` (the peer's endpoint, ours) is in flight; None: no more."""
        self._unmove(state)
        state.moving_to = target
        if target is not None:
            self._moving[(state.spi_out, target[0])] = state

    def _unmove(self, state: ChildState) -> None:
        if state.moving_to is not None and self._moving.get(key := (state.spi_out, state.moving_to[0])) is state:
            del self._moving[key]

    def _clear(self) -> None:
        self._in.clear()
        self._out.clear()
        self._moving.clear()
        self._kinds.clear()


def book(svc: IkeService, state: ChildState) -> None:
    """``state`` is one of the service's Child SAs from now on."""
    svc.children[state.handle] = state
    svc.child_index._add(state)


def unbook(svc: IkeService, state: ChildState) -> None:
    """``state`` is no longer one of the service's Child SAs (no error if it was not)."""
    if svc.children.pop(state.handle, None) is not None:
        svc.child_index._remove(state)


def clear(svc: IkeService) -> None:
    """None of the service's Child SAs are booked any more (a worker restart)."""
    svc.children.clear()
    svc.child_index._clear()


def child_of_sa(svc: IkeService, spi: int, direction: Direction, remote: Endpoint | None = None) -> ChildState | None:
    """The installed Child SA one of whose SAs this is (its IKE SA still has it).

    An outbound SA is named by (spi, remote): two peers may have chosen the same SPI.  One being
    moved (``moving_to``) is also found at its new endpoint: the worker names it so from the
    MIGRATE on, and its EXPIRE may be read before the MIGRATE's answer is acted on (events after
    answers in one read, mobility._migrate); lost, a soft EXPIRE would not rekey it.  Another
    peer's SA that is at that endpoint already goes first.

    The worker holds one outbound SA of a name, but a rekey responder's standby holds its name
    without one (``out_installed`` False), and the Child SAs at a name are in the order they came
    to it (a moved one behind a standby there): so the one whose outbound SA the worker holds is
    asked for first, then the one being moved there, then any (a standby's own name, which no
    one's SA holds: review revrekey3 F2)."""
    index = svc.child_index
    if direction is Direction.IN:
        return next((state for state in index.inbound(spi) if _held(svc, state)), None)
    held = [state for state in index.outbound(spi, remote) if _held(svc, state)]
    moving = index.moving(spi, remote)
    moved = [moving] if moving is not None and still_held(svc, moving) else []
    for state in (*held, *moved):
        if state.out_installed:   # (held first: another peer's SA at that endpoint already)
            return state
    return next(iter((*held, *moved)), None)


def _held(svc: IkeService, state: ChildState) -> bool:
    """Its IKE SA still has it, or the engine holds it for our rekey of it (its EXPIREs' counters)."""
    return still_held(svc, state) or rekey_hold.held(svc, state)


def still_held(svc: IkeService, state: ChildState) -> bool:
    """Its IKE SA still has the Child SA (not deleted meanwhile)."""
    sa = svc._ike_sa(state.ike)
    return sa is not None and any(c.unique_id == state.unique_id for c in sa.children)
