"""Who answers which request: the one table the transport (``sa.py``) dispatches from.

A request is served by the first row whose exchange type, IKE SA state and payload
shape match; a request no row serves gets INVALID_SYNTAX (an authenticated request
is always answered, or the peer's window would stall). IKE_SA_INIT is in the table
too: the transport hands it over unencrypted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..constants import ExchangeType, NotifyType
from ..message import Payload
from ..state import IkeSaState, State
from . import create_child_sa, ike_auth, ike_sa_init, informational, mobike, rekey_ike
from .base import Responder, Response, Task, notify


def _ike_sa_init(st: IkeSaState, payloads: Sequence[Payload], pending: Task | None) -> Response:
    return ike_sa_init.respond(st, payloads)


def _ike_auth(st: IkeSaState, payloads: Sequence[Payload], pending: Task | None) -> Response:
    return ike_auth.respond(st, payloads)


def _informational(st: IkeSaState, payloads: Sequence[Payload], pending: Task | None) -> Response:
    return informational.respond(st, payloads, pending)


def _mobike(st: IkeSaState, payloads: Sequence[Payload], pending: Task | None) -> Response:
    return mobike.respond(st, payloads)


def _not_on_a_rekeyed_sa(st: IkeSaState, payloads: Sequence[Payload], pending: Task | None) -> Response:
    # a Child SA made with this SA's keys would outlive them: ask for it on the new one
    return Response([notify(NotifyType.TEMPORARY_FAILURE)])


def _not_while_deleting(st: IkeSaState, payloads: Sequence[Payload], pending: Task | None) -> Response:
    # our DELETE of the IKE SA is out: a Child SA (or new IKE SA) made now would go with it; as
    # strongSwan's child_create/ike_rekey build_r answer, the peer may ask again elsewhere
    return Response([notify(NotifyType.TEMPORARY_FAILURE)])


def _not_yet(st: IkeSaState, payloads: Sequence[Payload], pending: Task | None) -> Response:
    # our IKE_AUTH's answer has not come yet, but the peer's request (its rekey of the Child SA that
    # answer brings, a worker restart's at the peer) overtook it: asked again, it finds the Child SA
    # (RFC 7296 §2.25); INVALID_SYNTAX would end the peer's rekey for good (review revauth R1)
    return Response([notify(NotifyType.TEMPORARY_FAILURE)])


def _unless_redirected(respond: Callable[[IkeSaState, Sequence[Payload], Task | None], Response],
                       ) -> Callable[[IkeSaState, Sequence[Payload], Task | None], Response]:
    """A client we redirected in IKE_AUTH (RFC 5685 §6) gets no Child SA, and no new IKE SA by a rekey:
    it is to go elsewhere, and this IKE SA only waits for its DELETE."""
    def serve(st: IkeSaState, payloads: Sequence[Payload], pending: Task | None) -> Response:
        if st.redirected_to is not None:
            return Response([notify(NotifyType.NO_ADDITIONAL_SAS)])
        return respond(st, payloads, pending)
    return serve


_ALIVE = frozenset({State.ESTABLISHED, State.DELETING, State.REKEYED})

RESPONDERS: tuple[Responder, ...] = (
    Responder(ExchangeType.IKE_SA_INIT, frozenset({State.IDLE}), _ike_sa_init, responder_only=True),
    Responder(ExchangeType.IKE_AUTH, frozenset({State.CONNECTING}), _ike_auth, responder_only=True),
    Responder(ExchangeType.CREATE_CHILD_SA, frozenset({State.ESTABLISHED}), _unless_redirected(rekey_ike.respond),
              shape=rekey_ike.is_rekey_request),
    Responder(ExchangeType.CREATE_CHILD_SA, frozenset({State.ESTABLISHED}),
              _unless_redirected(create_child_sa.respond)),
    Responder(ExchangeType.CREATE_CHILD_SA, frozenset({State.REKEYED}), _not_on_a_rekeyed_sa),
    Responder(ExchangeType.CREATE_CHILD_SA, frozenset({State.DELETING}), _not_while_deleting),
    Responder(ExchangeType.CREATE_CHILD_SA, frozenset({State.CONNECTING}), _not_yet),
    Responder(ExchangeType.INFORMATIONAL, frozenset({State.ESTABLISHED}), _mobike, shape=mobike.is_mobike_request),
    Responder(ExchangeType.INFORMATIONAL, _ALIVE, _informational),
)


def responder_for(
    exchange: int, state: State, is_initiator: bool, payloads: Sequence[Payload]
) -> Responder | None:
    # a loop, not next(genexpr): the generator left unfinished would be closed with a GeneratorExit
    # raised in it (~3k instructions; every request comes here)
    for r in RESPONDERS:
        if r.serves(exchange, state, is_initiator, payloads):
            return r
    return None
