"""A new Child SA the peer refuses for now (TEMPORARY_FAILURE, RFC 7296 §2.25), two engines on a fake clock.

strongSwan refuses a new Child SA while it rekeys the IKE SA (and tunsec's responder refuses one when
its SPI pool is empty): the initiator asks again 2-10 s later, on the IKE SA that replaced its own if
that was rekeyed meanwhile, at most ``MAX_RETRIES`` times. tunsec refuses the peer's new Child SA
while its own IKE SA rekey is out, as strongSwan does.
"""

from __future__ import annotations

import logging
import random

import pytest
from test_engine_more import A, B, cfg, only

from tunsec.ike.constants import ExchangeType, NotifyType
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaUp, IkeSaDown, IkeSaRekeyed, NegotiationFailed
from tunsec.ike.exchanges.create_child_sa import MAX_RETRIES
from tunsec.ike.message import NotifyPayload, decode_header, decode_message
from tunsec.ike.sa import IkeSa
from tunsec.ike.sk import decrypt_message
from tunsec.ike.state import SpiUnavailable, random_spi_allocator
from tunsec.ike.testing import EPOCH, Network, Sent

CCSA = ExchangeType.CREATE_CHILD_SA


class Pool:
    """B's SPI allocator, out of SPIs for the next ``empty`` requests (its responder then answers
    TEMPORARY_FAILURE, as the IKE service's empty GETSPI pool does)."""

    def __init__(self, seed: int) -> None:
        self.empty = 0
        self._spi = random_spi_allocator(random.Random(seed).randbytes)

    def __call__(self) -> int:
        if self.empty > 0:
            self.empty -= 1
            raise SpiUnavailable("test: pool empty")
        return self._spi()


def _pair(seed: int = 1) -> tuple[Network, IkeEndpoint, IkeEndpoint, Pool]:
    net, pool = Network(), Pool(seed)
    a = net.add(A, IkeEndpoint([cfg(True)], random.Random(seed).randbytes, wall_clock=lambda: EPOCH))
    b = net.add(B, IkeEndpoint([cfg(False)], random.Random(seed + 1).randbytes, spi_allocator=pool,
                               wall_clock=lambda: EPOCH))
    a.initiate("conn", "net", net.now)
    net.run()
    assert only(net.take(A), ChildSaUp) and only(net.take(B), ChildSaUp)
    return net, a, b, pool


def _requests(net: Network, since: int, src: str = A) -> list[Sent]:
    """The CREATE_CHILD_SA requests ``src`` sent since log entry ``since``."""
    out = []
    for sent in net.log[since:]:
        hdr = decode_header(sent.data)
        if sent.src[0] == src and hdr.exchange == CCSA and not hdr.is_response:
            out.append(sent)
    return out


def _live(ep: IkeEndpoint) -> IkeSa:
    (sa,) = [sa for sa in ep.sas if not sa.is_closed]
    return sa


def _web_pair(a: IkeEndpoint, b: IkeEndpoint) -> tuple[int, int]:
    """The 'web' Child SA, up on both sides with matching SPIs."""
    (web_a,) = [c for c in _live(a).children if c.name == "web"]
    assert len(_live(b).children) == len(_live(a).children) == 2
    # (B picks its config by the selectors: 'web' fits them exactly, 'net' only covers them)
    assert (web_a.spi_in, web_a.spi_out, "web") in {(c.spi_out, c.spi_in, c.name) for c in _live(b).children
                                                     if c.installed}
    return web_a.spi_in, web_a.spi_out


def test_a_new_child_sa_the_peer_refuses_for_now_comes_up_after_a_retry() -> None:
    net, a, b, pool = _pair()
    pool.empty = 1
    start, mark = net.now, len(net.log)
    _live(a).initiate("web")
    net.run()
    sent = _requests(net, mark)
    assert len(sent) == 2                                  # refused, then asked again...
    assert start + 2.0 <= sent[1].time <= start + 10.0     # ... 2-10 s later
    _web_pair(a, b)
    events = net.take(A)
    assert [e.child for e in only(events, ChildSaUp)] == ["web"]
    assert not only(events, NegotiationFailed), events     # a refusal for now is no failure


def test_a_retry_after_an_ike_sa_rekey_goes_to_the_new_ike_sa() -> None:
    net, a, b, pool = _pair()
    old = _live(a)
    pool.empty = 1
    mark = len(net.log)
    old.initiate("web")
    net.step()
    net.step()                                             # refused: the retry waits 2-10 s
    assert not [c for c in old.children if c.name == "web"]
    _live(b).rekey()                                       # B rekeys the IKE SA meanwhile
    net.run()
    new = _live(a)
    assert new is not old and old.is_closed
    assert len(only(net.take(A), IkeSaRekeyed)) == 1
    first, retry = _requests(net, mark)
    assert decode_header(first.data).spi_i == old.spi_i
    hdr = decode_header(retry.data)
    assert (hdr.spi_i, hdr.spi_r) == (new.spi_i, new.spi_r)    # on the new IKE SA, not the old one
    _web_pair(a, b)


def test_a_peer_that_keeps_refusing_is_not_asked_for_ever(caplog: pytest.LogCaptureFixture) -> None:
    net, a, b, pool = _pair()
    pool.empty = 1000
    mark = len(net.log)
    with caplog.at_level(logging.INFO, logger="tunsec.ike"):
        _live(a).initiate("web")
        net.run()                                          # settles: nothing is left to try
    assert len(_requests(net, mark)) == 1 + MAX_RETRIES
    assert _live(a).get_timer() is None                    # no retry armed any more
    failed = only(net.take(A), NegotiationFailed)
    assert [(f.reason, f.child) for f in failed] == [("TEMPORARY_FAILURE", "web")]
    assert f"TEMPORARY_FAILURE {1 + MAX_RETRIES} times: giving up" in caplog.text
    assert not [c for c in _live(a).children if c.name == "web"]
    # the IKE SA and its other Child SA are untouched; the child can be asked for again
    pool.empty = 0
    _live(a).initiate("web")
    net.run()
    _web_pair(a, b)
    assert not only(net.take(A), IkeSaDown)


@pytest.mark.parametrize("seed", range(4))
def test_a_new_child_sa_is_refused_while_our_ike_sa_rekey_is_out(seed: int) -> None:
    """B's IKE SA rekey and A's new Child SA cross. B refuses the Child SA (its DELETE of the old
    IKE SA could overtake the answer), answers nothing else on the old SA, and A asks again on the
    new IKE SA once it has answered B's rekey."""
    net, a, b, _ = _pair(seed)
    old_a, old_b = _live(a), _live(b)
    mark = len(net.log)
    old_b.rekey()
    old_a.initiate("web")
    flight = net.collect()
    (child_req,) = [s for s in flight if s.src[0] == A]
    (rekey_req,) = [s for s in flight if s.src[0] == B]
    net.deliver(child_req)                                 # B, rekeying, refuses A's Child SA
    (answer,) = net.collect()
    net.deliver(answer)
    assert not net.collect()                               # A waits before it asks again
    net.deliver(rekey_req)                                 # A answers B's rekey (nothing of its own is out)
    net.run()
    new_a, new_b = _live(a), _live(b)
    assert new_a is not old_a and new_b is not old_b
    first, retry = _requests(net, mark)
    assert decode_header(first.data).spi_i == old_a.spi_i
    hdr = decode_header(retry.data)
    assert (hdr.spi_i, hdr.spi_r) == (new_a.spi_i, new_a.spi_r)
    _web_pair(a, b)
    for ip in (A, B):
        events = net.take(ip)
        assert len(only(events, ChildSaUp)) == 1, events
        assert not only(events, NegotiationFailed), events


def test_the_first_child_sa_refused_for_now_in_ike_auth_comes_up_after_a_retry() -> None:
    """The Child SA of IKE_AUTH (start_action = start) refused for now: the IKE SA comes up without
    it, and a CREATE_CHILD_SA asks for it again 2-10 s later (strongSwan does the same)."""
    net, pool = Network(), Pool(7)
    a = net.add(A, IkeEndpoint([cfg(True)], random.Random(7).randbytes, wall_clock=lambda: EPOCH))
    net.add(B, IkeEndpoint([cfg(False)], random.Random(8).randbytes, spi_allocator=pool, wall_clock=lambda: EPOCH))
    pool.empty = 1
    a.initiate("conn", "net", net.now)
    net.run()
    (retry,) = _requests(net, 0)
    assert 2.0 <= retry.time <= 10.0
    assert [c.name for c in _live(a).children] == ["net"]
    events = net.take(A)
    assert [e.child for e in only(events, ChildSaUp)] == ["net"]
    assert not only(events, NegotiationFailed), events
    assert len(only(net.take(B), ChildSaUp)) == 1


@pytest.mark.parametrize("rekey", [False, True])
def test_a_child_sa_request_while_we_delete_the_ike_sa_is_refused_for_now(rekey: bool) -> None:
    """B's new Child SA (or rekey) crosses A's DELETE of the IKE SA: A answers TEMPORARY_FAILURE, as
    strongSwan does (child_create.c build_r), not INVALID_SYNTAX; both sides end cleanly."""
    net, a, b, _ = _pair()
    sa_a, sa_b = _live(a), _live(b)
    sa_a.delete(net.now)
    if rekey:
        sa_b.rekey_child(sa_b.children[0].unique_id)
    else:
        sa_b.initiate("web")
    flight = net.collect()
    (request,) = [s for s in flight if s.src[0] == B]
    net.deliver(request)
    (answer,) = [s for s in net.collect() if s.src[0] == A]
    assert decode_header(answer.data).exchange == CCSA
    tx = sa_a._st.tx      # the test opens A's answer with A's own keys
    assert tx is not None
    payloads = decrypt_message(answer.data, decode_message(answer.data), tx)
    assert [p.type for p in payloads if isinstance(p, NotifyPayload)] == [NotifyType.TEMPORARY_FAILURE]
    net.deliver(answer)
    for sent in flight:
        if sent.src[0] == A:
            net.deliver(sent)                              # A's DELETE
    net.run()
    assert sa_a.is_closed and sa_b.is_closed
    failed = [e for e in net.take(B) if isinstance(e, NegotiationFailed)]
    assert not [f for f in failed if f.reason == "INVALID_SYNTAX"], failed
