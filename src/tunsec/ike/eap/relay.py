"""The gateway as an EAP pass-through authenticator (RFC 3748 §2.3, RFC 3579): the EAP
method runs between the client and an AAA server (RADIUS, ``auth = eap-radius``); the
gateway only carries the packets and takes the MSK from the server's final answer.

Sans-I/O like the rest of the engine: :class:`EapRelay` says what to send the backend
(:class:`RelayAsk`) and takes its answer (:class:`RelayReply`) whenever the caller has it;
the I/O (RADIUS over UDP) lives in :mod:`tunsec.radius`, at the edge.

EAP-Identity: with ``eap_id = %any`` the gateway asks for the identity itself and passes
the client's answer on; otherwise it starts the conversation with an EAP-Response/Identity
of the configured identity (identifier 0), as strongSwan's eap-radius plugin does.

Which user the server authenticated the edge tells (``RelayReply.user``, :mod:`tunsec.radius.proven`):
with a tunnelled method (PEAP, TTLS) the EAP identity outside the tunnel is whatever the client
said, and servers do not tie it to the credentials inside by default. Without one the result says
the identity is unproven (``EapResult.unproven``).
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from ...radius.limits import most_eap
from ..events import Accepted
from ..identity import Identity
from ..secret import Secret
from . import identity
from .mschapv2 import EapResult, OpCode, describe_failure, failure_code
from .packet import EapCode, EapError, EapPacket, EapType


class RelayOutcome(enum.Enum):
    CHALLENGE = "challenge"  # the server sent the next EAP request (Access-Challenge)
    ACCEPT = "accept"  # EAP-Success and the MSK (Access-Accept)
    REJECT = "reject"  # the server refused the user (Access-Reject)
    FAILED = "failed"  # no usable answer (no server answered, none is configured...)


@dataclass(frozen=True)
class RelayAsk:
    """An EAP response of the client (or the identity we start with) for the backend."""

    identity: bytes  # the EAP identity (RADIUS User-Name)
    eap: bytes = field(repr=False)


@dataclass(frozen=True)
class RelayReply:
    """The backend's answer to one :class:`RelayAsk`. ``reason`` is for the log: it names the
    server and says why, never a secret; ``msk`` and ``groups`` (the user's group memberships,
    printable names, which a connection's ``remote.groups`` may require) only with ACCEPT, as
    ``user``: the user the backend proved, the EAP identity or another (None: nobody, the EAP
    identity is the client's word only), and ``accepted``: what the Accept said of the session
    (None: none of it), which the IKE SA carries until it is up (IkeSaUp.accepted)."""

    outcome: RelayOutcome
    eap: bytes = field(default=b"", repr=False)
    msk: Secret | None = None
    reason: str = ""
    groups: tuple[str, ...] = ()
    user: bytes | None = None
    accepted: Accepted | None = None
    room: int | None = None   # CHALLENGE: the longest EAP response the next request carries (None: not said)


# backend round trips per conversation; more is a loop.  EAP-TLS takes one per ~1 KiB fragment of
# each side's flight: ~10 with small certificates, 20-25 with chains of several KiB each way
# (TLS 1.3 adds one); 32 is strongSwan's eap-tls max_message_count
MAX_ROUNDS = 32
WRONG_PASSWORD = 691   # EAP-MSCHAPv2's E=691 (mschapv2._ERRORS)


@dataclass
class EapRelay:
    """One client's conversation through the gateway.

    ``start()`` gives the first EAP request for the client, or the first ask for the backend;
    ``process(response)`` turns a client's EAP response into an ask (or fails it: one that is not
    the response to the last request, or that this conversation's Access-Request cannot carry: the
    room the last Access-Challenge's reply said, else radius.limits.most_eap);
    ``reply(answer)`` gives the packet for the client and, once decided, the result.
    """

    peer_identity: bytes | None  # None: ask with EAP-Identity first
    rand: Callable[[int], bytes] = os.urandom
    label: str = "EAP-RADIUS"  # names the method in log lines
    _ident: int = 0  # identifier of the last request the client got
    _state: str = "new"
    _rounds: int = 0
    _room: int | None = None   # the room the back end's last reply said (RelayReply.room)
    # the back end's refusals of a wrong password sent in an Access-Challenge (EAP-MSCHAPv2's Failure request,
    # E=691, which asks only for the client's acknowledgement before the Access-Reject): each a failed guess,
    # whatever the client does next (a guesser that stops answering there must still count:
    # ike_auth_eap._BackendRound).  Other codes (648, password expired: the password was right) are left
    # to the Access-Reject, as before (review reveap F1)
    refusals_in_challenge: int = 0
    refusal_pending: bool = False   # the last Access-Challenge was such a refusal: the Reject after it is its end
    refusal_reason: str = ""        # its words for the log (describe_failure)

    @property
    def user(self) -> bytes:
        return self.peer_identity or b""

    def start(self) -> bytes | RelayAsk:
        if self.peer_identity is None:
            self._ident = self.rand(1)[0]
            self._state = "identity"
            return identity.request(self._ident).encode()
        return self._ask(identity.response(0, self.peer_identity).encode())

    def _ask(self, eap: bytes) -> RelayAsk:
        self._state = "asking"
        self._rounds += 1
        return RelayAsk(self.user, eap)

    def fail(self, reason: str) -> tuple[bytes, EapResult]:
        self._state = "done"
        return EapPacket(EapCode.FAILURE, self._ident).encode(), EapResult(False, self.user, reason=reason)

    def process(self, raw: bytes) -> RelayAsk | tuple[bytes, EapResult]:
        """A client's EAP response: relay it, or fail the conversation if it is not one."""
        try:
            pkt = EapPacket.decode(raw)
            if self._state not in ("identity", "relaying"):
                raise EapError(f"EAP response while the conversation is {self._state}")
            if pkt.code != EapCode.RESPONSE or pkt.ident != self._ident:
                raise EapError("EAP packet is not the response to the last request")
            size = len(pkt.encode())   # without trailing bytes beyond its Length
            room = self._room if self._room is not None else most_eap(self.user or b"?")
            if size > room:   # the client's doing: its failure, never our back end's (reviews reveap F1, revlate8 F3)
                raise EapError(f"EAP response of {size} bytes, more than this conversation's Access-Request "
                               f"carries ({room})")
            if self._state == "identity":
                self.peer_identity = identity.parse_response(pkt)
            if self._rounds >= MAX_ROUNDS:
                raise EapError(f"more than {MAX_ROUNDS} EAP rounds")
        except EapError as exc:
            return self.fail(str(exc))
        return self._ask(raw[:size])

    def reply(self, answer: RelayReply) -> tuple[bytes, EapResult | None]:
        """The backend's answer: the EAP packet for the client, and the result once decided."""
        if self._state != "asking":
            return self.fail("backend answer without a question")
        if answer.outcome in (RelayOutcome.REJECT, RelayOutcome.FAILED):
            return self.fail(answer.reason)
        try:
            pkt = EapPacket.decode(answer.eap) if answer.eap else None
        except EapError as exc:
            return self.fail(f"{answer.reason}: {exc}")
        if answer.outcome is RelayOutcome.CHALLENGE:
            if pkt is None or pkt.code != EapCode.REQUEST:
                return self.fail(f"{answer.reason}: Access-Challenge without an EAP request")
            self._ident, self._state, self._room = pkt.ident, "relaying", answer.room
            self.refusal_pending = _wrong_password(pkt)
            if self.refusal_pending:
                self.refusals_in_challenge += 1
                self.refusal_reason = describe_failure(pkt.data[4:])
            return answer.eap[: len(pkt.encode())], None
        if answer.msk is None:
            return self.fail(f"{answer.reason}: Access-Accept without MPPE keys (no MSK)")
        if pkt is not None and pkt.code != EapCode.SUCCESS:
            return self.fail(f"{answer.reason}: Access-Accept without EAP-Success")
        self._state = "done"
        out = pkt.encode() if pkt is not None else EapPacket(EapCode.SUCCESS, self._ident).encode()
        msk, user = answer.msk.reveal(), answer.user
        if user is not None:   # the name the back end accepted, maybe another than the client said: it is proven
            return out, EapResult(True, user, msk, peer=Identity.of_user(user), groups=answer.groups)
        return out, EapResult(True, self.user, msk, groups=answer.groups, unproven=user is None)


def _wrong_password(pkt: EapPacket) -> bool:
    """An EAP-MSCHAPv2 Failure request (OpCode 4) with E=691: the server's verdict that the password is wrong."""
    return pkt.type == EapType.MSCHAPV2 and pkt.data[:1] == bytes([OpCode.FAILURE]) and \
        failure_code(pkt.data[4:]) == WRONG_PASSWORD
