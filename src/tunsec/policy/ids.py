"""The id spaces the SPD and SAD share: reqids, policy ids and priority bands.

Manual tunnels and IKE Child SAs put policies into one SPD and link them to
outbound SAs by reqid, so every id comes from one :class:`IdSpace`: no two
owners can ever hold the same reqid or policy id, whoever asks first.

- A reqid names one tunnel: a manual tunnel, one IKE Child SA together with
  the Child SAs that rekey it (the newest outbound SA of a reqid is used), or
  one child config's trap policies (a reqid no SA ever gets, so its packets
  raise ACQUIRE).  Two peers' Child SAs never share a reqid.
- A policy id is the handle of one SPD entry.
- Priorities come in bands, lower first: manual tunnels (configured keys are
  what the operator pinned), then negotiated Child SAs, then trap policies
  (which only stand in until a Child SA covers the traffic).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

U32_MAX = 0xFFFFFFFF


class Band(IntEnum):
    """Priority bands of the SPD (lower first); a band spans BAND_WIDTH values."""

    MANUAL = 1
    IKE_CHILD = 2
    TRAP = 3


BAND_WIDTH = 1 << 20


def priority(band: Band, offset: int = 0) -> int:
    """A priority inside band; offset orders entries within it (lower first)."""
    if not 0 <= offset < BAND_WIDTH:
        raise ValueError(f"priority offset {offset} outside 0..{BAND_WIDTH - 1}")
    return band * BAND_WIDTH + offset


class IdsExhausted(RuntimeError):
    """Every reqid or policy id is in use."""


@dataclass
class _Pool:
    """Ids 1..hi, handed out in increasing order; released ones are reused only after a full
    cycle, so a stale reference (a late reply, a log line) rarely names a new owner."""

    what: str
    hi: int = U32_MAX
    used: set[int] = field(default_factory=set)
    next: int = 1

    def take(self) -> int:
        if len(self.used) >= self.hi:
            raise IdsExhausted(f"all {self.hi} {self.what}s are in use")
        while self.next in self.used:
            self.next = self.next % self.hi + 1
        value = self.next
        self.used.add(value)
        self.next = value % self.hi + 1
        return value

    def release(self, value: int) -> None:
        self.used.discard(value)


@dataclass
class IdSpace:
    """One per daemon: shared by manual tunnels and the IKE service."""

    reqids: _Pool = field(default_factory=lambda: _Pool("reqid"))
    policy_ids: _Pool = field(default_factory=lambda: _Pool("policy id"))

    def reqid(self) -> int:
        return self.reqids.take()

    def policy_id(self) -> int:
        return self.policy_ids.take()

    def release_reqid(self, reqid: int) -> None:
        self.reqids.release(reqid)

    def release_policy_ids(self, ids: list[int] | tuple[int, ...]) -> None:
        for i in ids:
            self.policy_ids.release(i)
