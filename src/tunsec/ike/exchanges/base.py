"""What every exchange shares: the Task interface, outcomes and payload lookups."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import TypeVar

from ..constants import ERROR_NOTIFY_LIMIT, NotifyType
from ..events import DownReason
from ..message import NotifyPayload, Payload
from ..state import IkeSaState

P = TypeVar("P")


class Outcome(Enum):
    DONE = auto()  # the exchange finished; start the next task
    RETRY = auto()  # send a new request with the same message ID (COOKIE, INVALID_KE)
    CLOSE = auto()  # the IKE SA is gone (failure or delete); events already emitted
    AUTH_FAILED = auto()  # we rejected the peer: tell it (INFORMATIONAL) and close


class Task(ABC):
    """The initiator side of one exchange."""

    exchange: int

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


@dataclass
class Response:
    """A responder's answer: the payloads and whether the IKE SA ends after sending it."""

    payloads: list[Payload] = field(default_factory=list)
    close: bool = False
    reason: DownReason = DownReason.NEGOTIATION_FAILED
    followups: list[Task] = field(default_factory=list)  # requests to start afterwards


def find(payloads: Sequence[Payload], cls: type[P]) -> P | None:
    for payload in payloads:
        if isinstance(payload, cls):
            return payload
    return None


def find_all(payloads: Sequence[Payload], cls: type[P]) -> list[P]:
    return [p for p in payloads if isinstance(p, cls)]


def find_notify(payloads: Sequence[Payload], ntype: int) -> NotifyPayload | None:
    for payload in payloads:
        if isinstance(payload, NotifyPayload) and payload.type == ntype:
            return payload
    return None


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
