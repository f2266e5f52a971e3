"""Review revdel5 F1: a worker restart while the peer's DELETE of a Child SA is held for our rekey
of it (CreateChildTask.takes_peer_delete) frees that Child SA's claim.

The hub rekeys the victim's Child SA; the victim answers (its new Child SA is up there) and then
deletes the old one, its DELETE overtaking the answer: the hub holds the old Child SA (out of the
engine's list, no ChildSaDown) until the answer.  The worker restarts meanwhile.  restart.py keeps a
claim only for a Child SA its IKE SA still lists (child_index.still_held): the held one's claim is
removed, so another peer's request read before the victim's answer takes the victim's subnet --
exactly what the restart's held claims are for (test_ikeservice_restart_claims).  Fixed (h/fixdel6):
the restart holds the claim of a Child SA the engine reports held (IkeSa.held_children, rekey_hold.py)."""

from __future__ import annotations

from test_ikeservice_peers import GW, run, site_ip
from test_ikeservice_restart_claims import ATTACKER, VICTIM, hub
from test_ikeservice_ts_claims import reaches, refusals


def test_a_child_sa_held_for_our_rekey_keeps_its_claim_across_a_worker_restart() -> None:
    async def body() -> None:
        gw = await hub()
        svc = gw.service
        state = gw.child_of(VICTIM)
        assert state is not None
        sa = svc._ike_sa(state.ike)
        assert sa is not None
        old = sa.children[0]
        held: list[bytes] = []

        def hold_answer(i: int, data: bytes) -> bool:
            """The victim's answer to the hub's rekey is delayed (its DELETE overtakes it)."""
            if i == VICTIM and not held:
                held.append(data)
                return True
            return False

        gw.drop = hold_answer
        svc._rekey_child(sa, old.unique_id)
        svc._pump()
        await gw.settle()
        assert held, "the victim answered the rekey"
        victim = gw.site_sa(VICTIM)
        gone = next(c for c in victim.children if c.spi_out == old.spi_in)
        victim.delete_child(gone.unique_id)   # its hard lifetime: the victim deletes the old Child SA
        await gw.settle()
        assert all(c.unique_id != old.unique_id for c in sa.children)
        assert sa._pending is not None and sa._pending.task.holds_old("net"), "the old Child SA is held"  # type: ignore[attr-defined]
        assert len(svc.ts_claims) == 2   # before the restart it still holds its subnet
        await gw.restart_worker()
        await gw.settle()
        # the victim's lineage goes on when its answer comes: its subnet must stay its own meanwhile
        gw.site_sa(ATTACKER).initiate("steal")
        await gw.settle()
        assert [e.reason for e in refusals(gw, ATTACKER)] == ["TS_UNACCEPTABLE"], \
            "another peer took the subnet of a Child SA held for our rekey across the worker restart"
        # the victim's answer then comes: its lineage goes on (on main it is refused TS_UNACCEPTABLE,
        # the attacker keeping the victim's subnet)
        gw.drop = None
        svc.receive(held[0], (site_ip(VICTIM), 500), (GW, 500))
        svc._pump()
        await gw.settle()
        assert refusals(gw, VICTIM) == []
        assert reaches(gw, "10.2.1.7") == VICTIM
    run(body())
