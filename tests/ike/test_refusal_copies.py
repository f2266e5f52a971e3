"""IkeSa.answer_copies: how many copies of the answer that created a Child SA the caller took from the
engine (the answer and each resend of it, also to another port), so that the service refuses that answer
only while it holds them all (install_failed.refused_answer; review revresp F1)."""

from __future__ import annotations

import dataclasses

from test_rekey_collision import _pair

from tunsec.ike.message import decode_header


def test_each_resend_of_the_answer_taken_is_one_more_copy_the_refusal_must_find() -> None:
    net, a, b = _pair(0)
    sa_a, sa_b = a.sas[0], b.sas[0]
    sa_a.rekey_child(sa_a.children[0].unique_id)
    (request,) = net.collect()
    net.deliver(request)
    new_b = next(c for c in sa_b.children if c.spi_out != sa_a.children[0].spi_in)
    assert sa_b.answer_of(new_b.unique_id) is not None
    (answer,) = net.collect()                            # taken (the service parks it)
    assert sa_b.answer_copies() == 1
    moved = (request.src[0], request.src[1] + 1)         # A's copy from its NAT's new mapping
    net.deliver(dataclasses.replace(request, src=moved))
    assert sa_b.answer_copies() == 2                     # resent, collected by B's endpoint: a refusal must find both
    resent = net.collect()
    assert [s.data for s in resent] == [answer.data] and resent[0].dst == moved
    (new,) = sa_b.refuse_child(new_b.unique_id)
    assert decode_header(new).message_id == decode_header(answer.data).message_id
