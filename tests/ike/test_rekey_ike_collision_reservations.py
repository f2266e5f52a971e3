"""Review revspis F1 (fixed): while our own IKE SA rekey is out, every rekey request of the peer on that IKE SA reserved
a new IKE SPI (rekey_ike.respond -> reserve_ike_spi) and *overwrites* ``RekeyIkeTask.collision``; the
overwritten answer's reservation is released by nobody until the old IKE SA closes (release_all).  A
peer that keeps our rekey request unanswered (its retransmissions run for minutes, then a TEMPORARY_FAILURE
or a late answer settles it) and sends rekey requests one after another grows the endpoint's book by one
entry per request: no cap per peer or per IKE SA (MAX_UNDELETED counts REKEYED SAs, and there is none yet).

Here B's rekey request is held (never reaches A) and A sends 20 rekey requests on the same IKE SA; A
treats each of B's answers as failed on its side (``RekeyIkeTask._process`` -> DONE without a rekey),
as a peer that does not want the new SA would, so its IKE SA stays ESTABLISHED and it asks again.
Expected: B holds its own reservation and at most the one collision it keeps (2), not one per request."""

from __future__ import annotations

import random

import pytest
from test_engine_more import A, B, cfg

from tunsec.ike.constants import ExchangeType
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.exchanges import rekey_ike
from tunsec.ike.exchanges.base import Outcome
from tunsec.ike.message import decode_header
from tunsec.ike.sa import State
from tunsec.ike.testing import EPOCH, Network, Sent

PROPS = "aes256gcm16-prfsha256-curve25519"


def test_peer_rekeys_during_our_rekey_do_not_pile_up_reservations(monkeypatch: pytest.MonkeyPatch) -> None:
    net = Network()
    a = net.add(A, IkeEndpoint([cfg(True, PROPS)], random.Random(1).randbytes, wall_clock=lambda: EPOCH))
    b = net.add(B, IkeEndpoint([cfg(False, PROPS)], random.Random(2).randbytes, wall_clock=lambda: EPOCH))
    a_sa = a.initiate("conn", "net", net.now)
    net.run()
    (b_sa,) = [s for s in b.sas if s.state is State.ESTABLISHED]

    def hold(sent: Sent) -> bool:   # B's own rekey *request* never reaches A (its answers to A do)
        h = decode_header(sent.data)
        return sent.src[0] == B and h.exchange == ExchangeType.CREATE_CHILD_SA and not h.is_response

    net.drop = hold
    b_sa.rekey()
    b.collect(net.now)
    net.run(until=net.now + 0.1)
    assert len(b.spi_book) == 1   # B's request holds its new SPI

    # A (the peer): each answer of B is taken as a failed rekey on A's side; A's IKE SA stays as it is
    real = rekey_ike.RekeyIkeTask._process

    def a_fails(self: rekey_ike.RekeyIkeTask, st: object, payloads: object) -> Outcome:
        if st is a_sa._st:   # type: ignore[attr-defined]
            return Outcome.DONE
        return real(self, st, payloads)   # type: ignore[arg-type]

    monkeypatch.setattr(rekey_ike.RekeyIkeTask, "_process", a_fails)
    for _ in range(20):
        a_sa.rekey()
        a.collect(net.now)
        net.run(until=net.now + 0.05)
    assert a_sa.state is State.ESTABLISHED and b_sa.state is State.ESTABLISHED and b_sa.heir is None
    assert len(b.spi_book) <= 2, f"B holds {len(b.spi_book)} reserved IKE SPIs for one IKE SA of one peer"
