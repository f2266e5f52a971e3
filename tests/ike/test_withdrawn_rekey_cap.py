"""Review revrekey5 F1: informational._withdrawn takes the peer's DELETE of *any* Child SA that is the
new one of a peer's rekey for a withdrawal of that rekey, also when the peer deletes it because it
rekeyed it in turn (its rekey done: old -> n1 -> n2, then DELETE n1, the old one never deleted).  The
old one is then "not rekeyed" again, live beside n2: each round adds a live Child SA, and
max_child_sas (create_child_sa._over_limit) no longer bounds the peer's Child SAs.  Before h/fixrekey5
the old one stayed rekeyed_by_peer, and the rekeys left undeleted were capped at max_child_sas
(test_child_sa_limit::test_rekeys_whose_old_child_sas_the_peer_never_deletes_are_bounded)."""

from __future__ import annotations

from test_child_sa_limit import LIMIT, _at_limit, _rekey_request

from tunsec.ike.constants import ProtocolId
from tunsec.ike.exchanges import create_child_sa, informational
from tunsec.ike.exchanges.child import spi_bytes
from tunsec.ike.message import DeletePayload, SaPayload

ROUNDS = 5


def test_a_peer_that_rekeys_a_rekeyed_child_sa_and_deletes_the_middle_one_stays_within_max_child_sas() -> None:
    _, sa, gw, _ = _at_limit()
    child = sa.children[0]
    for _ in range(ROUNDS):
        for _ in range(2):   # old -> n1, then n1 -> n2 (both answered while no DELETE came)
            payloads, child_next = _rekey_request(sa, child)
            answer = create_child_sa.respond(gw._st, payloads)  # type: ignore[arg-type]
            if not any(isinstance(p, SaPayload) for p in answer.payloads):
                break
            middle, child = child, child_next
        else:
            # the peer completes n1's rekey by deleting n1 (as RFC 7296 §2.8 has it), never the old one
            informational.respond(gw._st, [DeletePayload(ProtocolId.ESP, 4, (spi_bytes(middle.spi_in),))])
            continue
        break
    live = [c for c in gw.children if not create_child_sa._replaced(c)]
    # at most LIMIT live, and at most LIMIT more the peer rekeyed and left undeleted
    assert len(live) <= LIMIT and len(gw.children) <= 2 * LIMIT, \
        f"{len(live)} live Child SAs (max_child_sas {LIMIT}), {len(gw.children)} in all"
