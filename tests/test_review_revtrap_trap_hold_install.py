"""Review revtrap F3: a trap child whose install fails on our side is initiated again at every ACQUIRE.

services/ike/trap_hold.py ends a child's hold-down when "a Child SA of the child comes up", and
service.py calls TrapHolds.up on the ChildSaUp event, before the install (_start_install).  A Child SA
the engine negotiated but the worker then refuses (its SAD or SPD full: ENOSPC; an install not
answered in time) is deleted again (install_failed.py): it never carried a packet, yet it counted as
up, so the next ACQUIRE -- a second later, for as long as one LAN host sends -- initiates a new
CREATE_CHILD_SA at once, the peer installs and deletes its half, and an ERROR line is logged, every
second, for ever: review revlan F2's symptom by another route, the hold never engaged (its failure
count reset at each try).

The pair of test_ikeservice_traps.py (two real IkeServices, in-process workers with the real C fast
path); A's worker refuses every SA ADD (SAD full), as test_ikeservice_install_failed.refuse_next does
once; the hold-down's clock does not move: every ACQUIRE is within HOLD_FIRST of the first.
"""

from __future__ import annotations

import asyncio
from typing import Any

from test_ikeservice_trap_hold import Clock
from test_ikeservice_traps import ccsa_requests, trapped, up_without_child

from tunsec.dataplane.fastpath import DataplaneError, lib


def refuse_always(dp: Any, method: str) -> None:
    """The worker's data plane refuses every call of ``method`` (and its raw twin): its SAD is full."""
    def refusing(arg: object) -> None:
        raise DataplaneError(method, lib.TS_ENOSPC)
    for name in (method, f"{method}_fields"):
        setattr(dp, name, refusing)


def test_a_child_whose_install_fails_is_held_down_as_a_refused_one() -> None:
    async def body() -> None:
        pair, pid = await trapped()
        await up_without_child(pair)   # the IKE SA is up: each ACQUIRE is one CREATE_CHILD_SA
        svc = pair.svc["a"]
        clock = Clock()
        svc.trap_holds.clock = clock   # never moves: all ACQUIREs within the first hold
        refuse_always(pair.workers["a"].dp, "add")
        asked = ccsa_requests(pair)
        for _ in range(4):   # one LAN host's packets, an ACQUIRE each
            svc.acquire(pid)
            await pair.settle()
        assert not svc.child_index.has("tun", "net")   # never installed: each one deleted again
        tries = ccsa_requests(pair) - asked
        assert tries == 1, f"{tries} CREATE_CHILD_SAs for 4 ACQUIREs within the first hold-down: " \
            f"the install failures reset the hold (held: {svc.events.acquires_held[('tun', 'net')]})"

    asyncio.run(body())
