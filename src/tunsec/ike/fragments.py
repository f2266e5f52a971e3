"""IKE fragmentation (RFC 7383): when we split a message, and reassembly of the peer's.

Negotiation, as strongSwan does it (swanctl ``fragmentation``): unless the mode is
``no``, IKE_SA_INIT carries IKEV2_FRAGMENTATION_SUPPORTED (the responder answers
with it only if the initiator sent it). Messages after IKE_SA_INIT that do not fit
``fragment_size`` (the whole IP datagram, strongSwan's ``charon.fragment_size``) are
sent in fragments with ``yes`` if the peer announced support, always with ``force``,
never with ``accept`` or ``no``. Fragments from the peer are accepted in every mode
(strongSwan does the same).

Reassembly keeps one message per direction of an IKE SA (the peer's request, and
the response to ours: the window is one). Each fragment is verified (its ICV, with
the SA's keys) before it gets here (RFC 7383 §2.6), so nothing unauthenticated is
stored. Bounds: ``MAX_FRAGMENTS`` fragments, ``MAX_MESSAGE`` bytes of plaintext,
``REASSEMBLY_TIMEOUT`` seconds after the first fragment. A fragment of a newer
message starts over (the transport accepts only the message ID it expects, so a
different one is newer); so does a larger Total Fragments (the peer re-fragmented
for a smaller path MTU); a smaller Total Fragments is dropped (§2.6).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Literal

from .constants import IKE_PORT, MAX_IKE_MESSAGE
from .message import SkfPayload
from .sk import MAX_FRAGMENTS

FragmentationMode = Literal["yes", "accept", "force", "no"]

DEFAULT_FRAGMENT_SIZE = 1280  # strongSwan's charon.fragment_size: whole IP datagram, IPv4 and IPv6
# fragment_size = 0: the family's minimum (strongSwan's "address family specific default")
_FAMILY_FRAGMENT_SIZE = {4: 576, 6: 1280}
MAX_MESSAGE = MAX_IKE_MESSAGE  # plaintext bytes of a reassembled message, as of a whole one
REASSEMBLY_TIMEOUT = 30.0  # seconds an incomplete message is kept after its first fragment
_IP_HEADER = {4: 20, 6: 40}
_UDP_HEADER = 8
_NON_ESP_MARKER = 4


def ip_version(ip: str) -> int:
    """4 for an IPv4 address, else 6 (the larger header, never too big: IPv6 and anything
    unparseable).  inet_pton, not ipaddress: this runs for every IKE message an SA sends."""
    try:
        socket.inet_pton(socket.AF_INET, ip)
    except (OSError, ValueError):
        return 6
    return 4


def max_message_len(fragment_size: int, remote_ip: str, local_port: int, remote_port: int) -> int:
    """The largest IKE message that fits an IP datagram of ``fragment_size`` bytes (0: 576
    for IPv4, 1280 for IPv6), as strongSwan computes it: no IP options, the non-ESP marker
    unless either port is 500."""
    version = ip_version(remote_ip)
    size = (fragment_size or _FAMILY_FRAGMENT_SIZE[version]) - _IP_HEADER[version] - _UDP_HEADER
    if IKE_PORT not in (local_port, remote_port):
        size -= _NON_ESP_MARKER
    return max(1, size)


@dataclass
class FragmentStats:
    """Counters of one endpoint (shared by its IKE SAs)."""

    messages_fragmented: int = 0  # messages we sent in fragments
    fragments_sent: int = 0  # their fragments (each retransmission counts again)
    messages_reassembled: int = 0  # messages of the peer put back together
    fragments_received: int = 0  # verified fragments stored for reassembly
    fragments_dropped: int = 0  # failed ICV, duplicate, over a bound, or of an incomplete message that expired


class FragmentRejected(Exception):
    """A verified fragment that is not stored (the message says why; for a debug log)."""


@dataclass
class Reassembly:
    """The fragments of one message received so far (one direction of one IKE SA)."""

    message_id: int | None = None
    total: int = 0
    first_payload: int = 0
    started: float = 0.0
    size: int = 0
    parts: dict[int, bytes] = field(default_factory=dict)
    abandoned: int | None = None  # message ID given up as too large: its other fragments are dropped too

    @property
    def deadline(self) -> float | None:
        """When the incomplete message is dropped; None if nothing is held."""
        return self.started + REASSEMBLY_TIMEOUT if self.message_id is not None else None

    def clear(self) -> int:
        """Forget what is held; returns how many fragments that was."""
        held = len(self.parts)
        self.message_id, self.total, self.first_payload, self.size = None, 0, 0, 0
        self.parts = {}
        return held

    def add(self, message_id: int, fragment: SkfPayload, plain: bytes, now: float) -> tuple[int, bytes] | None:
        """Store a verified fragment's plaintext; the whole message (first payload type,
        plaintext) once complete, else None. Raises FragmentRejected if not stored."""
        if fragment.total > MAX_FRAGMENTS:
            raise FragmentRejected(f"{fragment.total} fragments announced, at most {MAX_FRAGMENTS} accepted")
        if message_id == self.abandoned:
            raise FragmentRejected("of a message abandoned as too large")
        if message_id != self.message_id or fragment.total > self.total:
            self.clear()
            self.message_id, self.total, self.started = message_id, fragment.total, now
        elif fragment.total < self.total:
            raise FragmentRejected(f"total {fragment.total} below the {self.total} announced before")
        if fragment.number in self.parts:
            raise FragmentRejected(f"duplicate fragment {fragment.number}")
        if self.size + len(plain) > MAX_MESSAGE:
            self.clear()
            self.abandoned = message_id
            raise FragmentRejected(f"message larger than {MAX_MESSAGE} bytes; reassembly abandoned")
        self.parts[fragment.number] = plain
        self.size += len(plain)
        if fragment.number == 1:
            self.first_payload = fragment.first_payload
        if len(self.parts) < self.total:
            return None
        whole = (self.first_payload, b"".join(self.parts[n] for n in range(1, self.total + 1)))
        self.clear()
        return whole
