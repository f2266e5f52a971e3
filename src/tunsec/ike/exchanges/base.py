"""What every exchange shares: the Task interface, outcomes, the responder table entry,
the INVALID_KE_PAYLOAD retry and payload lookups.

The transport (``sa.py``) knows tasks only through this interface: what a task needs
(``runs_while_connecting``), where it goes in the queue (``jumps_queue``), where its
retransmissions go (``resend_to``), what its giving up means (``on_give_up``), whether it rekeys
(``rekeys_ike_sa``, ``rekeying``) and what it leaves to the IKE SA that replaced its own
(``handover``). It never tests for a concrete task class.
"""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import TypeVar

from ..constants import ERROR_NOTIFY_LIMIT, NotifyType
from ..eap.relay import RelayReply
from ..events import Address, DownReason
from ..message import IdPayload, NotifyPayload, Payload
from ..state import ChildSa, IkeRekey, IkeSaState, State

P = TypeVar("P")


class Outcome(Enum):
    DONE = auto()  # the exchange finished; start the next task
    RETRY = auto()  # send a new request with the same message ID (COOKIE, INVALID_KE)
    CLOSE = auto()  # the IKE SA is gone (failure or delete); events already emitted
    AUTH_FAILED = auto()  # we rejected the peer: tell it (INFORMATIONAL) and close
    REDIRECT = auto()  # authenticated, but the gateway sent us elsewhere (RFC 5685 §6): delete the IKE SA


class GiveUp(Enum):
    """What it means when a task's request is never answered (retransmissions exhausted)."""

    PEER_UNREACHABLE = auto()  # the peer is gone: report PeerUnreachable, close the IKE SA
    DEAD_PEER = auto()  # the same, found by a liveness check (dead peer detection)
    CLOSE = auto()  # we were closing anyway (our DELETE of the IKE SA): close, nothing to report


class Task(ABC):
    """The initiator side of one exchange."""

    exchange: int
    runs_while_connecting = False  # may go out before the IKE SA is authenticated (IKE_SA_INIT, IKE_AUTH)
    on_give_up = GiveUp.PEER_UNREACHABLE
    # one queued or in flight is enough (a liveness check), and it is moot unless the SA is established
    coalesces = False
    # queued ahead of the requests already waiting: a MOBIKE return routability check, so that none of
    # them goes first to the peer's new address before it answered (RFC 4555 §3.5)
    jumps_queue = False
    rekeys_ike_sa = False  # a rekey of the IKE SA: moot once the SA was replaced; re-armed if refused
    # creates, rekeys or deletes a Child SA: while one is out, the peer's rekey of the IKE SA is
    # refused with TEMPORARY_FAILURE (RFC 7296 §2.25.1), so the answer cannot be lost in the switch
    changes_children = False
    # the peer answered TEMPORARY_FAILURE: try again soon (RFC 7296 §2.25), also a rekey asked for by hand
    try_again = False

    @property
    def rekeying(self) -> ChildSa | None:
        """The Child SA this task rekeys: moot once that one is gone; re-armed if refused."""
        return None

    @property
    def creates(self) -> str | None:
        """The child config of the new Child SA (not a rekey) this request asks for, if any."""
        return None

    @property
    def deletes(self) -> Sequence[ChildSa]:
        """The Child SAs this request deletes (a DELETE of ours, queued or unanswered): the peer's rekey
        of one is refused for now (sa_responder.rekey_of_deleted)."""
        return ()

    @abstractmethod
    def build(self, st: IkeSaState) -> list[Payload]:
        """The payloads of the request; called once per (re)try, never per retransmission."""

    @abstractmethod
    def process(self, st: IkeSaState, payloads: Sequence[Payload]) -> Outcome:
        """Handle the response."""

    def abort(self, st: IkeSaState) -> None:  # noqa: B027 - optional hook
        """The IKE SA goes away while this exchange is outstanding."""

    def followups(self) -> list[Task]:
        """Exchanges to start once this one is done (e.g. deleting a rekeyed Child SA)."""
        return []

    def resend_to(self, st: IkeSaState, first: Address) -> Address:
        """Where a retransmission of this request goes (``first``: where it was first sent): where
        the peer is now, as the peer may have floated meanwhile (RFC 7296 §2.23)."""
        return st.remote_addr

    def handover(self, st: IkeSaState) -> list[Task]:
        """The IKE SA was replaced by a rekey while this request was out, so it will not be
        answered here: undo what it built and return what the new IKE SA should do instead."""
        self.abort(st)
        return []

    def retry(self) -> Task | None:
        """The peer refused this request for now (``try_again``): the request to send a few seconds
        later (RFC 7296 §2.25), or None (a rekey, re-armed by its timer instead; a bounded retry
        that ran out)."""
        return None

    def takes_peer_delete(self, st: IkeSaState, child: ChildSa) -> bool:
        """The peer's DELETE names ``child`` while this request is out: True if this request took it
        out of ``st.children`` and reports it down itself when it ends (our rekey of it, which the
        peer may have answered already: create_child_sa.CreateChildTask)."""
        return False

    def peer_deleted_unknown(self, spi: int) -> None:  # noqa: B027 - optional hook
        """The peer's DELETE names ``spi`` (an outbound SPI of ours) for no Child SA we have while this
        request is out: it may be the one the peer's answer to us will choose (create_child_sa)."""

    def peer_withdrew(self, child: ChildSa) -> None:  # noqa: B027 - optional hook
        """The peer deletes ``child``, the new Child SA of its own rekey that we answered, while this
        request is out (informational._withdrawn): if this rekeys the same Child SA, there is no
        collision to settle with it (create_child_sa.CreateChildTask)."""

    def yield_to_peer_rekey(self) -> IkeRekey | None:
        """The peer deletes the IKE SA while this request is out: the new IKE SA of the peer's
        rekey that replaces ours after a collision (RFC 7296 §2.8.2), or None to just close."""
        return None


class KeRetry(Enum):
    NONE = auto()  # the response has no INVALID_KE_PAYLOAD
    RETRY = auto()  # switched to the group the peer asks for: send the request again
    REFUSED = auto()  # it asks for a group we do not offer (or one we tried already, or none)


class KeGroups:
    """The key exchange group of an exchange that sends KE, and the INVALID_KE_PAYLOAD retry
    (RFC 7296 §1.2, §1.3): the peer names the group it wants; we retry once per group we offer.
    A group already tried is refused: a peer (or, in IKE_SA_INIT, anyone who saw our SPI) naming
    our offered groups in turn would otherwise keep us making key pairs for ever."""

    def __init__(self, offered: Iterable[int], first: int | None = None) -> None:
        ordered = list(offered)
        self.offered = frozenset(ordered)
        self.group: int | None = first if first is not None else (ordered[0] if ordered else None)
        self._tried: set[int] = set() if self.group is None else {self.group}

    def follow(self, payloads: Sequence[Payload]) -> KeRetry:
        invalid_ke = find_notify(payloads, NotifyType.INVALID_KE_PAYLOAD)
        if invalid_ke is None:
            return KeRetry.NONE
        if len(invalid_ke.data) != 2:
            return KeRetry.REFUSED
        (group,) = struct.unpack("!H", invalid_ke.data)
        if group not in self.offered or group in self._tried:
            return KeRetry.REFUSED
        self.group = group
        self._tried.add(group)
        return KeRetry.RETRY

    @staticmethod
    def requested(payloads: Sequence[Payload]) -> str:
        """The group an INVALID_KE_PAYLOAD asks for, for messages."""
        invalid_ke = find_notify(payloads, NotifyType.INVALID_KE_PAYLOAD)
        if invalid_ke is None or len(invalid_ke.data) != 2:
            return "no group"
        return f"group {struct.unpack('!H', invalid_ke.data)[0]}"


@dataclass
class Response:
    """A responder's answer: the payloads and whether the IKE SA ends after sending it."""

    payloads: list[Payload] = field(default_factory=list)
    close: bool = False
    reason: DownReason = DownReason.NEGOTIATION_FAILED
    followups: list[Task] = field(default_factory=list)  # requests to start afterwards
    # no answer yet: it waits for the AAA backend (see Awaiting); the other fields are unused
    awaits: Awaiting | None = None
    spis_ignored: int = 0  # SPIs of the peer's Delete payloads not looked at (the transport counts them)
    # the peer's CREATE_CHILD_SA refused for now (create_child_sa._for_now; the transport counts it)
    refused_for_now: bool = False
    # Child SAs whose rekey timer runs again soon (the peer withdrew its rekey of them: the transport
    # re-arms them, sa_timers.rearm)
    rearm: tuple[ChildSa, ...] = ()


class Awaiting(ABC):
    """A request whose answer waits for a result from outside the engine (an EAP relay round,
    ``auth = eap-radius``). The transport holds the request, drops its retransmissions (the
    peer's window stays at it) and, when ``IkeSa.relay_reply`` delivers the backend's answer,
    sends what :meth:`resume` returns as the response."""

    @abstractmethod
    def resume(self, st: IkeSaState, reply: RelayReply) -> Response:
        """The response, now that the backend answered."""


Respond = Callable[[IkeSaState, Sequence[Payload], "Task | None"], Response]


@dataclass(frozen=True)
class Responder:
    """One row of the responder table (``responders.RESPONDERS``): who answers a request.

    ``respond(st, payloads, pending)`` gets the decrypted payloads and our own outstanding
    request (``pending``, to notice collisions); ``shape`` picks among rows of one exchange
    type by the payloads (an IKE SA rekey is a CREATE_CHILD_SA with IKE proposals).
    """

    exchange: int
    states: frozenset[State]
    respond: Respond
    shape: Callable[[Sequence[Payload]], bool] | None = None
    responder_only: bool = False  # only the IKE SA's original responder answers it (IKE_SA_INIT, IKE_AUTH)

    def serves(self, exchange: int, state: State, is_initiator: bool, payloads: Sequence[Payload]) -> bool:
        if exchange != self.exchange or state not in self.states or (self.responder_only and is_initiator):
            return False
        return self.shape is None or self.shape(payloads)


def find(payloads: Sequence[Payload], cls: type[P]) -> P | None:
    for payload in payloads:
        if isinstance(payload, cls):
            return payload
    return None


def find_all(payloads: Sequence[Payload], cls: type[P]) -> list[P]:
    return [p for p in payloads if isinstance(p, cls)]


def find_id(payloads: Sequence[Payload], initiator: bool) -> IdPayload | None:
    """The first IDi (``initiator``) or IDr payload (a loop, not next(genexpr): a generator left
    unfinished is closed with a GeneratorExit raised in it, ~3k instructions)."""
    for payload in payloads:
        if isinstance(payload, IdPayload) and payload.initiator == initiator:
            return payload
    return None


def find_notify(payloads: Sequence[Payload], ntype: int) -> NotifyPayload | None:
    for payload in payloads:
        if isinstance(payload, NotifyPayload) and payload.type == ntype:
            return payload
    return None


def any_notify(payloads: Sequence[Payload], ntypes: Container[int]) -> bool:
    """Whether a Notify payload of one of ``ntypes`` is there (one pass for several types)."""
    for payload in payloads:   # noqa: SIM110 (any(<genexpr>) would resume a generator per payload)
        if isinstance(payload, NotifyPayload) and payload.type in ntypes:
            return True
    return False


def error_notify(payloads: Sequence[Payload]) -> NotifyPayload | None:
    for payload in payloads:
        if isinstance(payload, NotifyPayload) and payload.type < ERROR_NOTIFY_LIMIT:
            return payload
    return None


def notify(ntype: NotifyType, data: bytes = b"") -> NotifyPayload:
    return NotifyPayload(ntype, data)


# errors in an IKE_AUTH or CREATE_CHILD_SA response that concern only the Child SA
CHILD_ERRORS = frozenset(
    {
        NotifyType.NO_PROPOSAL_CHOSEN,
        NotifyType.TS_UNACCEPTABLE,
        NotifyType.SINGLE_PAIR_REQUIRED,
        NotifyType.INTERNAL_ADDRESS_FAILURE,
        NotifyType.FAILED_CP_REQUIRED,
        NotifyType.INVALID_SELECTORS,
        NotifyType.NO_ADDITIONAL_SAS,
        NotifyType.TEMPORARY_FAILURE,
        NotifyType.INVALID_KE_PAYLOAD,
    }
)
