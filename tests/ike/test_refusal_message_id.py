"""IkeSa.answer_of/refuse_child (ike/child_refusal.py) refuse only the answer to the request that created
the Child SA (review revresp F2).  A request the peer sends next that fails to decode after its ICV
checked (INVALID_SYNTAX, UNSUPPORTED_CRITICAL_PAYLOAD: sa_responder.on_request's _Refuse) is answered
without being served, so ``unconfirmed`` stays set while the last stored response is that error's: the
refusal was encoded under the later message ID in place of the error, and the success that created the
Child SA left as it was.  Now the Child SA carries the message ID of its request (ChildSa.answered_in)
and the stored response must be the answer to it."""

from __future__ import annotations

import dataclasses

from test_rekey_collision import _pair

from tunsec.ike.constants import ExchangeType, HeaderFlag, NotifyType
from tunsec.ike.exchanges.base import notify
from tunsec.ike.message import Message, decode_header
from tunsec.ike.sk import encrypt_message


def test_the_refusal_is_not_made_of_a_later_requests_error_answer() -> None:
    net, a, b = _pair(0)
    sa_a, sa_b = a.sas[0], b.sas[0]
    old_a = sa_a.children[0]
    sa_a.rekey_child(old_a.unique_id)
    (request,) = net.collect()
    created = decode_header(request.data).message_id
    net.deliver(request)                                 # B answers: its new Child SA is up (answer held)
    new_b = next(c for c in sa_b.children if c.spi_out != old_a.spi_in)
    net.collect()                                        # held: the service's barrier holds it
    # A's next request (a peer with a window over one, or a broken one), authenticated, undecodable inside
    st = sa_a._st
    assert st.tx is not None
    bogus = Message(st.spi_i, st.spi_r, ExchangeType.INFORMATIONAL, HeaderFlag.INITIATOR, created + 1,
                    (notify(NotifyType.TEMPORARY_FAILURE),))
    net.deliver(dataclasses.replace(request, data=encrypt_message(bogus, st.tx, b"\x00\x00\x00\x02")))
    error = net.collect()                                # answered (INVALID_SYNTAX), also held
    assert [decode_header(s.data).message_id for s in error] == [created + 1]
    old = sa_b.answer_of(new_b.unique_id)
    # whatever answer_of gives must be the answer that created the Child SA (message ID ``created``)
    assert old is None or {decode_header(d).message_id for d in old} == {created}, \
        f"answer_of gives the answer to request {decode_header(old[0]).message_id}, not to {created}"
    if old is not None:
        (new,) = sa_b.refuse_child(new_b.unique_id)
        assert decode_header(new).message_id == created   # the refusal answers the request that created it
