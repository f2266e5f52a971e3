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
"""

from __future__ import annotations

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
