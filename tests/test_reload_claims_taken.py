"""A reload that names a network a peer of a %any connection holds takes it back (review revtrap F1).

services/ike/reclaim.py: after a reload's configured claims (configured_claims.py follow), each Child SA
of a peer whose connection does not name it that overlaps a new claim is deleted at once, logged (the
claim and the holder) and named in the reload's answer; its IKE SA stays.  Named peers' Child SAs, and
a reload that claims nothing new, are left alone.  The proofs of the review are
tests/test_review_revtrap_reload_claims.py; these add the changed-child case, the log and answer, and
the guards.

The gateway of test_review_revlan_trap_claims.py (real IkeService, in-process worker with the real C
fast path): hub "gw" (%any unless named here, 10.1.0.0/16 <-> 10.2.0.0/16), site 0 its spoke asking for
10.2.1.0/24, and a trap connection "trap" naming peer.example for the remote_ts given.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from test_ikeservice_peers import ipv4_udp
from test_review_revlan_trap_claims import NAMED_NET, NAMED_PEER, TrapAndHub, trap_connection

from tunsec.conf.config import Config
from tunsec.conf.connections import Connection
from tunsec.ike.sa import State


async def spoke_up(gw: TrapAndHub) -> Connection:
    """The gateway without "trap" (a reload took it out), its spoke up for NAMED_NET; the hub returned."""
    await gw.start()
    hub = gw.service.connections["gw"]
    await gw.service.reload(Config(path="x.conf", connections=(hub,)))
    gw.connect(0)
    await gw.settle()
    assert [str(t) for c in gw.children_of(0) for t in c.remote_ts] == [NAMED_NET]
    return hub


def spoke_ike_up(gw: TrapAndHub) -> bool:
    return any(sa.name == "gw" and sa.state is State.ESTABLISHED for sa in gw.service.endpoint.sas)


def test_the_reload_names_the_spoke_in_its_answer_and_log_and_keeps_its_ike_sa(
        caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        gw = TrapAndHub(2)
        hub = await spoke_up(gw)
        with caplog.at_level(logging.WARNING, logger="tunsec.ike"):
            answer = await gw.service.reload(Config(path="x.conf", connections=(hub, trap_connection(NAMED_NET))))
            await gw.settle()
        taken = [line for line in answer if "deleted" in line and "%any" in line]
        assert taken and "site0.example" in taken[0] and "(gw)" in taken[0], answer
        logged = [r.getMessage() for r in caplog.records if "names its peer" in r.getMessage()]
        assert logged and "connection trap child net" in logged[0] and "peer.example" in logged[0] \
            and "site0.example" in logged[0] and NAMED_NET in logged[0], logged
        assert not gw.children_of(0) and spoke_ike_up(gw)   # the Child SA went, its IKE SA stays

    asyncio.run(body())


def test_a_reload_that_widens_a_named_childs_remote_ts_takes_the_new_network_from_a_spoke() -> None:
    """"trap" names 10.2.9.0/24 at start; the spoke takes 10.2.1.0/24; a reload that adds 10.2.1.0/24 to
    the trap's remote_ts (a changed child, not a new connection) takes it back."""
    async def body() -> None:
        gw = TrapAndHub(2, trap_ts="10.2.9.0/24")
        await gw.start()
        gw.connect(0)
        await gw.settle()
        assert gw.children_of(0), "premise: 10.2.1.0/24 is nobody's, the spoke gets it"
        hub = gw.service.connections["gw"]
        await gw.service.reload(Config(path="x.conf", connections=(hub, trap_connection(f"{NAMED_NET},10.2.9.0/24"))))
        await gw.settle()
        assert not gw.children_of(0), f"spoke still holds {[c.remote_ts for c in gw.children_of(0)]}"
        _esp, dst, _drop, _ = gw.worker.dp.outbound(ipv4_udp("10.1.0.5", "10.2.1.7", b"for the named peer"))
        assert dst is None or str(dst.addr) == NAMED_PEER, f"sealed to {dst}, the spoke"

    asyncio.run(body())


def test_a_named_spoke_keeps_its_child_sa_when_a_reload_names_its_network_for_another() -> None:
    """Guard (passes before and after): the configured claims bind no named peer (a primary and a
    backup, named spokes: their Child SAs decide), so a reload deletes nothing of a named peer's."""
    async def body() -> None:
        gw = TrapAndHub(2, hub_id="site0.example")
        hub = await spoke_up(gw)
        answer = await gw.service.reload(Config(path="x.conf", connections=(hub, trap_connection(NAMED_NET))))
        await gw.settle()
        assert gw.children_of(0) and not [line for line in answer if "%any" in line], answer

    asyncio.run(body())


def test_a_reload_that_names_nothing_new_leaves_the_spoke() -> None:
    """Guard (passes before and after): the same configuration again claims nothing new."""
    async def body() -> None:
        gw = TrapAndHub(2)
        hub = await spoke_up(gw)
        await gw.service.reload(Config(path="x.conf", connections=(hub,)))
        await gw.settle()
        assert gw.children_of(0)

    asyncio.run(body())
