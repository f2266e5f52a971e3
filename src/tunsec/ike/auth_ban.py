"""Sources refused after repeated failed authentications (``tunsec { auth_failures* }``; docs/operations.md,
"Logs").

Counted: an IKE SA the peer opened that then failed OUR check of its authentication (never "the peer
refused our authentication": a gateway refusing us is not an attacker, and a peer could otherwise make
us ban an address by refusing us).  What a third party can cause for a victim's address: nothing that
counts, short of being on the path.  An IKE_AUTH is only taken from the address its IKE_SA_INIT came
from (sa_responder.foreign) and must carry our random 64-bit responder SPI, which went only to that
address: a spoofer who cannot read the victim's traffic cannot fail an authentication in its name.
(One on the path can drop the victim's traffic anyway.)

A source is what the DoS limits count a request under (dos_source.source_key): an IPv4 address, an
IPv6 prefix (``ipv6_source_prefix``, /64 by default; with its scope for a link-local one), so that an
IPv6 host changing its address within its /64 at each try is still one source (review AE F1).  After
``max`` failures within ``window`` seconds (counted from the first of them), the source's IKE_SA_INIT
requests are dropped unanswered for ``ban`` seconds, doubled for each ban it earned before while its
strikes were kept (at most MAX_BAN_FACTOR times).  Nothing else of the source's is touched: its
established IKE SAs, their rekeys and its half-open ones go on.  Each ban is one log line naming the
source (the prefix for IPv6) which the shipped fail2ban filter matches (<SUBNET>); a wider prefix's
says so: how many of its sources failed, at what threshold (review revban2 F3).

Memory: at most ``cap`` sources (CAP, 4096: some 300 bytes each, ~1.2 MB) however many fail, and the
strikes of at most STRIKES_PER_SOURCE x ``cap`` sources whose ban ended (~100 bytes each, ~1.6 MB).
Past ``cap`` the source that failed least recently and is not banned is forgotten first; a ban in
force never is (review revban F4: a flood of new bans lifted the oldest, an attacker's own first one):
with the table full of bans a new source is not counted (``uncounted``: ``tunsec status``
auth_ban_uncounted) until one ends. An attacker who fills it has ``cap`` sources banned at once; each
counted failure costs its sender a reachable address and a full IKE_SA_INIT and IKE_AUTH. A repeat
offender's strikes are kept apart from the counts (review revban F5: others' failures pushed them out
of the one table, so its next ban was short again), forgotten only after 4 x ``cap`` later ends of
bans.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import OrderedDict
from dataclasses import dataclass

from tunsec.ike.dos_source import DEFAULT_IPV6_SOURCE_PREFIX, source_key
from tunsec.ike.link_local import is_link_local

log = logging.getLogger("tunsec.ike")

CAP = 4096
MAX_BAN_FACTOR = 16   # a repeat offender's ban grows to 16 times ``ban`` at most
# an IPv6 source's wider prefixes, each banned at this many times ``max`` failures of its /64s
WIDER = ((56, 4), (48, 16))
# a wider IPv6 prefix one of whose sources authenticated within this long is someone's shared one (a
# carrier's or a campus's /64-per-device pool): not banned for its parts' failures meanwhile
VOUCHED_SECONDS = 86400.0
STRIKES_PER_SOURCE = 4   # strikes kept for 4 x cap sources: others' bans must end 4 x cap times to forget one
_IKE_SA_INIT, _INITIATOR, _RESPONSE = 34, 0x08, 0x20


@dataclass(frozen=True)
class AuthBanSettings:
    """``tunsec { auth_failures, auth_failures_window, auth_failures_ban }``: ``max`` 0 turns it off.
    The defaults let a NAT'd office's users mistype their passwords a few times each (ten failures in
    ten minutes from one address) before it is refused for ten minutes."""

    max: int = 10
    window: float = 600.0
    ban: float = 600.0


@dataclass
class _Entry:
    failures: int
    first: float                  # the window's start: the first failure counted in it
    until: float | None = None    # banned until then
    strikes: int = 0              # bans it earned, this one included (banned entries only)


@dataclass(frozen=True)
class Ban:
    """A ban in force (``tunsec status``: auth_bans): the source, until when (the service's monotonic
    clock), and the failures that earned it."""

    source: str
    until: float
    failures: int


class AuthBan:
    """The table: ``failed`` after each counted failure, ``refuses`` for each incoming datagram."""

    def __init__(self, settings: AuthBanSettings | None = None, ipv6_prefix: int = DEFAULT_IPV6_SOURCE_PREFIX,
                 cap: int = CAP, tag: str = "") -> None:
        self.settings = settings or AuthBanSettings()
        # after AUTHENTICATION_FAILED in its ban lines: a ban not for fail2ban (services/ike/worker_path.py)
        self.tag = tag
        self.ipv6_prefix = ipv6_prefix
        self.cap = cap
        self.dropped = 0     # IKE_SA_INIT requests refused (also the endpoint's ike_drops.auth_banned)
        self.bans_total = 0
        self.uncounted = 0   # failures of new sources not counted: the table full of bans in force
        # source -> entry, least recently failed first; banned ones in _banned (oldest ban first)
        self._counting: OrderedDict[str, _Entry] = OrderedDict()
        self._banned: OrderedDict[str, _Entry] = OrderedDict()
        # source -> bans it earned, once its last one ended (oldest end first): its next ban is longer
        self._strikes: OrderedDict[str, int] = OrderedDict()
        # wider IPv6 prefix -> when one of its sources last authenticated (oldest first; cap of them)
        self._vouched: OrderedDict[str, float] = OrderedDict()

    def failed(self, ip: str, now: float) -> Ban | None:
        """Count a failure of ``ip``; the ban it starts, if it does (logged): its source's, or a wider
        IPv6 prefix's (WIDER)."""
        s = self.settings
        if s.max <= 0:
            return None
        started = None
        for key, factor in self._keys(ip):
            if (banned := self._banned.get(key)) is not None and banned.until is not None and now < banned.until:
                # a half-open SA opened before the ban failed: counted into it, not into a wider prefix
                # (which counts its parts not banned: a /56 is banned for five /64s or more, not one)
                banned.failures += 1
                break
            if factor > 1 and now - self._vouched.get(key, -VOUCHED_SECONDS) < VOUCHED_SECONDS:
                continue   # someone else's too (succeeded): only the source itself is banned
            started = self._count(key, now, factor) or started
        return started

    def succeeded(self, ip: str, now: float) -> None:
        """An IKE SA ``ip`` opened authenticated: its wider IPv6 prefixes are shared with someone
        legitimate, so for VOUCHED_SECONDS their parts' failures ban only those parts (review revban2
        F1: one attacker rotating over its /64s banned a carrier's /48 with its other customers).
        Nothing else changes: its own source's count stays (a success does not reset anyone's)."""
        for key, factor in self._keys(ip):
            if factor > 1:
                self._vouched[key] = now
                self._vouched.move_to_end(key)
        while len(self._vouched) > self.cap:
            self._vouched.popitem(last=False)

    def _keys(self, ip: str) -> list[tuple[str, int]]:
        """What a failure of ``ip`` counts under, with its threshold's factor: the source, and for a
        global IPv6 source its wider prefixes too (review revban F3: an attacker rotating over the /64s
        of its /56 or /48 was never banned)."""
        key = source_key(ip, self.ipv6_prefix)
        keys = [(key, 1)]
        if "/" in key and not is_link_local(ip):   # IPv6, not link-local (fe80::/64 is all of it), scoped or not
            keys += [(source_key(ip, bits), factor) for bits, factor in WIDER if bits < self.ipv6_prefix]
        return keys

    def _count(self, key: str, now: float, factor: int) -> Ban | None:
        """Count a failure under ``key`` (a source, or a wider prefix at ``factor`` times ``max``); the
        ban it starts, if it does."""
        s = self.settings
        most = s.max * factor
        if (banned := self._banned.get(key)) is not None:   # over (failed: one in force ends the count)
            self._unban(key, banned)
        entry = self._counting.pop(key, None)
        if entry is None or now - entry.first >= s.window:
            entry = _Entry(0, now)
        if not self._room(now):   # a new source, the table full of bans in force: none is lifted for it
            # a failure not counted, once: its wider prefixes' entries are not failures of their own
            # (review revbanobs F2: one IPv6 failure added 3)
            self.uncounted += factor == 1
            return None
        entry.failures += 1
        if entry.failures < most:
            self._counting[key] = entry
            return None
        strikes = self._strikes.pop(key, 0)
        entry.until = now + s.ban * min(2 ** strikes, MAX_BAN_FACTOR)
        entry.strikes = strikes + 1
        self._banned[key] = entry
        self.bans_total += 1
        ban = Ban(key, entry.until, entry.failures)
        # the source before anything else, no text the peer chose: the shipped fail2ban filter's <SUBNET>
        extra = {"remote": key, "ban_seconds": round(entry.until - now)}
        if factor == 1:
            log.error("banned: AUTHENTICATION_FAILED%s from %s: the peer failed authentication %d times in %ds, "
                      "its IKE_SA_INIT requests dropped for %ds", self.tag, key, entry.failures, now - entry.first,
                      entry.until - now, extra=extra)
            return ban
        # a wider prefix's: no one peer failed, many of its sources did (review revban2 F3: it read as a
        # /64's); how many, and the threshold it reached, say why the whole prefix is refused
        parts = self._parts(key, now)
        log.error("banned: AUTHENTICATION_FAILED%s from %s: %d of its /%ds failed authentication %d times in %ds "
                  "(a /%s is banned at %d x auth_failures of its parts), its IKE_SA_INIT requests dropped for %ds",
                  self.tag, key, parts, self.ipv6_prefix, entry.failures, now - entry.first, key.rpartition("/")[2],
                  factor, entry.until - now, extra={**extra, "parts": parts})
        return ban

    def _parts(self, wider: str, now: float) -> int:
        """How many sources of the prefix ``wider`` failed and are on record (counting, within their
        window, or banned): a pass over the table, once per wider ban (each costs its parts ``factor``
        x ``max`` whole exchanges)."""
        bits = int(wider.rpartition("/")[2])
        suffix = f"/{self.ipv6_prefix}"
        window = self.settings.window
        return sum(1 for table in (self._counting, self._banned) for k, e in table.items()
                   if k.endswith(suffix) and "%" not in k and (e.until is not None or now - e.first < window)
                   and source_key(k[:-len(suffix)], bits) == wider)

    def refuses(self, data: bytes, ip: str, now: float) -> bool:
        """Whether ``data`` from ``ip`` is an IKE_SA_INIT request of a banned source (counted, to be
        dropped: nothing is kept of it).  Only the header is looked at: anything else goes on."""
        if not self._banned or self.settings.max <= 0 or len(data) < 28 or data[18] != _IKE_SA_INIT \
                or data[19] & (_INITIATOR | _RESPONSE) != _INITIATOR:
            return False
        for key, _ in self._keys(ip):
            entry = self._banned.get(key)
            if entry is None or entry.until is None:
                continue
            if now >= entry.until:
                self._unban(key, entry)
                continue
            self.dropped += 1
            return True
        return False

    def bans(self, now: float) -> list[Ban]:
        """The bans in force, soonest to end first (those over are lifted; none while max is 0)."""
        if self.settings.max <= 0:
            return []
        for key, entry in list(self._banned.items()):
            if entry.until is not None and now >= entry.until:
                self._unban(key, entry)
        return sorted((Ban(k, e.until or now, e.failures) for k, e in self._banned.items()),
                      key=lambda b: (b.until, b.source))

    def __len__(self) -> int:
        return len(self._counting) + len(self._banned)

    def lift(self, target: str) -> list[str]:
        """``tunsec unban TARGET`` (an address or a network, ``%scope`` for a link-local one): the bans
        in force of every source that overlaps it are lifted, and their counts and strikes forgotten
        (the operator vouched for it: its next failures count from nothing).  The sources whose ban
        was lifted, in the order they were banned; ValueError for a target that is no address."""
        want = _network(target)
        lifted = [k for k in self._banned if _overlaps(k, want)]
        for key in lifted:
            del self._banned[key]
        for table in (self._counting, self._strikes):
            for key in [k for k in table if _overlaps(k, want)]:
                del table[key]
        for key in lifted:
            log.warning("ban of %s lifted by the operator (tunsec unban %s)", key, target)
        return lifted

    def _unban(self, key: str, entry: _Entry) -> None:
        """A ban over: the source counts afresh, its strikes kept apart (a repeat offender's next ban is
        longer), the oldest forgotten past STRIKES_PER_SOURCE x ``cap`` of them."""
        del self._banned[key]
        self._strikes[key] = entry.strikes
        self._strikes.move_to_end(key)
        while len(self._strikes) > STRIKES_PER_SOURCE * self.cap:
            self._strikes.popitem(last=False)

    def _room(self, now: float) -> bool:
        """Room for one more entry (the one being counted was taken out): the least recently failed
        count forgotten if need be, never a ban in force (those over are lifted first: a table full
        of bans costs a pass over it per failure, as rare as a failed IKE_AUTH)."""
        if len(self) >= self.cap and not self._counting:
            self.bans(now)
        while len(self) >= self.cap:
            if not self._counting:
                return False
            self._counting.popitem(last=False)
        return True


def _network(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]:
    """A source key or an operator's target as (network, scope); ValueError if it is neither."""
    net, _, scope = text.partition("%")
    if "/" in scope:   # "fe80::1%eth0/64": the scope written before the prefix length
        scope, _, bits = scope.partition("/")
        net = f"{net}/{bits}"
    return ipaddress.ip_network(net, strict=False), scope


def _overlaps(key: str, want: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]) -> bool:
    try:
        have = _network(key)
    except ValueError:   # a key that is no address (only from a caller that was not a socket)
        return False
    (a, a_scope), (b, b_scope) = have, want
    return a.version == b.version and a.overlaps(b) and (a_scope == b_scope or not b_scope)
