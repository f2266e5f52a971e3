"""``unique`` when a peer we already have an IKE SA with (one we initiated) starts another one.

Two real IkeServices wired in memory (tests/test_ikeservice_rekey.py's Pair): A initiates the
first IKE SA, then B initiates a second one with the same identities. As strongSwan's IKEv2
(ike_auth.c: check_uniqueness in the responder's build_r only), the uniqueness policy is the
new SA's responder's to apply, and it counts the SA it initiated itself as a duplicate; the
initiator of the new SA applies none.
"""

from __future__ import annotations

import asyncio
import dataclasses

from test_ikeservice_rekey import Pair

from tunsec.conf.connections import Unique
from tunsec.ike.sa import IkeSa, State


def established(pair: Pair, side: str) -> list[IkeSa]:
    return [sa for sa in pair.svc[side].endpoint.sas if sa.state is State.ESTABLISHED]


async def second_ike_sa(unique_a: Unique, unique_b: Unique) -> tuple[Pair, bytes, bytes]:
    """A's IKE SA to B, then B's to A; the SPI pairs (spi_i) of both."""
    pair = Pair()
    await pair.start()
    for side, unique in (("a", unique_a), ("b", unique_b)):
        svc = pair.svc[side]
        svc.connections["tun"] = dataclasses.replace(svc.connections["tun"], unique=unique)
    pair.svc["a"].initiate("tun", "net")
    await pair.settle()
    (first,) = established(pair, "a")
    assert first.is_initiator
    pair.svc["b"].initiate("tun", None)   # a new IKE SA (no child to add to the existing one)
    await pair.settle()
    second = next(sa for sa in pair.svc["b"].endpoint.sas if sa.is_initiator)
    return pair, first.spi_i, second.spi_i


def spis(pair: Pair, side: str) -> set[bytes]:
    return {sa.spi_i for sa in established(pair, side)}


def test_no_initial_contact_while_an_ike_sa_with_the_peer_is_up() -> None:
    """B already has an IKE SA with A (A initiated it): its new one carries no INITIAL_CONTACT
    (strongSwan's has_contact), so A does not take it for a reboot and keeps the first one."""
    async def body() -> None:
        pair, first, second = await second_ike_sa("no", "no")
        assert spis(pair, "a") == spis(pair, "b") == {first, second}
    asyncio.run(body())


def test_the_initiator_of_the_new_sa_applies_no_uniqueness_policy() -> None:
    """B (unique = replace) initiated the duplicate: it keeps the older IKE SA, as strongSwan does."""
    async def body() -> None:
        pair, first, second = await second_ike_sa("no", "replace")
        assert spis(pair, "a") == spis(pair, "b") == {first, second}
    asyncio.run(body())


def test_the_responder_replaces_the_ike_sa_it_had_initiated() -> None:
    """A (unique = replace) answers B's duplicate: its own older IKE SA to B goes, on both sides."""
    async def body() -> None:
        pair, _, second = await second_ike_sa("replace", "no")
        assert spis(pair, "a") == spis(pair, "b") == {second}
    asyncio.run(body())
