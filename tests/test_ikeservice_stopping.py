"""What the IKE service sets up while it stops (services/ike/stopping.py; review revupdown2 F2):
nothing.  An IKE_SA_INIT gets no answer and is counted; an IKE SA established anyway (its
IKE_AUTH in flight) is deleted at once, none of its Child SAs installed nor told to a script.
(The whole story with a peer connecting during the drain: tests/test_review_revupdown2_stop.py.)

An in-process IkeService (test_ikeservice_peers's Gateway) and real scripts (/bin/sh).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from test_ikeservice_peers import GW, Gateway, run, site_ip
from test_ikeservice_updown import lines, script, with_updown

from tunsec.ike.constants import is_ike_sa_init


def test_an_ike_sa_init_during_the_stop_gets_no_answer_and_is_counted() -> None:
    """Site 1 connects once the stop began: its IKE_SA_INIT is dropped unanswered (strongSwan's
    charon answers nothing at its shutdown), counted as ike_drops.stopping; nothing of it is kept."""
    async def body() -> tuple[int, list[str], list[str]]:
        gw = Gateway(2, mobike=False)
        await gw.start()
        gw.connect(0)
        await gw.settle()
        stop = asyncio.ensure_future(gw.service.shutdown())
        await asyncio.sleep(0)   # the stop began: site 0's IKE SA is being deleted
        gw.connect(1)
        await gw.settle(wait_tasks=False)
        site1 = [sa.state.value for sa in gw.sites[1].sas if not sa.is_closed]
        await stop
        left = [sa.state.value for sa in gw.service.endpoint.sas if not sa.is_closed]
        return vars(gw.service.endpoint.stats).get("stopping", 0), site1, left   # tunsec status: ike_drops

    stopping, site1, left = run(body())
    assert site1 == ["connecting"], "site 1 got an answer to its IKE_SA_INIT"
    assert left == []
    assert stopping >= 1


def test_an_ike_sa_established_during_the_stop_is_deleted_at_once_and_runs_no_script(tmp_path: Path) -> None:
    """Site 1's IKE_AUTH arrives once the service is closing (the backstop for an IKE SA the
    stop's deletes did not reach): the IKE SA is deleted as it comes up; its Child SA is never
    installed nor told to the updown script, and the stop's wait covers it."""
    argv, log, _gate = script(tmp_path)
    held: list[bytes] = []

    def hold_auth(i: int, data: bytes) -> bool:
        if i == 1 and not is_ike_sa_init(data, 0):
            held.append(data)
            return True
        return False

    async def body() -> tuple[list[str], int, bool, list[str]]:
        gw = Gateway(2, mobike=False, drop=hold_auth)
        await gw.start()
        with_updown(gw, argv)
        gw.connect(1)
        await gw.settle()   # IKE_SA_INIT answered; the IKE_AUTH held back
        assert held, "site 1 sent no IKE_AUTH"
        gw.service.closing = True   # as the stop does first (stopping.shutdown)
        gw.drop = None
        gw.wire += [((site_ip(1), 4500), (GW, 4500), data) for data in held]
        await gw.settle()
        states = [sa.state.value for sa in gw.service.endpoint.sas if not sa.is_closed]
        return states, len(gw.service.children), bool(getattr(gw.service, "stop_deleted", ())), lines(log)

    states, children, waited, ran = run(body())
    assert states == [], "the IKE SA established during the stop was not deleted"
    assert children == 0, "a Child SA of an IKE SA established during the stop was installed"
    assert waited
    assert ran == [], f"scripts ran for it: {ran}"
