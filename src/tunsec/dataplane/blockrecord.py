"""Which of tunsec's prohibit routes are this instance's: a record in its state_dir.

tunsec's prohibit routes (Tun.block, remove_address's stand-ins) carry route protocol 116, which tells
them from other programs' but not one tunsec's from another's: two instances in one network namespace
(two TUNs, two configurations) each took the other's for its own at start and removed those of networks
it did not route, so the other's blocked traffic took the host's routes in clear.

The route's lookup keys cannot tell the instances apart and leave lookups as they are: a metric of its
own lets an equal-prefix host route with a lower metric win over the block; a table of its own needs a
rule, which consulted before main blocks main's longer prefixes too, after main loses to main's default
route; a realm exists for IPv4 only; the protocol is one byte that routing daemons share.  What does is
a route metric no lookup reads: each block carries its TUN's mark (block_mark) as RTAX_REORDERING, kept
by the kernel on IPv4 and IPv6 prohibit routes and dumped with them, and meaningless on a route no
packet passes (TCP reads it only from the route a connection uses).  A TUN name is one instance's in a
network namespace, where the routes are: a block with this TUN's mark is this instance's (review AC F4:
the service user cannot add or change routes, so no record it writes makes another's block look ours).
Each instance also records the networks it blocks (for blocks an older tunsec made without the mark),
one file per TUN and network namespace (a TUN name is one instance's in a namespace; see Netns) in its
state_dir: it outlives a kill -9 and systemd keeps StateDirectory= across a restart, where it removes
RuntimeDirectory= when the service stops. A network is recorded before its route goes in and taken out
after the route went (listed without a route is harmless; a route never without its network), written
atomically and private through the directory's descriptor (safefs), and only from a directory no other
user may change: one who could write the record could have this instance remove another's unmarked
blocks. A start removes only the leftovers with its mark, and unmarked ones its record lists; any other
stays (fail closed). So do the later lifts (Tun.unblock) and blockwatch's look (Tun.owns): another TUN's
block of the same network, its replace having taken the place of ours, is never lifted nor taken for ours.
The service user may still list another instance's network: only an unmarked block
(an older tunsec's) of it goes, and its instance puts it back, marked, when it runs (blockwatch.py). An
IKE-only start makes a missing state_dir (prepare and init-state make it only for manual tunnels);
without a usable one it says so at start.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import socket
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_network

from tunsec.safefs import open_private, read_regular, resolve_private, write_atomic_at

log = logging.getLogger("tunsec.tun")

IPNetwork = IPv4Network | IPv6Network
PREFIX = "prohibit-routes."
MAX_RECORD = 1 << 20   # ~20000 networks


SO_NETNS_COOKIE = 71   # Linux 5.14; not in Python 3.11's socket module
# the initial namespace's fixed inode (PROC_NET_INIT_INO, recent kernels); older ones number every
# namespace from 0xF0000000 up, so no other namespace has it
INIT_NET_INO = 0xEFFFFFF9


def record_name(tun: str, suffix: str = "") -> str:
    return PREFIX + tun + suffix


def block_mark(tun: str) -> int:
    """The RTAX_REORDERING value of TUN tun's prohibit routes: a hash of its name, 31 bits of it (the low
    bit is always set: never 0, no metric, which the kernel leaves out).  Two TUNs of one namespace share it
    with a chance of 2^-31 (a colliding pair of names is found in ~2^16 tries: review revblock F2); their
    names are the configurations' (root's), not the service user's to choose, and a start says so when
    another link of its namespace has a name with its TUN's mark (mark_sharers)."""
    digest = hashlib.blake2b(tun.encode(), digest_size=4, person=b"tunsec-block").digest()
    return int.from_bytes(digest, "big") | 1


def mark_sharers(tun: str) -> list[str]:
    """The other links of this namespace whose name gives tun's mark: a tunsec on one of them would take
    this instance's blocks for its own (and lift them), and this one theirs.  Names only (any link: one
    made later as another instance's TUN is not seen; an error is cheaper than a link's renaming)."""
    mark = block_mark(tun)
    try:
        names = [name for _i, name in socket.if_nameindex()]
    except OSError:
        return []
    return sorted(n for n in names if n != tun and block_mark(n) == mark)


def mark_metrics(tun: str) -> dict[str, int]:
    """pyroute2's metrics= of a prohibit route of TUN tun's."""
    return {"reordering": block_mark(tun)}


def route_mark(r: object) -> int | None:
    """The mark a dumped route carries (pyroute2's rtmsg), None when none (an older tunsec's block)."""
    metrics = r.get_attr("RTA_METRICS")  # type: ignore[attr-defined]
    mark = metrics.get_attr("RTAX_REORDERING") if metrics is not None else None
    return int(mark) if mark else None


@dataclass(frozen=True)
class Netns:
    """The network namespace this instance's routes are in, as its record is named and marked.

    A TUN name is one instance's in a namespace only: instances in two namespaces sharing a state_dir
    (the default) with one TUN name need two records.  suffix is "" in the initial namespace (the usual
    deployment keeps the plain name) and ":ns<inode>" elsewhere: a TUN name holds no ':' (the kernel's
    dev_valid_name), so TUN `t.ns4026532174` of the initial namespace and TUN `t` of that namespace
    have two names (".ns<inode>" before, read once and replaced: legacy).  The kernel reuses a namespace's inode for
    a later one (after the namespace is deleted, or a reboot), whose routes are not those a record lists:
    ident (the boot's id and the namespace's cookie, never reused in a boot) tells the namespace that
    wrote a record from a later one with its name."""

    suffix: str
    ident: str

    @property
    def legacy(self) -> str:
        """The suffix of an older tunsec's record in this namespace ("" in the initial one: unchanged)."""
        return "." + self.suffix[1:] if self.suffix else ""


def this_netns() -> Netns:
    try:   # this thread's: one that entered another namespace (setns) makes its TUN and routes there
        mine = os.stat("/proc/thread-self/ns/net")
    except OSError:   # no /proc: nothing tells namespaces apart, as before records were named by them
        return Netns("", "")
    # only the kernel's fixed inode: PID 1 names a container's (or any PID namespace's) own namespace, which
    # instances in other namespaces would take for theirs too
    initial = mine.st_ino == INIT_NET_INO
    return Netns("" if initial else f":ns{mine.st_ino}", _ident())


def _ident() -> str:
    """boot_id/cookie of this namespace; "" when either cannot be read (then no record is taken for stale)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            cookie = int.from_bytes(s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8), "little")
    except OSError:
        return ""
    return f"{boot}/{cookie}"


@dataclass
class BlockRecord:
    """This instance's record; fd -1 when none can be kept (why says so)."""

    tun: str
    where: str                     # the file's path, for messages
    netns: Netns = Netns("", "")
    fd: int = -1                   # state_dir's descriptor
    why: str = ""
    owner: tuple[int, int] | None = None   # whom root gives the file to (the directory's owner)
    # what the file listed at start: this instance's leftovers, until the start has sorted them out
    inherited: set[IPNetwork] = field(default_factory=set)
    # networks no longer blocked whose prohibit route may still be in the kernel (its delete failed):
    # recorded for this run's life, so that the next start removes what is left of them
    held: set[IPNetwork] = field(default_factory=set)
    written: frozenset[IPNetwork] = frozenset()

    @classmethod
    def open(cls, state_dir: str, tun: str, owner: int | None) -> BlockRecord:
        """The record of TUN tun in state_dir, read; owner: the uid tunsec becomes (it may own state_dir).
        Never raises: without a usable directory nothing is inherited and nothing will be written."""
        ns = this_netns()
        rec = cls(tun, os.path.join(state_dir, record_name(tun, ns.suffix)), ns)
        if sharers := mark_sharers(tun):
            # said, not refused: the other link may be no tunsec's (a chance of 2^-31 for a pair of names)
            log.error("TUN %s's prohibit routes carry the same mark (%#x) as those a tunsec on %s would make: "
                      "two tunsec instances on them would lift each other's blocks (their traffic in clear); "
                      "rename one of the TUNs", tun, block_mark(tun), ", ".join(sharers))
        owners = {os.geteuid(), *(() if owner is None else (owner,))}
        try:
            why = _make_missing(state_dir)
            if why is None:
                why, real = resolve_private(state_dir, owners)
            if why is None:
                why, rec.fd = open_private(real, owners)
        except OSError as err:
            why = err.strerror or str(err)
        if why is not None:   # said at start: a block made later is never the first to say so
            rec.why = f"state_dir {state_dir} cannot hold it: {why}"
            log.warning("tunsec's prohibit routes are not recorded (%s): a prohibit route left by this instance "
                        "killed is not removed at its next start", rec.why)
            return rec
        st = os.fstat(rec.fd)
        if os.geteuid() == 0 and st.st_uid != 0:   # readable by the user this tunsec becomes, next start too
            rec.owner = (st.st_uid, st.st_gid)
        rec._clean_temporary()
        rec.inherited = rec._read(rec.file)
        rec.written = frozenset(rec.inherited)
        rec._migrate()
        return rec

    def _clean_temporary(self) -> None:
        """Temporary files of this record (write_atomic_at's) a crash left before their rename: never
        read, removed (unlink removes a link itself, follows none).  Only this instance writes them, and
        it is starting: none is being written.  Not the legacy name's: in a namespace that is also the
        name of a running TUN `t.ns<inode>` of the initial one (review revops F5), and an older tunsec's
        leftover temporary file is only a file."""
        temp = re.compile(rf"\.{re.escape(self.file)}\.[0-9a-f]{{16}}\.tmp")
        try:
            for entry in os.listdir(self.fd):
                if temp.fullmatch(entry):
                    _unlink(self.fd, entry)
                    log.info("temporary file %s of an interrupted write of the record removed",
                             os.path.join(os.path.dirname(self.where), entry))
        except OSError as err:
            log.warning("temporary files of record %s not removed: %s", self.where, err.strerror or err)

    def _migrate(self) -> None:
        """In a namespace other than the initial one, an older tunsec's record (named with the legacy
        suffix) when there is none of this name: its networks taken over, written under this name, and
        the old file removed, so that an upgrade loses no leftover of it."""
        old = record_name(self.tun, self.netns.legacy)
        if old == self.file or self.inherited or _exists(self.fd, self.file) or not _exists(self.fd, old):
            return
        nets = self._read(old)
        if not nets:   # unreadable, stale (removed), or another TUN's (the initial namespace's t.ns<inode>)
            return
        self.inherited, self.written = nets, frozenset()
        self.keep(set())
        if self.written == frozenset(nets):
            try:
                _unlink(self.fd, old)
            except OSError as err:
                log.warning("older record %s not removed: %s", old, err.strerror or err)
                return
            log.info("record of prohibit routes %s renamed %s (a TUN name may hold '.', not ':')", old, self.file)

    @property
    def file(self) -> str:
        return record_name(self.tun, self.netns.suffix)

    def _read(self, name: str) -> set[IPNetwork]:
        where = os.path.join(os.path.dirname(self.where), name)
        try:
            data = json.loads(read_regular(name, MAX_RECORD, dir_fd=self.fd))
            nets = data["networks"] if isinstance(data, dict) else None
            if not isinstance(nets, list) or not all(isinstance(n, str) for n in nets):
                raise ValueError("not a record of networks")
            if data.get("tun", self.tun) != self.tun:   # an older tunsec's of TUN t in a namespace, read in the
                # initial one by TUN t.ns<inode>: that one's name then (replaced by this TUN's record)
                log.warning("record of prohibit routes %s is TUN %r's, not %s's: none of its networks is taken for "
                            "this instance's", where, data.get("tun"), self.tun)
                return set()
            if self._stale(data.get("netns"), name):
                return set()
            return {ip_network(n) for n in nets}
        except FileNotFoundError:
            return set()
        except (OSError, ValueError, KeyError, RecursionError) as err:   # JSONDecodeError is a ValueError
            why = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            if isinstance(err, RecursionError):   # deeply nested JSON: the parser's own limit, whoever wrote it
                why = "nested too deep to be a record"
            log.warning("record of this instance's prohibit routes %s unreadable (%s): none of tunsec's unmarked "
                        "prohibit routes is taken for this instance's", where, why)
            return set()

    def _stale(self, ident: object, name: str) -> bool:
        """The record is of an earlier namespace with this one's name (its inode reused) or of an earlier boot:
        the routes it lists went with that namespace, and one of these networks blocked in this namespace is
        someone else's.  Removed, so that it is not read again.  A record without ident (an older tunsec's)
        or a start that cannot read its own takes it as before."""
        if not isinstance(ident, str) or not ident or not self.netns.ident or ident == self.netns.ident:
            return False
        log.info("record of prohibit routes %s is of an earlier boot or network namespace (%s, now %s): none of "
                 "its routes is in this one, it is removed", self.where, ident, self.netns.ident)
        try:
            _unlink(self.fd, name)
        except OSError as err:
            log.warning("record of prohibit routes %s not removed: %s", self.where, err.strerror or err)
        return True

    def name(self) -> str:
        """The file, or why there is none."""
        return self.where if self.fd >= 0 else f"none: {self.why}"

    def settle(self) -> None:
        """The start has sorted the leftovers out: those still this instance's are in what keep() gets."""
        self.inherited.clear()

    def keep(self, networks: set[IPNetwork]) -> None:
        """Record networks (with the leftovers not yet sorted out) if that changes the file; a failure is
        logged, never raised: the block itself matters more than its record."""
        want = frozenset(networks | self.inherited | self.held)
        if want == self.written:
            return
        if self.fd < 0:
            if want - self.written:
                new = ", ".join(str(n) for n in sorted(want - self.written, key=_order))
                log.warning("prohibit route of %s not recorded as this instance's (%s): if this tunsec is killed, "
                            "its next start leaves it in place", new, self.why)
            self.written = want
            return
        try:
            if want:
                nets = [str(n) for n in sorted(want, key=_order)]
                body = {"tun": self.tun, "netns": self.netns.ident, "networks": nets}
                write_atomic_at(self.fd, self.file, (json.dumps(body) + "\n").encode(),
                                self.owner if os.geteuid() == 0 else None)
            else:
                _unlink(self.fd, self.file)
        except OSError as err:
            log.warning("record of this instance's prohibit routes %s not written: %s", self.where, err.strerror or err)
            return
        self.written = want

    def hold(self, *networks: IPNetwork) -> None:
        """networks' prohibit routes may have stayed in the kernel though they block nothing any more:
        kept in the record (with the next keep) until the next start sorts them out."""
        self.held.update(networks)

    def usable_after_drop(self, user: str) -> None:
        """After the control process became user: a directory it may not write (root's, not handed over:
        no CAP_CHOWN, or a parent others may change) keeps no record from now on, said once, now."""
        if self.fd < 0 or os.access(".", os.W_OK | os.X_OK, dir_fd=self.fd):
            return
        self.why = f"{os.path.dirname(self.where)} is not writable by {user}"
        log.warning("tunsec's prohibit routes are not recorded from now on (%s): a prohibit route made later and "
                    "left by this instance killed is not removed at its next start; as root: install -d -o %s -m "
                    "0700 %s", self.why, user, os.path.dirname(self.where))
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _make_missing(state_dir: str) -> str | None:
    """state_dir made (0700) when it does not exist and its parent is private to this user (root: root's
    alone), as an IKE-only start finds it without `tunsec prepare` or `tunsec init-state`; why not, or None.
    Made through the parent's descriptor; what it is then is checked as any state_dir's (BlockRecord.open)."""
    if os.path.lexists(state_dir):
        return None
    parent, name = os.path.split(os.path.normpath(os.path.join(os.getcwd(), state_dir)))
    try:
        why, real = resolve_private(parent, {os.geteuid()})
        if why is None:
            why, fd = open_private(real, {os.geteuid()})
    except FileNotFoundError:
        return f"it does not exist, nor does {parent}"
    if why is not None:
        return f"it does not exist and {parent} is no place to make it: {why}"
    try:
        os.mkdir(name, 0o700, dir_fd=fd)
    except FileExistsError:
        pass
    finally:
        os.close(fd)
    log.info("state_dir %s made (0700) for the record of tunsec's prohibit routes", state_dir)
    return None


def _order(n: IPNetwork) -> tuple[int, int, int]:
    return n.version, int(n.network_address), n.prefixlen


def _exists(fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _unlink(fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=fd)
    except OSError as err:
        if err.errno != errno.ENOENT:
            raise
        return
    os.fsync(fd)
