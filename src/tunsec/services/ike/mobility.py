"""Peers and ourselves moving: MOBIKE (RFC 4555) on our address changes, NAT rebinding and
MOBIKE updates of the peer (_follow_peers), Child SAs following (MIGRATE)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import ipaddress
import logging
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

from tunsec.dataplane import pipe
from tunsec.dataplane.client import WorkerError
from tunsec.dataplane.pipe import Direction, Endpoint
from tunsec.ike.constants import HeaderFlag
from tunsec.ike.sa import State
from tunsec.loglimit import suffix
from tunsec.policy.selector import parse_ip
from tunsec.services.addr_feed import AddressFeed
from tunsec.services.ike.state import ChildState

if TYPE_CHECKING:
    from tunsec.ike.sa import IkeSa
    from tunsec.services.ike.service import IkeService

log = logging.getLogger("tunsec.ike")

# a MIGRATE the worker refused or left unanswered: tries of one move in all, and the pause before
# the first retry (doubling: 1, 2, 4, 8 s); then the Child SA is rekeyed instead (_migrate_failed)
MIGRATE_TRIES = 5
MIGRATE_BACKOFF = 1.0
# the Child SAs of one IKE SA move in batches, one every MOVE_INTERVAL seconds in the long run, up to
# MOVE_BURST at once (_move): a NAT'd peer flapping its source port costs a batch of MIGRATEs per
# interval, the latest target applied.  Two at once: a MOBIKE peer that reaches us at another of our
# addresses moves our end first, its own after the return routability check, milliseconds later
MOVE_INTERVAL = 1.0
MOVE_BURST = 2

# the Child SAs wait for the exclude route of their peer's new address (_route_ready): at most this
# long (a netlink job stuck: then they go as before), looking every ROUTE_POLL seconds
ROUTE_WAIT = 5.0
ROUTE_POLL = 0.01

_INITIATOR = int(HeaderFlag.INITIATOR)   # an int: int & IntFlag makes a new HeaderFlag each datagram


def _watch_addresses(self: IkeService) -> None:
    """The host's address changes: the engine's list of them follows (host_addresses.py: no REDIRECT
    or peer's move to one), and a MOBIKE client (a connection with a remote address and no fixed
    local one) follows its own: each change sends UPDATE_SA_ADDRESSES (RFC 4555 §3.5)."""
    # the control process's one watch (the daemon's, which tells the worker of addresses added too), or
    # one of our own for a service started alone
    feed = self.addresses or AddressFeed(self.worker)
    try:
        feed.start()   # the daemon's is running already, or failed to start: tried again
    except OSError as err:
        mobike = "; the gateways will not hear of our address changes (MOBIKE)" if _mobike_client(self) else ""
        log.warning("cannot watch the host's addresses (rtnetlink): %s; REDIRECTs and peers' moves are checked "
                    "against those at start%s", err, mobike)
        return
    self._addr_watch = feed.subscribe(functools.partial(_addresses_changed, self), self.host_addresses,
                                      owned=feed is not self.addresses)


def _mobike_client(self: IkeService) -> bool:
    return any(c.ike.mobike and c.ike.remote_addr and not c.ike.local_addr for c in self.connections.values())


def _addresses_changed(self: IkeService) -> None:
    """A burst of changes settled (the host's address list took each as it came)."""
    if _mobike_client(self):   # (a reload may add or remove one)
        self.local_addresses_changed()


def local_addresses_changed(self: IkeService) -> int:
    """Our addresses changed: every established IKE SA we (originally) initiated with MOBIKE
    sends UPDATE_SA_ADDRESSES from the address the kernel now picks; how many did."""
    n = sum(1 for sa in self.endpoint.sas if sa.update_addresses())
    if n:
        log.info("MOBIKE: our addresses changed: updating %d IKE SA(s)", n)
        self._pump()
    return n


def _note_peer(self: IkeService, data: bytes) -> None:
    """Remember which IKE SA a datagram is for (our SPI in its header): only its peer may have moved."""
    if len(data) >= 28:
        from_initiator = data[19] & _INITIATOR
        self._peers_to_check.add(data[8:16] if from_initiator else data[0:8])


# where an IKE SA's Child SAs carry ESP: (the peer's address and port, our address (None: not
# known, the route picks), our port)
IkePath = tuple[tuple[str, int], str | None, int]


@dataclasses.dataclass(slots=True)
class IkeMove:
    """An IKE SA's Child SAs following it (``_move_children``: one mover per IKE SA)."""

    path: IkePath              # where they go: the IKE SA's latest path (the latest target wins)
    # a mover is spawned, running, or waits for its timer (budget, retry): it takes ``path`` as it
    # is then, so a move asked for meanwhile only sets ``path``
    busy: bool = False
    # the budget (GCRA): a batch may start MOVE_BURST - 1 intervals before this, which then moves on
    # by MOVE_INTERVAL (_wait)
    due: float = -math.inf
    gave_up: frozenset[int] = frozenset()   # children rekeyed instead (_migrate_failed) until the next move
    # the addresses a MOBIKE SA left (_proven_move) while this move was asked for: once its Child SAs
    # left them too, a sweep if one held an exclude route (_sweep_left)
    left: set[str] = dataclasses.field(default_factory=set)


def _follow_peers(self: IkeService) -> None:
    """NAT rebinding (RFC 7296 §2.23) and MOBIKE (RFC 4555): the engine moves an IKE SA to the
    address and port of the peer's latest authenticated request (with MOBIKE: its
    UPDATE_SA_ADDRESSES, once the new address passed the return routability check:
    ``IkeSa.esp_remote``) and to our address that request arrived on (``IkeSa.esp_local``: the
    peer now reaches us at another of our addresses); the Child SAs it negotiated follow with
    both ends (MIGRATE, no re-keying): outbound ESP to the new mapping, and from our new address
    (on a wildcard-bound worker socket ESP leaves from the SA's local address, so a child left
    behind would keep sending from the old one while that exists).  Checked after input only,
    and only for the IKE SAs that got a datagram (not a pass over all of them per datagram);
    the children only when their IKE SA's path changed (_move)."""
    spis, self._peers_to_check = self._peers_to_check, set()
    for spi in spis:
        sa = self.endpoint.sa_by_spi(spi)
        handle = self._ike_handles.get(sa) if sa is not None else None
        if sa is None or handle is None or sa.state in (State.REKEYED, State.CLOSED):
            continue   # no handle: no Child SA of it is installed, nothing to move
        path = (sa.esp_remote, *sa.esp_local)   # MOBIKE: both ends after the return routability check
        old = self._ike_peers.get(handle)
        if old != path:   # moved, or not seen yet: its children compare
            self._ike_peers[handle] = path
            _move(self, handle, sa.name, path, _proven_move(self, sa, old))


def _proven_move(self: IkeService, sa: IkeSa, old: IkePath | None) -> frozenset[str]:
    """An authenticated MOBIKE SA's ``esp_remote`` moves only once the new address passed the return
    routability check: it is proven (exclude_trust.authenticated_peer), yet no datagram of ours to it
    is left to ask for its exclude route (the check's went by the uplink, unproven then): the gate adds
    it now, and _route_ready holds the MIGRATE until it is in (review revsweep2 F2).  The address it
    left, which the SA keeps no more (exclude_trust.kept_address), is returned for _sweep_left (F3)."""
    gate = self.sockets.gate
    if gate is None or not _proves(self, sa):
        return frozenset()   # a float without MOBIKE proves nothing, and keeps its authenticated address
    with contextlib.suppress(ValueError):
        gate.expect(parse_ip(sa.esp_remote[0]))
    return frozenset((old[0][0],)) if old is not None and old[0][0] != sa.esp_remote[0] else frozenset()


def _proves(self: IkeService, sa: IkeSa) -> bool:
    """``sa``'s ``esp_remote`` is an address its peer proved: it is authenticated, with MOBIKE."""
    return sa.mobike and sa.local_spi in self.ike_up


def _move(self: IkeService, ike: int, conn: str, path: IkePath, left: frozenset[str] = frozenset()) -> None:
    """IKE SA ``ike`` is on ``path`` now: its Child SAs follow, in one batch per IKE SA, one batch
    every MOVE_INTERVAL in the long run (MOVE_BURST at once).  A NAT'd peer (every tunsec and
    strongSwan encap=yes peer looks NAT'd) decides how often its source port changes: each batch
    costs two MIGRATEs per Child SA under ``_changes``, which every peer's install takes too.  A move
    asked for while a batch runs or waits for its budget only sets the target (counted:
    ``events.moves_deferred``).  ``left``: the addresses the IKE SA left (_proven_move), swept once its
    children left them too."""
    move = self._moves.get(ike)
    if move is not None and move.busy:   # its mover takes the latest path when it runs
        move.path, move.gave_up = path, frozenset()
        move.left |= left
        self.events.moves_deferred[conn] += 1
        return
    if not _strays(self, ike, path):
        _sweep_left(self, left)
        return   # its children are there (back where they were, or none yet): nothing to do
    if move is None:
        move = self._moves[ike] = IkeMove(path)
    move.path, move.gave_up, move.busy = path, frozenset(), True
    move.left |= left
    if _wait(self, move) > 0:
        self.events.moves_deferred[conn] += 1
    _start_mover(self, ike, move)


def _strays(self: IkeService, ike: int, path: IkePath) -> bool:
    """Whether a Child SA of IKE SA ``ike`` is not on ``path``."""
    for h in self._by_ike.get(ike, ()):
        state = self.children.get(h)
        if state is not None and (target := _child_path(self, state, path)) is not None \
                and (state.remote, state.local) != target:
            return True
    return False


def _start_mover(self: IkeService, ike: int, move: IkeMove) -> None:
    """The mover now, or when the budget allows (one timer per IKE SA)."""
    wait = _wait(self, move)
    if wait > 0:
        self._later(wait, lambda: _start_mover(self, ike, move))
        return
    _spawn_mover(self, ike, move)


def _wait(self: IkeService, move: IkeMove) -> float:
    """Seconds until the budget allows the next batch (<= 0: now)."""
    return move.due - (MOVE_BURST - 1) * MOVE_INTERVAL - self.move_clock()


def _spawn_mover(self: IkeService, ike: int, move: IkeMove) -> None:
    self._spawn(self._changes.queue(_move_children(self, ike, move)))


def _child_path(self: IkeService, state: ChildState, path: IkePath) -> tuple[Endpoint, Endpoint] | None:
    """Where a Child SA's (peer, our end) go on ``path``; None if it cannot go there."""
    (peer, port), local_ip, local_port = path
    try:
        moved = Endpoint(ipaddress.ip_address(peer), port)
    except ValueError:
        return None
    if moved.family != state.remote.family:
        return None   # an SA keeps its family: a change needs new Child SAs (MOBIKE's job)
    return moved, self._endpoint(moved.addr.version, local_port, local_ip)


async def _move_children(self: IkeService, ike: int, move: IkeMove) -> None:
    """Move IKE SA ``ike``'s Child SAs to ``move.path``, the latest target each time round, until
    they are there; then ``move.busy`` goes, with no await between the last look at ``path`` and
    that (a move asked for meanwhile is never lost).  A MIGRATE the worker refuses or leaves
    unanswered is tried again, MIGRATE_TRIES times in all with a doubling pause (MIGRATE_BACKOFF),
    counted each time (metric tunsec_child_sa_migrate_failures) and logged at the first failure
    and at the end; if it never goes through, the Child SA is rekeyed: its successor is installed
    where its IKE SA is now, so the Child SAs follow the IKE SA either way."""
    while self._moves.get(ike) is move:   # else the IKE SA went, or the worker restarted
        target = move.path
        await _route_ready(self, ike, target)
        async with self._changes:
            if move.path[0][0] != target[0][0]:
                # it moved on while we waited (for the route, or for the lock): that address's route first,
                # waited for outside the lock, which every peer's install takes (review revsweep3 F4); the
                # addresses it passed meanwhile go as after a batch (review revsweep4 F3)
                _sweep_passed(self, ike, move)
                continue
            path = move.path
            moved, retry = await _batch(self, ike, move, path)
        if moved:
            _log_move(self, moved)
        if retry:   # its pause (MIGRATE_BACKOFF: 1 s at least) paces it, not the budget
            self._later(retry, lambda: _spawn_mover(self, ike, move))
            return
        if move.path == path:
            move.busy = False
            left, move.left = move.left, set()
            _sweep_left(self, left)
            return
        _sweep_passed(self, ike, move)
        if _wait(self, move) > 0:
            _start_mover(self, ike, move)   # the newest target, when the budget allows
            return


def _sweep_passed(self: IkeService, ike: int, move: IkeMove) -> None:
    """A batch ended with no retry and the peer moved on meanwhile: the Child SAs are at the batch's path
    (but for those given up, rekeyed where they are).  The addresses of ``move.left`` none of them is at,
    nor the IKE SA now, are swept now, not only once the peer stops moving: a peer moving on during each
    batch would keep the route of every address it passed (review revsweep3 F3)."""
    if not move.left:
        return
    still = {move.path[0][0]} | {str(s.remote.addr) for h in self._by_ike.get(ike, ()) if (s := self.children.get(h))}
    passed = move.left - still
    move.left -= passed
    _sweep_left(self, passed)


@dataclasses.dataclass(slots=True)
class LeftSweep:
    """The sweeps of addresses MOBIKE SAs left (_sweep_left), one per MOVE_INTERVAL at most, gateway-wide."""

    last: float = -math.inf                  # when the last one ran (IkeService.move_clock)
    timer: asyncio.TimerHandle | None = None   # the one that waits for its turn (IkeService._later)


def _sweep_left(self: IkeService, left: Iterable[str]) -> None:
    """A MOBIKE SA and its Child SAs left these addresses: if one held an exclude route, the routes no live
    IKE SA keeps nor connection has go (exclude_gate.ExcludeGate.sweep), not when some routed IKE SA
    ends, days later on a quiet gateway: the host's traffic to the address left (inside a tunnel's
    network, someone else's by then) would leave by the uplink in clear (review revsweep2 F3).  After the
    MIGRATE, not at the move: the Child SAs' ESP goes there until then.  Paced (LeftSweep): a sweep is a
    pass over every IKE SA, and a peer whose IKE SA has no Child SA moves as often as it answers a
    return routability check, its moves paced by no batch (review revsweep3 F2); one asked for meanwhile
    runs when the interval is over, for all (the addresses' routes held until then)."""
    gate = self.sockets.gate
    if gate is not None and left and gate.may_sweep(left):
        _paced_sweep(self)


def _paced_sweep(self: IkeService) -> None:
    """The sweep now, or when MOVE_INTERVAL since the last one is over (one timer)."""
    pace, now = self._left_sweep, self.move_clock()
    wait = pace.last + MOVE_INTERVAL - now
    if wait <= 0:
        self._unlater(pace.timer)   # (fired, or about to: this sweep is its)
        pace.timer, pace.last = None, now
        self.sweep_excludes()
    elif pace.timer is None or pace.timer not in self._timers:   # fired (a little early: uvloop's ms clock), or
        # cancelled by a worker restart: its handle is no longer in _timers either way (review revsweep4 F1)
        pace.timer = self._later(wait, lambda: _paced_sweep(self))


async def _route_ready(self: IkeService, ike: int, path: IkePath) -> None:
    """Wait while the peer's new address waits for its exclude route (services/ike/exclude_gate.py):
    an address the TUN's routes capture (a peer inside its own remote_ts moving within it,
    address_role.own_network; any peer beside a full tunnel) gets its host route before our first IKE
    datagram to it, and the Child SAs' ESP must not go there earlier either, or it goes into the TUN
    (dropped there as esp_loop, csrc/ownesp.c; review revmobfix F1).  A NAT float moves the IKE SA
    at once and its answer is what the gate holds while the route goes in, so the MIGRATE could
    otherwise come first.  A MOBIKE move of ESP comes after the return routability check, whose
    datagrams leave by the uplink (unproven then, review revfull3 F2): _proven_move has the gate
    expect the address once it is proven, and while the IKE SA is there the wait asks again if the
    gate had no room then (WAITING_MAX: nothing else would, review revsweep3 F1).  Not longer than
    ROUTE_WAIT: a stuck netlink job leaves the move as it was before."""
    gate = self.sockets.gate
    if gate is None:
        return
    try:
        ip = parse_ip(path[0][0])
    except ValueError:
        return
    loop = asyncio.get_running_loop()
    until = loop.time() + ROUTE_WAIT
    while (ip in gate.waiting or (_proven_at(self, ike, path) and gate.unrouted(ip))) and loop.time() < until:
        await asyncio.sleep(ROUTE_POLL)


def _proven_at(self: IkeService, ike: int, path: IkePath) -> bool:
    """IKE SA ``ike`` is an authenticated MOBIKE SA whose peer proved ``path``'s address (_proven_move): a
    float without MOBIKE proves nothing, and gets no exclude route by waiting for one."""
    sa = self._ike_sa(ike)
    return sa is not None and _proves(self, sa) and sa.esp_remote[0] == path[0][0]


async def _batch(self: IkeService, ike: int, move: IkeMove, path: IkePath) -> tuple[list[ChildState], float]:
    """One round of MIGRATEs (under ``_changes``): the Child SAs moved, and the pause before a
    retry if one failed (0: none)."""
    children = [self.children[h] for h in sorted(self._by_ike.get(ike, ())) if h in self.children]
    for state in children:
        await self._install_answered(state)
    moved: list[ChildState] = []
    retry = 0.0
    for state in children:
        target = _child_path(self, state, path)
        if target is None or state.handle not in self.children or state.handle in move.gave_up \
                or (state.remote, state.local) == target:
            continue
        if not moved and not retry:   # the batch's first MIGRATE: it takes its share of the budget
            move.due = max(move.due, self.move_clock()) + MOVE_INTERVAL
        self.child_index.move(state, target)
        err = await _migrate(self, state, *target)
        self.child_index.move(state, None)
        if err is None:
            log.debug("%s: CHILD_SA %s %08x_i %08x_o follows its peer to %s:%d, from %s%s", state.conn,
                      state.child, state.spi_in, state.spi_out, target[0].addr, target[0].port, target[1].addr,
                      f" (after {state.migrate_failures} failed tries)" if state.migrate_failures else "")
            state.migrate_failures = 0
            moved.append(state)
            continue
        pause = _migrate_failed(self, state, target[0], target[1], err)
        if pause is None:
            move.gave_up |= {state.handle}
        else:
            retry = max(retry, pause)
    return moved, retry


def _log_move(self: IkeService, moved: list[ChildState]) -> None:
    """One line per batch, rate-limited per peer: the peer decides how often it moves."""
    first = moved[0]
    if (held := self._move_log.admit(self.log_peer(self._ike_sa(first.ike), first.conn))) is None:
        return
    log.info("%s: %d CHILD_SA(s) follow their peer to %s:%d, from %s%s", first.conn, len(moved),
             first.remote.addr, first.remote.port, first.local.addr, suffix(held))


async def _migrate(self: IkeService, state: ChildState, moved: Endpoint, local: Endpoint) -> WorkerError | None:
    """MIGRATE a Child SA's inbound and (if added) outbound SA to the peer's new endpoint and our new
    end (ADDR_NEW_LOCAL only when ours changed); under ``_changes``.  Inbound first (named by its SPI
    alone), then outbound (named by (spi_out, the peer it had)); if that fails the inbound SA goes
    back, so after a failure both are where ``state`` says (a retry, or a move back, finds them)."""
    w = self.worker()
    old, old_local = state.remote, state.local
    new_local = local if local != old_local else None
    try:
        await w.request(lambda r: pipe.Migrate(r, state.spi_in, Direction.IN, moved, None, new_local))
    except WorkerError as err:
        return err
    if state.out_installed:   # the worker knows the outbound SA by its peer (spi_out, old)
        try:
            await w.request(lambda r: pipe.Migrate(r, state.spi_out, Direction.OUT, moved, old, new_local))
        except WorkerError as err:
            back = old_local if new_local is not None else None
            with contextlib.suppress(WorkerError):
                await w.request(lambda r: pipe.Migrate(r, state.spi_in, Direction.IN, old, None, back))
            return err
    self.child_index.set_remote(state, moved)
    state.local = local
    if state.standby is not None:
        state.standby = dataclasses.replace(state.standby, remote=moved, local=local)
    return None


def _migrate_failed(self: IkeService, state: ChildState, moved: Endpoint, local: Endpoint,
                    err: WorkerError) -> float | None:
    """A MIGRATE failed: the pause before trying again (the newest target then), or None after
    MIGRATE_TRIES: the Child SA is rekeyed instead."""
    state.migrate_failures += 1
    self.events.migrate_failures[(state.conn, state.child)] += 1
    what = (f"{state.conn}: moving CHILD_SA {state.child} {state.spi_in:08x}_i {state.spi_out:08x}_o to "
            f"{moved.addr}:{moved.port} from {local.addr}")
    # a line per Child SA, and a peer may keep moving: rate-limited as the batch lines are (_log_move)
    peer = self.log_peer(self._ike_sa(state.ike), state.conn)
    if state.migrate_failures < MIGRATE_TRIES:
        if state.migrate_failures > 1:   # once per move: its retries fail the same way
            log.debug("%s failed again: %s", what, err)
        elif (held := self._move_log.admit(peer)) is not None:
            log.warning("%s failed: %s; trying again (%d tries at most)%s", what, err, MIGRATE_TRIES, suffix(held))
        return MIGRATE_BACKOFF * float(2 ** (state.migrate_failures - 1))
    if (held := self._move_log.admit(peer)) is not None:
        log.error("%s failed %d times (last: %s); rekeying it: the new Child SA goes where its IKE SA is%s",
                  what, state.migrate_failures, err, suffix(held))
    state.migrate_failures = 0
    sa = self._ike_sa(state.ike)
    if sa is not None and state.handle in self.children:
        self.spi_pool.with_spi(functools.partial(self._rekey_child, sa, state.unique_id))
        self._pump()
    return None
