"""When an IKE_SA_INIT request must bring a COOKIE (RFC 7296 §2.6), for ``endpoint.py``.

- Calm-down (strongSwan's COOKIE_CALMDOWN_DELAY): once a threshold is reached, COOKIEs stay
  demanded until it has not been reached for COOKIE_CALMDOWN_DELAY seconds, however far the count
  falls meanwhile: toggling would answer an initiator's retransmitted IKE_SA_INITs some with and
  some without a COOKIE, and it cannot tell which answer the IKE_SA_INIT it completes (and signs in
  AUTH) belongs to. Per address the same, with the times kept per group of addresses
  (COOKIE_CALMDOWN_BUCKETS of them, picked by the address's randomized hash) as strongSwan does: a
  fixed size whatever the sources.
- Requests refused after work (NO_PROPOSAL_CHOSEN, INVALID_KE_PAYLOAD, a bad KE value: proposal
  selection and key checks done, no half-open SA left), and those answered with a REDIRECT (RFC
  5685: nothing kept either; an answer of up to ~300 bytes for a 77-byte request, review revinit
  F1), count as half-open SAs towards both thresholds for COOKIE_CALMDOWN_DELAY seconds (a window
  per slot, in the same fixed-size slots): else a spoofed source could have them answered without
  end and never be asked for a COOKIE.  A gateway that redirects every client so asks for a COOKIE
  once more than cookie_threshold clients (cookie_threshold_ip from one address) came within
  COOKIE_CALMDOWN_DELAY: one more round trip for them.
  strongSwan counts only the IKE SAs it holds.
- A source that returned its COOKIE (a real address: it read our answer) and still has requests
  refused after work (:class:`ProvenRefusals`) has those count as half-open SAs towards its
  ``block_threshold`` too, for COOKIE_CALMDOWN_DELAY seconds: a COOKIE binds SPIi, Ni and the
  address only, so without this it could have the proposal selection done as often as it sends for
  the cookie's lifetime (review revcost F2).  Only those: a spoofed source never returns a COOKIE,
  so nobody else's requests can block an address.  A real client's one INVALID_KE_PAYLOAD retry
  counts 2 (the refusal, then its half-open SA) of the default 5; clients behind one NAT are held
  to it only while their address must bring COOKIEs.
- So does a half-open SA its peer ended at IKE_AUTH before authentication (a NegotiationFailed of
  the IKE SA: UNEXPECTED_NAT_DETECTED, RFC 4555 §3.9), COOKIE or not (the endpoint's _collect_one,
  review revlate5 F1): its peer read our IKE_SA_INIT answer and spoke under its keys from the same
  address (sa_responder.foreign), a real address, which otherwise could have whole IKE_SA_INITs done
  as fast as it sends.  Not a failed authentication (auth_ban.py bans those, allowing a NAT'd office
  its typing errors) nor a half-open timeout (a spoofed source's).
"""

from __future__ import annotations

from collections import OrderedDict

COOKIE_CALMDOWN_DELAY = 10.0
COOKIE_CALMDOWN_BUCKETS = 32   # a power of 2
GLOBAL = 0                     # the slot of cookie_threshold; an address's is 1 + calmdown_bucket(it)


def calmdown_bucket(ip: str) -> int:
    """Which of the COOKIE_CALMDOWN_BUCKETS groups ``ip``'s calm-down time is kept in (``ip``: a
    dos_source.source_key, so an IPv6 prefix has one group, whatever address it sends from). str's hash
    is keyed at random per process (as strongSwan's chunk_hash): a sender cannot tell which
    addresses share a group."""
    return hash(ip) & (COOKIE_CALMDOWN_BUCKETS - 1)


def address_slot(source: str) -> int:
    return 1 + calmdown_bucket(source)


class CookieDemand:
    """Per slot: when its threshold was last reached, and the refusals of its current window."""

    def __init__(self) -> None:
        slots = 1 + COOKIE_CALMDOWN_BUCKETS
        self._reached = [float("-inf")] * slots
        self._refused = [0] * slots
        self._window = [float("-inf")] * slots   # when the slot's window of refusals began

    def required(self, slot: int, count: int, threshold: int, now: float) -> bool:
        """Whether ``count`` half-open SAs (in all, or from the request's address), with the slot's
        recent refusals, demand a COOKIE: at ``threshold`` or above, and for COOKIE_CALMDOWN_DELAY
        seconds after that was last seen (strongSwan's cookie_required; a request during the
        calm-down does not extend it)."""
        if count + self.refusals(slot, now) >= threshold:
            self._reached[slot] = now
            return True
        return now < self._reached[slot] + COOKIE_CALMDOWN_DELAY

    def refused(self, source: str, now: float) -> None:
        """A request from ``source`` (a dos_source.source_key) was refused after work."""
        for slot in (GLOBAL, address_slot(source)):
            if now >= self._window[slot] + COOKIE_CALMDOWN_DELAY:
                self._window[slot], self._refused[slot] = now, 0
            self._refused[slot] += 1

    def refusals(self, slot: int, now: float) -> int:
        """The slot's refusals that count now (those of its window, while it lasts)."""
        return self._refused[slot] if now < self._window[slot] + COOKIE_CALMDOWN_DELAY else 0


class ProvenRefusals:
    """Per source (a dos_source.source_key) proven a real address (it returned a valid COOKIE, or spoke
    under a half-open SA's keys: the module): its requests refused after work in its window of
    COOKIE_CALMDOWN_DELAY seconds (from the first), which count as half-open SAs towards
    block_threshold (the module).  At most ``limit`` sources (the endpoint's
    half_open_limit: as many as the half-open table may hold): windows go as they end, and the
    oldest first when a new source finds the table full (each one a real address that made a round
    trip for its COOKIE: such a crowd is held by the COOKIE thresholds still)."""

    def __init__(self) -> None:
        # source -> (its window's start, refusals in it), in the order the windows began
        self._by_source: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_source)

    def count(self, source: str, now: float) -> int:
        """The refusals of ``source`` that count now."""
        held = self._by_source.get(source)
        return held[1] if held is not None and now < held[0] + COOKIE_CALMDOWN_DELAY else 0

    def refused(self, source: str, now: float, limit: int) -> None:
        """A request of ``source`` proven a real address was refused after work."""
        self._expire(now)
        held = self._by_source.get(source)
        if held is not None:
            self._by_source[source] = (held[0], held[1] + 1)   # in place: its window began when it did
            return
        while self._by_source and len(self._by_source) >= max(limit, 1):
            self._by_source.popitem(last=False)
        self._by_source[source] = (now, 1)

    def _expire(self, now: float) -> None:
        """Forget the windows that ended (the oldest come first)."""
        while self._by_source:
            source, (start, _) = next(iter(self._by_source.items()))
            if now < start + COOKIE_CALMDOWN_DELAY:
                return
            del self._by_source[source]
