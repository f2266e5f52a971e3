"""updown scripts (swanctl.conf ``children.<name>.updown``), with strongSwan's environment.

When a Child SA comes up or goes down, the script runs once per pair of
local/remote selectors the fast path installs (one family, protocols that agree:
at most MAX_SELECTORS, whatever the peer proposed), as strongSwan's updown
plugin runs it once per policy, with the variables of its ``_updown`` convention:

- ``PLUTO_VERB``: ``up-client``/``down-client`` (``-host`` when the local
  selector is our IKE address alone; ``-v6`` suffixed for IPv6 selectors);
- ``PLUTO_VERSION=1.1``, ``PLUTO_CONNECTION`` (the child's name, as strongSwan),
  ``PLUTO_INTERFACE`` (the TUN), ``PLUTO_REQID``, ``PLUTO_PROTO=esp``,
  ``PLUTO_UNIQUEID`` (the IKE SA);
- ``PLUTO_ME``, ``PLUTO_MY_ID``, ``PLUTO_MY_CLIENT`` (addr/prefix),
  ``PLUTO_MY_PORT``, ``PLUTO_MY_PROTOCOL`` and the ``PLUTO_PEER*`` counterparts;
  ``PLUTO_PEER_ID`` is the identity the IKE SA proved (with EAP and ``eap_id``
  the EAP identity), empty when nothing proved one (eap-radius whose server
  named no user after a tunnelled method): ``TUNSEC_PEER_ID_PROVEN`` is ``1``
  or ``0``, and ``TUNSEC_PEER_UNPROVEN_ID`` holds the name such a peer gave;
- ``PLUTO_XAUTH_ID``: the EAP identity the peer proved (as strongSwan's, for
  EAP-authenticated peers; absent when unproven), ``TUNSEC_PEER_GROUP_n``: the
  groups its RADIUS Access-Accept gave it;
- ``PLUTO_MY_SOURCEIP`` (with ``PLUTO_MY_SOURCEIP4_n``/``6_n``) for virtual IPs the
  peer gave us, ``PLUTO_PEER_SOURCEIP`` (``..4_n``/``6_n``) for the ones we leased it;
- ``PLUTO_DNS4_n``/``PLUTO_DNS6_n``: DNS servers received with a virtual IP;
- ``PLUTO_UDP_ENC``: the peer's UDP port (tunsec always encapsulates ESP in UDP);
- ``PLUTO_HOST_ACCESS=1`` with ``hostaccess = yes``.

The peer chooses its identity (and a NUL, a newline or an escape sequence in
it): as strongSwan's chunk_printable, every character that is not printable is
replaced by ``?`` in every value (non-ASCII letters stay, strongSwan replaces
their bytes too).

Unlike strongSwan, which hands a command line to ``sh``, the script runs
without a shell: ``updown`` is split like a shell would split it (quotes) and
executed directly, with only ``PATH``, the ``PLUTO_*`` variables and tunsec's
``TUNSEC_*`` ones in its environment, as the unprivileged user the control
process runs as (no capabilities, no-new-privs). It has ``UPDOWN_TIMEOUT``
seconds; then it is killed with what it started (its process group). It has
finished when it exits (a job it left in the background may keep running); the
first 4 KiB of its output and a failure are logged (scriptrun); the event loop
never waits for it. :class:`Scripts` orders the runs (see there).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import functools
import ipaddress
import logging
import os
import shlex
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from tunsec import scriptfile, scriptrun
from tunsec.ike.config import DEFAULT_MAX_CHILD_SAS
from tunsec.loglimit import LogLimiter, suffix
from tunsec.policy.selector import IPAddress, SelectorError, Ts, selector_pairs
from tunsec.printable import replaced
from tunsec.safefs import Untrusted

log = logging.getLogger("tunsec.updown")

UPDOWN_TIMEOUT = 30.0
# at a stop, how long after it began the down-clients queued by it may run (Scripts.drain): one
# started at once has its whole UPDOWN_TIMEOUT; the shipped systemd unit's TimeoutStopSec and the
# container examples' stop grace (60 s) leave room for it, the DELETEs and the accounting Stops
STOP_WAIT = UPDOWN_TIMEOUT + 5.0
_OUTPUT_LIMIT = 4096    # bytes of a script's output that reach the log
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class UpdownError(ValueError):
    """An updown value that cannot be run (the message says why)."""


def parse_command(text: str) -> tuple[str, ...]:
    """``updown`` as an argv: split like a shell would, without running one; the program path must be absolute."""
    try:
        argv = tuple(shlex.split(text))
    except ValueError as exc:
        raise UpdownError(f"cannot split the command: {exc}") from None
    if not argv:
        raise UpdownError("empty command")
    if not argv[0].startswith("/"):
        raise UpdownError(f"write the script's absolute path ({argv[0]!r} is relative; no shell searches PATH)")
    return argv


@dataclass(frozen=True)
class ChildEvent:
    """What a Child SA's up or down tells its script."""

    up: bool
    child: str
    interface: str
    reqid: int
    ike_unique_id: int
    me: str
    peer: str
    peer_port: int
    my_id: str
    peer_id: str   # the IKE SA's remote identity, as shown (unproven: the name the peer gave)
    local_ts: tuple[Ts, ...]
    remote_ts: tuple[Ts, ...]
    own_vips: tuple[IPAddress, ...] = ()
    peer_vips: tuple[IPAddress, ...] = ()
    dns: tuple[IPAddress, ...] = ()
    hostaccess: bool = False
    # False: nothing vouched for peer_id (eap-radius, a tunnelled method, no User-Name in the Accept)
    peer_id_proven: bool = True
    eap_id: str | None = None   # the EAP identity (None: the peer did not authenticate with EAP)
    groups: tuple[str, ...] = ()   # the groups its RADIUS Access-Accept gave it
    # not told to the script: whose share of the slots its runs take (Scripts); the service's
    # refusal_log.up_key, as its log lines': identity and proof (trusted.peer_of, the same for all the
    # peer's IKE SAs), a name the client chose by connection and source; None: peer_of_event
    peer_key: object = None


def environments(ev: ChildEvent) -> list[dict[str, str]]:
    """One environment per selector pair the fast path installs (as strongSwan's, one per policy):
    never more than it takes, however many selectors the peer got through narrowing."""
    return [_environment(ev, mine, theirs) for mine, theirs in _pairs(ev)]


def _pairs(ev: ChildEvent) -> list[tuple[Ts, Ts]]:
    try:
        return selector_pairs(ev.local_ts, ev.remote_ts)
    except SelectorError:   # such a Child SA is never installed: nothing to tell
        return []


def _environment(ev: ChildEvent, mine: Ts, theirs: Ts) -> dict[str, str]:
    me = ipaddress.ip_address(ev.me)
    is_host = mine.start == mine.end == me
    verb = ("up" if ev.up else "down") + ("-host" if is_host else "-client") + ("-v6" if mine.version == 6 else "")
    env = {
        "PATH": _PATH,
        "PLUTO_VERSION": "1.1",
        "PLUTO_VERB": verb,
        "PLUTO_CONNECTION": ev.child,
        "PLUTO_INTERFACE": ev.interface,
        "PLUTO_REQID": str(ev.reqid),
        "PLUTO_PROTO": "esp",
        "PLUTO_UNIQUEID": str(ev.ike_unique_id),
        "PLUTO_ME": ev.me,
        "PLUTO_MY_ID": ev.my_id,
        "PLUTO_MY_CLIENT": _subnet(mine),
        "PLUTO_MY_PORT": str(_port(mine, theirs, local=True)),
        "PLUTO_MY_PROTOCOL": str(mine.protocol),
        "PLUTO_PEER": ev.peer,
        # a script keys per-user rules on it: a name nothing proved must not look like one that was
        "PLUTO_PEER_ID": ev.peer_id if ev.peer_id_proven else "",
        "TUNSEC_PEER_ID_PROVEN": "1" if ev.peer_id_proven else "0",
        "PLUTO_PEER_CLIENT": _subnet(theirs),
        "PLUTO_PEER_PORT": str(_port(mine, theirs, local=False)),
        "PLUTO_PEER_PROTOCOL": str(theirs.protocol),
        "PLUTO_UDP_ENC": str(ev.peer_port),
    }
    if not ev.peer_id_proven:
        env["TUNSEC_PEER_UNPROVEN_ID"] = ev.peer_id
    elif ev.eap_id is not None:
        env["PLUTO_XAUTH_ID"] = ev.eap_id
    env.update({f"TUNSEC_PEER_GROUP_{i}": group for i, group in enumerate(ev.groups, 1)})
    env.update(_numbered("PLUTO_MY_SOURCEIP", ev.own_vips))
    env.update(_numbered("PLUTO_PEER_SOURCEIP", ev.peer_vips))
    env.update(_numbered("PLUTO_DNS", ev.dns, legacy=False))
    if ev.hostaccess:
        env["PLUTO_HOST_ACCESS"] = "1"
    # all values, not only the identities: whatever the peer gets into one later is covered too
    return {name: replaced(value) for name, value in env.items()}


def _numbered(prefix: str, addrs: Sequence[IPAddress], legacy: bool = True) -> dict[str, str]:
    """``PREFIX`` (the first, strongSwan's legacy variable) and ``PREFIX4_n``/``PREFIX6_n``."""
    env: dict[str, str] = {}
    if addrs and legacy:
        env[prefix] = str(addrs[0])
    counts = {4: 0, 6: 0}
    for addr in addrs:
        counts[addr.version] += 1
        env[f"{prefix}{addr.version}_{counts[addr.version]}"] = str(addr)
    return env


def _subnet(ts: Ts) -> str:
    """addr/prefix of the smallest subnet holding the range (strongSwan's to_subnet)."""
    nets = ts.networks()
    if len(nets) == 1:
        return str(nets[0])
    width = 32 if ts.version == 4 else 128
    diff = int(ts.start) ^ int(ts.end)
    prefix = width - diff.bit_length()
    return str(ipaddress.ip_network(f"{ts.start}/{prefix}", strict=False))


def _port(mine: Ts, theirs: Ts, local: bool) -> int:
    """strongSwan's get_port: ICMP selectors carry type (local) and code (remote) in the ports."""
    if max(mine.protocol, theirs.protocol) in (1, 58):
        port = max(mine.start_port, theirs.start_port)
        return port >> 8 if local else port & 0xFF
    return mine.start_port if local else theirs.start_port


async def run(argv: Sequence[str], env: dict[str, str], timeout: float = UPDOWN_TIMEOUT) -> bool:
    """Run the script once; True if it exited 0. Failures, timeouts and output are logged, never raised."""
    what = f"updown {argv[0]} {env.get('PLUTO_VERB', '')} for {env.get('PLUTO_CONNECTION', '?')}"
    uid = os.geteuid()
    try:   # checked again now: the file checked at load may have been replaced or handed to someone since
        run_as = scriptfile.launch(argv, uid)
    except Untrusted as err:
        if err.fix:   # someone else may change it now
            log.error("%s: not run: %s", what, scriptfile.refusal(f"updown script {argv[0]}", err, uid))
        else:   # gone, not a regular file, replaced while checked, not executable
            log.error("%s: cannot run it: %s", what, err.why)
        return False
    except ValueError as exc:   # a NUL in a name the check passes to the OS (it refuses those it sees)
        log.error("%s: cannot run it: %s", what, exc)
        return False
    fd = run_as.fd
    try:   # the file checked, whatever its name means by now; argv[0] stays the name the script knows
        done = await scriptrun.execute(run_as.argv, timeout, _OUTPUT_LIMIT, executable=f"/proc/self/fd/{fd}",
                                       pass_fds=(fd,), env=env)
    except OSError as exc:
        log.error("%s: cannot run it: %s", what, exc.strerror or exc)
        return False
    except ValueError as exc:   # a NUL in an argument or a value (environments() leaves none)
        log.error("%s: cannot run it: %s", what, exc)
        return False
    finally:
        os.close(fd)
    if done.status is None:
        log.error("%s: killed after %.0f s without finishing", what, timeout)
        return False
    text = done.output.decode(errors="replace").strip()
    if text:
        log.info("%s: %s", what, text.replace("\n", " | "))
    if done.status != 0:
        log.error("%s: exited with status %s", what, done.status)
        return False
    return True


def refusals(children: Iterable[tuple[str, Sequence[str]]], uid: int) -> list[str]:
    """Why each updown script of children ((where, argv): connections.C.children.N.updown) may not run as uid
    (scriptfile: someone but root and uid may change it), once per script; checked at start and reload."""
    return scriptfile.refusals(((f"updown script {argv[0]} ({where})", argv[0]) for where, argv in children if argv),
                               uid)


PARALLEL = 8        # scripts running at once, service-wide (each IKE SA's one at a time)
# of those, one peer's at once (all its IKE SAs: max_ike_sas_per_identity is 8 by default, so its
# scripts hanging would otherwise hold every slot; review revpeerdos F1)
PER_PEER = 2
# ups of one IKE SA waiting for their turn, over the Child SAs it may hold (max_child_sas): a backstop;
# an up dropped with its down leaves the queue, so it holds no more ups than the IKE SA's live Child SAs
QUEUE_SLACK = 32


@dataclass(eq=False)
class _Down:
    """A down queued and not run yet: an up queued after it for any of its addresses waits for it."""

    ranges: tuple[tuple[int, int, int], ...]   # (family, first, last) of its remote selectors
    done: asyncio.Future[None]


class _DownIndex:
    """The queued downs by remote address: after a worker restart every Child SA's down is queued
    at once (thousands of road warriors' hosts, hundreds of site subnets) and each up looks for
    the ones it overlaps, in O(log n + k) rather than a scan of them all.

    Host ranges: a dict by (family, address) and a sorted list of the addresses per family (a
    subnet's up takes the slice inside it).  Wider ranges: one sorted list of (first, last) per
    family and width class (class c: fewer than 2**c addresses), so a range of class c that
    overlaps [lo, hi] starts in [lo - 2**c, hi]: a bisect per class, few false candidates."""

    def __init__(self) -> None:
        self._hosts: dict[tuple[int, int], set[_Down]] = {}
        self._addrs: dict[int, list[int]] = {}   # family -> the addresses of _hosts, sorted
        self._wide: dict[tuple[int, int], list[tuple[int, int, int]]] = {}   # (family, class) -> (lo, hi, id)
        self._by_id: dict[int, _Down] = {}

    def add(self, down: _Down) -> None:
        for fam, lo, hi in down.ranges:
            if lo == hi:
                held = self._hosts.setdefault((fam, lo), set())
                if not held:
                    bisect.insort(self._addrs.setdefault(fam, []), lo)
                held.add(down)
            else:
                self._by_id[id(down)] = down
                bisect.insort(self._wide.setdefault((fam, (hi - lo).bit_length()), []), (lo, hi, id(down)))

    def remove(self, down: _Down) -> None:
        for fam, lo, hi in down.ranges:
            if lo == hi:
                held = self._hosts.get((fam, lo))
                if held is None:
                    continue
                held.discard(down)
                if not held:
                    del self._hosts[(fam, lo)]
                    _take(self._addrs, fam, lo)
            else:
                _take(self._wide, (fam, (hi - lo).bit_length()), (lo, hi, id(down)))
        self._by_id.pop(id(down), None)

    def overlapping(self, ranges: Sequence[tuple[int, int, int]]) -> set[_Down]:
        found: set[_Down] = set()
        for fam, lo, hi in ranges:
            addrs = self._addrs.get(fam, [])
            for addr in addrs[bisect.bisect_left(addrs, lo):bisect.bisect_right(addrs, hi)]:
                found |= self._hosts[(fam, addr)]
            for (f, cls), entries in self._wide.items():
                if f != fam:
                    continue
                first = bisect.bisect_left(entries, (lo - (1 << cls), -1, -1))
                for start, end, key in entries[first:bisect.bisect_right(entries, (hi, 1 << 129, 1 << 64))]:
                    if end >= lo and start <= hi:
                        found.add(self._by_id[key])
        return found


def _take(index: dict[Any, list[Any]], key: object, item: object) -> None:
    """Remove ``item`` from the sorted list ``index[key]`` (and the list once empty)."""
    items = index.get(key)
    if items is None:
        return
    at = bisect.bisect_left(items, item)
    if at < len(items) and items[at] == item:
        del items[at]
    if not items:
        del index[key]


@dataclass(eq=False)
class _Turn:
    """An event queued in its IKE SA's turn, waiting for what comes before it."""

    key: int
    ev: ChildEvent
    before: asyncio.Future[None] | None   # the end of the IKE SA's event queued before it
    end: asyncio.Future[None]             # what the IKE SA's next event waits for
    go: asyncio.Future[bool]              # True: its turn came; False: dropped (an up whose down came first)
    waits: list[asyncio.Future[None]]
    left: int = 0   # of waits, not done yet
    waited: Callable[[asyncio.Future[None]], None] = lambda _: None   # the callback on each of waits
    task: asyncio.Task[Any] | None = None   # its run, once started (drain cancels it at its deadline)
    running: bool = False   # its script runs (it holds its share and a slot)


def peer_of_event(ev: ChildEvent) -> object:
    """The peer whose share of the slots ``ev``'s runs take: ``peer_key`` if the service gave one,
    else its identity as shown, how it was proven, its EAP identity, and for an unproven one its
    address (an unproven name is the client's choice: it shares nobody's share by naming itself)."""
    if ev.peer_key is not None:
        return ev.peer_key
    return (ev.peer_id, ev.peer_id_proven, ev.eap_id, None if ev.peer_id_proven else ev.peer)


class _Shares:
    """A semaphore of ``each`` per peer, made on its first use and dropped when its last user is
    done, so the table holds only the peers with runs waiting or running."""

    def __init__(self, each: int) -> None:
        self._each = each
        self._held: dict[object, tuple[asyncio.Semaphore, int]] = {}   # peer -> (its share, users)

    @contextlib.asynccontextmanager
    async def of(self, peer: object) -> AsyncIterator[None]:
        sem, users = self._held.get(peer, (None, 0))
        if sem is None:
            sem = asyncio.Semaphore(self._each)
        self._held[peer] = (sem, users + 1)
        try:
            async with sem:
                yield
        finally:
            sem, users = self._held[peer]
            if users > 1:
                self._held[peer] = (sem, users - 1)
            else:
                del self._held[peer]

    def __len__(self) -> int:
        return len(self._held)


def _dropped(turn: _Turn) -> bool:
    return turn.go.done() and not turn.go.cancelled() and not turn.go.result()


def _resolve(fut: asyncio.Future[None], _: object) -> None:
    if not fut.done():
        fut.set_result(None)


class Scripts:
    """Runs the updown scripts of the IKE service's Child SAs.

    Each IKE SA's events run one at a time, in the order they came (a Child SA's up before its
    down); IKE SAs run side by side, at most PARALLEL scripts at once and at most PER_PEER of one
    peer's (peer_of_event: all the IKE SAs of one identity), the peer's share taken before a
    slot, so that one waiting for its share holds none: a client whose script hangs holds up its
    own share's events only (until UPDOWN_TIMEOUT), however many IKE SAs it opens; names a client
    picks (group PSK, unproven) share one per source, so clients of those behind one NAT share it.
    Across IKE SAs one order still matters: an up for addresses whose down is queued (a virtual
    IP leased again to another client, a Child SA renegotiated under a new reqid after a worker
    restart) waits for that down, which would otherwise remove the rules the up just made.
    A down whose up has not started yet drops both (the script never heard of that Child SA): a
    client creating and deleting Child SAs while its script hangs queues nothing, and an IKE SA's
    queue holds no more ups than its live Child SAs.  As a backstop, more than its ``cap``
    (max_child_sas) plus QUEUE_SLACK ups waiting are skipped and logged, and ``submit`` says so,
    so that their downs are skipped too."""

    def __init__(self, spawn: Callable[[Coroutine[Any, Any, None]], object],
                 parallel: int = PARALLEL, limit: int | None = None, per_peer: int = PER_PEER) -> None:
        self._spawn = spawn
        self._parallel = parallel
        self._shares = _Shares(per_peer)
        self._limit = limit   # a fixed bound (tests); None: each submit's cap plus QUEUE_SLACK
        self._slots: asyncio.Semaphore | None = None   # made in the running loop, on first use
        self._tails: dict[int, asyncio.Future[None]] = {}   # IKE SA -> the end of its last queued event
        self._ups: dict[int, int] = {}   # IKE SA -> its ups queued and not ended
        self._waiting: dict[tuple[int, ChildEvent], list[_Turn]] = {}   # ups whose turn has not come
        self._downs = _DownIndex()   # the downs queued and not ended, by their remote addresses
        self.skipped = 0
        self._live: set[_Turn] = set()   # queued or running, not ended
        # tasks that may queue a down when they end (expect): what a stop's drain waits for too
        self._coming: set[asyncio.Future[Any]] = set()
        self.closing = False   # tunsec is stopping (drain): no up runs any more
        self._drained = False   # the drain is over: a down queued from now on cannot be waited for
        self._log = LogLimiter(burst=5, period=60.0)   # a client may churn Child SAs while its script hangs

    def expect(self, task: asyncio.Future[Any]) -> None:
        """``task`` may queue a down before it ends: the removal of a Child SA from the worker, its
        down-client queued after it (services/ike/installs._child_down).  A stop's drain waits for
        it as for a queued event: the Child SAs the stop deletes go out of the worker first, and
        a loaded worker may answer after the peer acknowledged the DELETE (h/fixdown)."""
        if not task.done():
            self._coming.add(task)
            task.add_done_callback(self._coming.discard)

    def submit(self, key: int, argv: Sequence[str], ev: ChildEvent, cap: int = DEFAULT_MAX_CHILD_SAS) -> bool:
        """Queue ``ev``'s runs in IKE SA ``key``'s turn (``cap``: the Child SAs it may hold); False:
        an up skipped (the queue is full)."""
        if not ev.up and self._drop_up(key, dataclasses.replace(ev, up=True)):
            return True
        if not ev.up and self._drained:   # past the stop's deadline: it would be killed unseen at the exit
            log.error("updown %s down-client for %s: not run, tunsec is stopping and its %.0f s for the "
                      "down-clients are over", argv[0], ev.child, STOP_WAIT)
            return True
        if ev.up and self.closing:   # its down would not run either
            log.info("updown %s up-client for %s: not run, tunsec is stopping", argv[0], ev.child)
            return False
        loop = asyncio.get_running_loop()
        pairs = _pairs(ev)
        envs = [_environment(ev, mine, theirs) for mine, theirs in pairs]
        ranges = tuple({(theirs.version, int(theirs.start), int(theirs.end)) for _, theirs in pairs})
        down = None
        if ev.up:
            limit = self._limit if self._limit is not None else cap + QUEUE_SLACK
            if self._ups.get(key, 0) >= limit:
                self.skipped += 1
                if (held := self._log.admit()) is not None:
                    log.error("updown %s up-client for %s: not run, %d of the IKE SA's events wait already%s",
                              argv[0], ev.child, limit, suffix(held))
                return False
            self._ups[key] = self._ups.get(key, 0) + 1
            fence = self._downs_of(ranges)
        else:
            fence = []
            down = _Down(ranges, loop.create_future())
            self._downs.add(down)
        end = loop.create_future()
        before, self._tails[key] = self._tails.get(key), end
        turn = _Turn(key, ev, before, end, loop.create_future(),
                     [f for f in (before, *fence) if f is not None and not f.done()])
        self._arm(turn)
        self._live.add(turn)
        self._spawn(self._run(turn, argv, envs, down))
        return True

    def _arm(self, turn: _Turn) -> None:
        """``turn.go`` is set when all it waits for is done; till then an up can be dropped."""
        if not turn.waits:
            turn.go.set_result(True)
            return
        turn.left = len(turn.waits)
        turn.waited = lambda _: self._waited(turn)
        for f in turn.waits:
            f.add_done_callback(turn.waited)
        if turn.ev.up:
            self._waiting.setdefault((turn.key, turn.ev), []).append(turn)

    def _waited(self, turn: _Turn) -> None:
        turn.left -= 1
        if not turn.left and not turn.go.done():
            self._unwait(turn)
            turn.go.set_result(True)

    def _unwait(self, turn: _Turn) -> None:
        ups = self._waiting.get((turn.key, turn.ev))
        if ups is not None and turn in ups:
            ups.remove(turn)
            if not ups:
                del self._waiting[(turn.key, turn.ev)]

    def _drop_up(self, key: int, up: ChildEvent) -> bool:
        """The down of an up still waiting for its turn: neither runs; what waits for the up's end
        waits for what the up waited for."""
        turns = self._waiting.get((key, up))
        if not turns or turns[-1].go.done():   # done: its task is being cancelled (its _finish unhooks it)
            return False
        turn = turns[-1]
        self._unwait(turn)
        for f in turn.waits:
            f.remove_done_callback(turn.waited)
        turn.go.set_result(False)
        self._up_ended(key)
        self._hand_on(turn)
        return True

    def _hand_on(self, turn: _Turn) -> None:
        """A turn that will not run: what waits for its end waits for what it waited for."""
        before = turn.before
        if self._tails.get(turn.key) is turn.end:
            if before is None or before.done():
                del self._tails[turn.key]
            else:
                self._tails[turn.key] = before
        if before is None or before.done():
            turn.end.set_result(None)
        else:
            before.add_done_callback(functools.partial(_resolve, turn.end))

    def _up_ended(self, key: int) -> None:
        if left := self._ups.pop(key, 1) - 1:
            self._ups[key] = left

    async def _run(self, turn: _Turn, argv: Sequence[str], envs: list[dict[str, str]], down: _Down | None) -> None:
        turn.task = asyncio.current_task()
        try:
            if not await turn.go:
                return   # dropped with its down (_drop_up), which did the bookkeeping
            if self._slots is None:
                self._slots = asyncio.Semaphore(self._parallel)
            async with self._shares.of(peer_of_event(turn.ev)), self._slots:
                turn.running = True
                for env in envs:
                    await run(argv, env)
        finally:   # whatever happened (cancelled at shutdown too): what waits for it goes on
            self._live.discard(turn)
            if not _dropped(turn):
                self._finish(turn, down)

    def _finish(self, turn: _Turn, down: _Down | None) -> None:
        if turn.ev.up:
            self._up_ended(turn.key)
        if not turn.go.done() or turn.go.cancelled():   # cancelled while waiting (the task's cancel cancels go)
            self._unwait(turn)
            for f in turn.waits:
                f.remove_done_callback(turn.waited)
            turn.go.cancel()
            self._hand_on(turn)   # the IKE SA's order holds: the next waits for what this one waited for
        else:
            if self._tails.get(turn.key) is turn.end:
                del self._tails[turn.key]
            turn.end.set_result(None)
        if down is not None:
            self._downs.remove(down)
            down.done.set_result(None)

    def _downs_of(self, ranges: Sequence[tuple[int, int, int]]) -> list[asyncio.Future[None]]:
        """The downs queued now for any address of ``ranges``."""
        return [d.done for d in self._downs.overlapping(ranges)]

    async def drain(self, deadline: float) -> int:
        """tunsec stops: no more ups; until the loop's clock reaches ``deadline`` the events queued
        (the downs of every Child SA the stop ended), and those the tasks ``expect`` was given queue
        meanwhile, run; then those left are cancelled (a running script's process group killed) and
        counted in the log, as is a down queued later.  The downs not run (or not to their end)."""
        self.closing = True
        loop = asyncio.get_running_loop()
        while (self._live or self._coming) and (left := deadline - loop.time()) > 0:
            await asyncio.wait([*(t.end for t in self._live), *self._coming], timeout=left)
        self._drained = True
        turns = list(self._live)
        downs = [t for t in turns if not t.ev.up]
        if downs:
            log.error("updown: %d down-client(s) not run at the stop, %d of them killed while running: they had "
                      "%.0f s (what their up-clients set up stays)", len(downs), sum(t.running for t in downs),
                      STOP_WAIT)
        tasks = [t.task for t in turns if t.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:   # each kills its script's process group, then waits for its exit (scriptrun)
            await asyncio.wait(tasks)
        return len(downs)
