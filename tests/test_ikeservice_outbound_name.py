"""Review revrekey3 F2: after a move, an EXPIRE of an outbound SA can name a Child SA whose outbound
SA is not in the worker (a rekey responder's standby), not the one whose SA it is.

An outbound SA is named by (SPI, peer), and the SPI is the peer's choice: two Child SAs may share one
name.  The worker holds at most one outbound SA of a name (a second ADD or MIGRATE there is refused),
but a standby (a rekey we answered: its outbound SA not added yet, ChildState.standby) holds a name
without an SA.  child_index.child_of_sa returns the first booked Child SA of the name that its IKE SA
still has, whether or not its outbound SA is the worker's.  Before h/fixrekey2 the pass over
``children`` went in booking order; the index keeps the order in which Child SAs came to the name, so
a Child SA that moves (child_index.set_remote, mobility._migrate: its outbound MIGRATE goes through,
as the standby holds no SA there) comes after the standby that sits at its new name, whatever their
age.  Its EXPIREs then act on the standby's Child SA: a soft one rekeys that one (and not the SA that
reached its limit), a hard one deletes it, and accounting books the counters to its session.  With
two peers behind one name (a NAT mapping handed to another client while the first's IKE SA lives
on, or an on-path attacker who rewrites a victim's IKE source to its own endpoint and has read the
victim's outbound SPI off the wire, then rekeys its own Child SA to that SPI and keeps the answer on
standby, which now lasts the peer's retransmissions, ~165 s) that is one peer's EXPIRE acting on
another peer's Child SA.

Here one IKE SA stands in for both peers (the lookup knows no peers, only names): A rekeys, B holds
its new Child SA on standby; the standby is given the old Child SA's outbound SPI at another endpoint
X (as a second peer there would have it); the old Child SA then follows its peer to X through the
real mobility._migrate and the in-process worker.

Now child_of_sa asks for the Child SA whose outbound SA the worker holds (out_installed) first, then the
one being moved there, then any."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress

from test_ikeservice_rekey import A_IP, Pair, established, settle_holding_a_delete

from tunsec.dataplane.pipe import Direction, Endpoint
from tunsec.services.ike import child_index, mobility
from tunsec.services.ike.state import ChildState

THERE = Endpoint(ipaddress.ip_address(A_IP), 4501)   # the other peer's endpoint


async def _standby_at_another_name() -> tuple[Pair, ChildState, ChildState]:
    """B's Child SA (installed) and, at (its outbound SPI, THERE), a standby: (the pair, the one, the other)."""
    pair = await established()
    pair.probing = False
    b = pair.svc["b"]
    old_b = pair.child("b")                           # booked first, its outbound SA in the worker
    pair.rekey("a")                                   # A rekeys; B answers and holds its new SA back
    await settle_holding_a_delete(pair)
    new_b = next(c for c in b.children.values() if c.handle != old_b.handle)
    assert new_b.standby is not None and not new_b.out_installed
    # the standby as a second peer at THERE would hold it: the same outbound SPI (its choice)
    child_index.unbook(b, new_b)
    other = dataclasses.replace(new_b, spi_out=old_b.spi_out, remote=THERE,
                                standby=dataclasses.replace(new_b.standby, spi=old_b.spi_out, remote=THERE))
    child_index.book(b, other)
    return pair, old_b, other


def test_an_expire_of_a_moved_child_sas_outbound_sa_finds_that_child_sa_not_a_standby_at_its_new_name() -> None:
    async def body() -> None:
        pair, old_b, other = await _standby_at_another_name()
        b = pair.svc["b"]
        there = THERE
        # the old Child SA follows its peer to ``there``: the worker takes the MIGRATE (no SA has that name)
        err = await mobility._migrate(b, old_b, there, old_b.local)
        assert err is None and old_b.remote == there
        assert old_b.out_installed and not other.out_installed   # the worker's SA at that name is old_b's
        found = b._child_of_sa(old_b.spi_out, Direction.OUT, there)
        which = "its own" if found is old_b else "the standby's" if found is other else repr(found)
        assert which == "its own"                         # main: the standby's
        # its hard limit (the worker's EXPIRE of that SA) deletes it, not the other Child SA
        assert b.expired(old_b.spi_out, Direction.OUT, True, there)
        ike = pair.ike("b")
        deleting = sorted(c.unique_id for c in ike.children if c.deleting)
        assert deleting == [old_b.unique_id], (deleting, old_b.unique_id, other.unique_id)

    asyncio.run(body())


def test_an_expire_read_while_a_child_sa_moves_onto_a_standbys_name_finds_the_moving_one() -> None:
    """The move's fallback (test_ikeservice_expire_during_move.py) with a standby at the new name: the
    worker names the outbound SA by its new endpoint from the MIGRATE on, and the standby there holds no
    SA; the soft EXPIRE read before the MIGRATE's answer is the moving Child SA's (on main the standby's:
    the fallback was asked only when no held Child SA was at the name)."""
    async def body() -> None:
        pair, old_b, other = await _standby_at_another_name()
        b = pair.svc["b"]
        b.child_index.move(old_b, (THERE, old_b.local))   # its MIGRATE in flight (mobility._batch)
        assert old_b.out_installed and old_b.remote != THERE
        found = b._child_of_sa(old_b.spi_out, Direction.OUT, THERE)
        which = "the moving one" if found is old_b else "the standby's" if found is other else repr(found)
        assert which == "the moving one"
        # no move in flight: the name is the standby's alone (no one's SA holds it), and it is found
        b.child_index.move(old_b, None)
        assert b._child_of_sa(old_b.spi_out, Direction.OUT, THERE) is other

    asyncio.run(body())
