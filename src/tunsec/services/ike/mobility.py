"""Peers and ourselves moving: MOBIKE (RFC 4555) on our address changes, NAT rebinding and
MOBIKE updates of the peer (_follow_peers), Child SAs following (MIGRATE)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import ipaddress
import logging
from typing import TYPE_CHECKING

from tunsec.dataplane import pipe
from tunsec.dataplane.client import WorkerError
from tunsec.dataplane.pipe import Direction, Endpoint
from tunsec.ike.constants import HeaderFlag
from tunsec.ike.sa import State
from tunsec.services.addrwatch import AddressWatch
from tunsec.services.ike.state import ChildState

if TYPE_CHECKING:
    from tunsec.services.ike.service import IkeService

log = logging.getLogger("tunsec.ike")

# a MIGRATE the worker refused or left unanswered: tries of one move in all, and the pause before
# the first retry (doubling: 1, 2, 4, 8 s); then the Child SA is rekeyed instead (_migrate_failed)
MIGRATE_TRIES = 5
MIGRATE_BACKOFF = 1.0

_INITIATOR = int(HeaderFlag.INITIATOR)   # an int: int & IntFlag makes a new HeaderFlag each datagram


def _watch_addresses(self: IkeService) -> None:
    """A MOBIKE client (a connection with a remote address and no fixed local one) follows
    its own address changes: each one sends UPDATE_SA_ADDRESSES (RFC 4555 §3.5)."""
    if not any(c.ike.mobike and c.ike.remote_addr and not c.ike.local_addr for c in self.connections.values()):
        return
    watch = AddressWatch(self.local_addresses_changed)
    try:
        watch.start()
    except OSError as err:
        log.warning("MOBIKE: cannot watch the host's addresses (rtnetlink): %s; "
                    "the gateways will not hear of our address changes", err)
        return
    self._addr_watch = watch


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


def _follow_peers(self: IkeService) -> None:
    """NAT rebinding (RFC 7296 §2.23) and MOBIKE (RFC 4555): the engine moves an IKE SA to the
    address and port of the peer's latest authenticated request (with MOBIKE: its
    UPDATE_SA_ADDRESSES, once the new address passed the return routability check:
    ``IkeSa.esp_remote``) and to our address that request arrived on (``IkeSa.local_ip``: the
    peer now reaches us at another of our addresses); the Child SAs it negotiated follow with
    both ends (MIGRATE, no re-keying): outbound ESP to the new mapping, and from our new address
    (on a wildcard-bound worker socket ESP leaves from the SA's local address, so a child left
    behind would keep sending from the old one while that exists).  Checked after input only,
    and only for the IKE SAs that got a datagram (not a pass over all of them per datagram);
    the children only when their IKE SA's path changed."""
    spis, self._peers_to_check = self._peers_to_check, set()
    paths: dict[int, IkePath] = {}
    for spi in spis:
        sa = self.endpoint.sa_by_spi(spi)
        handle = self._ike_handles.get(sa) if sa is not None else None
        if sa is None or handle is None or sa.state in (State.REKEYED, State.CLOSED):
            continue   # no handle: no Child SA of it is installed, nothing to move
        path = (sa.esp_remote, sa.local_ip, sa.local_port)   # MOBIKE: after the return routability check
        if self._ike_peers.get(handle) != path:   # moved, or not seen yet: its children compare
            paths[handle] = self._ike_peers[handle] = path
    if not paths:
        return
    # only the children of the IKE SAs seen here: a pass over every child for each new client
    # made a burst of N clients O(N^2)
    moving = [self.children[h] for ike in paths for h in self._by_ike.get(ike, ()) if h in self.children]
    for state in moving:
        target = _child_path(self, state, paths[state.ike])
        if target is None or (state.moving_to or (state.remote, state.local)) == target:
            continue
        # one mover per Child SA, however often its peer moves (a peer may send UPDATE_SA_ADDRESSES
        # as often as it likes): a mover queued, running or waiting to retry takes the newest target
        mover = state.moving_to is not None
        state.moving_to = target
        if not mover:
            self._spawn(self._changes.queue(self._migrate_child(state)))


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


async def _migrate_child(self: IkeService, state: ChildState) -> None:
    """Move a Child SA to ``state.moving_to`` (the peer's new endpoint, our new end), the newest
    target each time round, until it is there (``moving_to`` None again).  A MIGRATE the worker
    refuses or leaves unanswered is tried again, MIGRATE_TRIES times in all with a doubling pause
    (MIGRATE_BACKOFF), counted each time (metric tunsec_child_sa_migrate_failures) and logged at the
    first failure and at the end; if it never goes through, the Child SA is rekeyed: its successor
    is installed where its IKE SA is now, so the Child SAs follow the IKE SA either way."""
    while True:
        async with self._changes:
            await self._install_answered(state)
            target = state.moving_to
            if target is None or state.handle not in self.children or (state.remote, state.local) == target:
                state.moving_to = None   # there (or gone): the next move starts afresh
                state.migrate_failures = 0
                return
            err = await _migrate(self, state, *target)
        if err is None:
            log.info("%s: CHILD_SA %s %08x_i %08x_o follows its peer to %s:%d, from %s%s", state.conn, state.child,
                     state.spi_in, state.spi_out, target[0].addr, target[0].port, target[1].addr,
                     f" (after {state.migrate_failures} failed tries)" if state.migrate_failures else "")
            state.migrate_failures = 0
            continue   # done, unless its peer moved again meanwhile
        _migrate_failed(self, state, target[0], target[1], err)
        return


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
    state.remote, state.local = moved, local
    if state.standby is not None:
        state.standby = dataclasses.replace(state.standby, remote=moved, local=local)
    return None


def _migrate_failed(self: IkeService, state: ChildState, moved: Endpoint, local: Endpoint, err: WorkerError) -> None:
    """A MIGRATE failed: try again later (the newest target then), or, after MIGRATE_TRIES, rekey."""
    state.migrate_failures += 1
    self.events.migrate_failures[(state.conn, state.child)] += 1
    what = (f"{state.conn}: moving CHILD_SA {state.child} {state.spi_in:08x}_i {state.spi_out:08x}_o to "
            f"{moved.addr}:{moved.port} from {local.addr}")
    if state.migrate_failures < MIGRATE_TRIES:
        delay = MIGRATE_BACKOFF * 2 ** (state.migrate_failures - 1)
        if state.migrate_failures == 1:   # once per move: its retries fail the same way
            log.warning("%s failed: %s; trying again (%d tries at most)", what, err, MIGRATE_TRIES)
        else:
            log.debug("%s failed again: %s", what, err)
        self._later(delay, lambda: self._spawn(self._changes.queue(self._migrate_child(state))))
        return
    log.error("%s failed %d times (last: %s); rekeying it: the new Child SA goes where its IKE SA is",
              what, state.migrate_failures, err)
    state.moving_to = None
    state.migrate_failures = 0
    sa = self._ike_sa(state.ike)
    if sa is not None and state.handle in self.children:
        self.spi_pool.with_spi(functools.partial(self._rekey_child, sa, state.unique_id))
        self._pump()
