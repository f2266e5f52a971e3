"""Review revvanish F1: a %any connection's dpd_action / close_action = start re-initiates into
ANOTHER peer's IKE SA.

When an IKE SA dies (DPD gives up: ``dpd_action``; its peer deletes it: ``close_action``), the
service schedules ``tries.later(conn, child)`` for each child whose action is ``start``
(services/ike/ikesas.py ``_after_loss``).  That initiation (services/ike/commands.py ``_initiate``)
adds the child to *any* established IKE SA of the connection ("like strongSwan: a child of a
connection whose IKE SA is up is added to it").  On a gateway's ``remote_addrs = %any``
connection every peer's IKE SA has that connection name: site 0 vanishing makes the gateway
send a CREATE_CHILD_SA for the child into site 1's IKE SA.  One peer's disappearance changes
another peer's SAs (a duplicate Child SA for site 1, or a refusal logged against it), and with
many sites every DPD failure (or every site's goodbye, for close_action) adds one more.  strongSwan
re-establishes the lost IKE SA itself, towards the peer it had (ike_sa.c ``reestablish``), and
refuses to as a responder of virtual IPs or EAP ("asymmetric setup"); it never borrows another
peer's IKE SA.  Nothing refuses ``dpd_action = start`` or ``close_action = start`` where
``start_action = start`` is refused (remote_addrs %any, conf/connections.py).

The gateway is the real IkeService with the in-process worker (test_ikeservice_peers.Gateway: a
``remote_addrs = %any`` connection, two site-to-site peers with their own networks); DPD runs on
the gateway's engine clock, moved by hand (test_ikeservice_reconnect's Unreachable and
dpd_gives_up).  Fails on main: the gateway sends site 1 a CREATE_CHILD_SA.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from test_ikeservice_peers import Gateway, _now, run
from test_ikeservice_reconnect import Unreachable, dpd_gives_up

from tunsec.ike.config import RetransmitConfig
from tunsec.ike.constants import ExchangeType
from tunsec.ike.message import decode_message
from tunsec.ike.sa import IkeSa, State
from tunsec.services.ike import ikesas


def _sa_with(gw: Gateway, i: int) -> IkeSa:
    ident = f"site{i}.example"
    return next(sa for sa in gw.service.endpoint.sas if str(sa.peer_id) == ident and sa.state is State.ESTABLISHED)


async def _two_sites(action: str) -> Gateway:
    """The gateway with DPD (30 s, one retransmission a second later) and the child's ``action``
    (dpd_action or close_action) = start; sites 0 and 1 up."""
    gw = Gateway(2, mobike=False)
    await gw.start()
    conn = gw.service.connections["gw"]
    ike = dataclasses.replace(conn.ike, dpd_delay=30.0, retransmit=RetransmitConfig(timeout=1.0, base=1.0, tries=1))
    children = tuple(dataclasses.replace(c, **{action: "start"}) for c in conn.children)
    gw.service.connections["gw"] = dataclasses.replace(conn, ike=ike, children=children)
    gw.service.endpoint.set_configs([ike])
    gw.connect(0)
    gw.connect(1)
    await gw.settle()
    return gw


class Tap:
    """Records the CREATE_CHILD_SA requests the gateway sends to site 1 (by the IKE header alone)."""

    def __init__(self, gw: Gateway, i: int) -> None:
        self.requests: list[int] = []
        site = gw.sites[i]
        receive = site.receive

        def tapped(data: bytes, src: tuple[str, int], now: float, dst: tuple[str, int] | None = None) -> None:
            body = data[4:] if src[1] == 4500 and data[:4] == bytes(4) else data
            msg = decode_message(body)
            if msg.exchange == ExchangeType.CREATE_CHILD_SA and not msg.is_response:
                self.requests.append(msg.message_id)
            receive(data, src, now, dst)

        site.receive = tapped   # type: ignore[method-assign]


async def _settle_retries(gw: Gateway) -> None:
    # the re-initiation is a loop timer of RETRY_DELAY (shortened here), then waits for an inbound SPI
    for _ in range(5):
        await gw.settle()
        await asyncio.sleep(0.05)
    await gw.settle()


@pytest.mark.parametrize("how", ["dpd_action", "close_action"])
def test_one_peer_lost_does_not_send_a_child_into_another_peers_ike_sa(how: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ikesas, "RETRY_DELAY", 0.01)

    async def body() -> None:
        gw = await _two_sites(how)
        other = _sa_with(gw, 1)
        children_before = [c.unique_id for c in other.children]
        assert len(children_before) == 1
        tap = Tap(gw, 1)
        lost = _sa_with(gw, 0)
        if how == "dpd_action":
            gw.sites[0] = Unreachable()   # type: ignore[assignment]
            await dpd_gives_up(gw, lost)
        else:
            gw.site_sa(0).delete(_now())   # site 0 says goodbye: its IKE SA deleted by the peer
            await gw.settle()
        assert lost.is_closed
        await _settle_retries(gw)
        assert tap.requests == [], (
            f"site 0's {how} = start sent site 1 a CREATE_CHILD_SA (message ids {tap.requests}): "
            f"site 1's IKE SA now has Child SAs {[c.unique_id for c in other.children]}, was {children_before}")
        assert [c.unique_id for c in other.children] == children_before

    run(body())


def test_a_child_the_peer_deleted_is_created_again_in_its_own_ike_sa(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Child SA's own close_action = start (installs._child_down): site 1 deletes its Child SA, the
    gateway creates it again with ``tries.later(conn, child)``, which commands._initiate adds to the
    connection's FIRST established IKE SA: site 0's, whose peer deleted nothing (and site 1 stays
    without its child)."""
    monkeypatch.setattr(ikesas, "RETRY_DELAY", 0.01)

    async def body() -> None:
        gw = await _two_sites("close_action")
        first, second = _sa_with(gw, 0), _sa_with(gw, 1)
        assert [c.unique_id for c in first.children] == [1] and [c.unique_id for c in second.children] == [1]
        tap0, tap1 = Tap(gw, 0), Tap(gw, 1)
        site = gw.site_sa(1)
        site.delete_child(site.children[0].unique_id)   # site 1 deletes its Child SA
        await gw.settle()
        await asyncio.sleep(1.1)   # installs._child_down's try is due after 1 s (a literal there)
        await _settle_retries(gw)
        assert tap0.requests == [], (
            f"site 1's Child SA deleted: the gateway created it again in site 0's IKE SA (now Child SAs "
            f"{[c.unique_id for c in first.children]}), site 1's has {[c.unique_id for c in second.children]}")
        assert tap1.requests and len(second.children) == 1

    run(body())
