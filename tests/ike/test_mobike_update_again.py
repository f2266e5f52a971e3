"""A MOBIKE client's address reported again while its UPDATE_SA_ADDRESSES waits or is out (review
revlate5 F2, RFC 4555 §3.5): once the update is answered, one more goes from the address then ours,
with that address in its NAT detection; a report while the update still waits changes where it goes
from.  Copies of one update that all left from one known address make no second one.

Two engines on the fake network (test_engine_mobike's _up and _move); the watch's reports are
update_addresses calls with the address the route now picks, as services/ike/mobility.py makes them
when it knows it."""

from __future__ import annotations

from test_engine import B
from test_engine_mobike import A2, A4, A, _move, _up

from tunsec.ike.constants import ExchangeType
from tunsec.ike.message import decode_header
from tunsec.ike.testing import Network, Sent


def _requests(net: Network, src: str) -> int:
    """How many INFORMATIONAL requests (message IDs: a copy is one) the client sent from ``src``."""
    def request(s: Sent) -> bool:
        header = decode_header(s.data)
        return s.src[0] == src and header.exchange == ExchangeType.INFORMATIONAL and not header.is_response
    return len({decode_header(s.data).message_id for s in net.log if request(s)})


def test_moved_again_with_known_addresses_the_gateway_follows_to_the_last_one() -> None:
    """A -> A2 (the update goes, the gateway moves there, its answer finds A2 gone) -> A4 (the copy
    from A4 is answered from storage): a follow-up from A4 moves the gateway's IKE and ESP there, and
    its NAT detection, built for A4, finds no NAT.  Before the fix the gateway stayed at A2."""
    net, client, gateway = _up()
    _move(net, A, A2)
    assert client.update_addresses((A2, 4500))
    assert net.step()   # the update reaches the gateway: it moves to A2 and answers there
    assert gateway.remote_addr == (A2, 4500)
    _move(net, A2, A4)   # the answer to A2 finds nobody
    assert client.update_addresses((A4, 4500))   # the copy, from A4
    net.run(until=net.now + 30)
    assert gateway.remote_addr == (A4, 4500), f"the client is at {A4}, the gateway sends IKE to {gateway.remote_addr}"
    assert gateway.esp_remote == (A4, 4500)
    assert not gateway._st.nat_peer, "the follow-up's NAT detection named another address than it left from"
    assert not client.is_closed and client.remote_addr[0] == B


def test_a_report_while_the_update_waits_sends_it_from_the_new_address() -> None:
    """The update waits behind a liveness check; the address changes again meanwhile: the update
    leaves from the newest address with its NAT detection (no NAT), and only one goes."""
    net, client, gateway = _up()
    client.send_liveness()   # out first: the update waits for its answer
    _move(net, A, A2)
    assert client.update_addresses((A2, 4500))
    _move(net, A2, A4)
    assert client.update_addresses((A4, 4500))
    net.log.clear()
    net.run(until=net.now + 30)
    assert gateway.remote_addr == (A4, 4500) and gateway.esp_remote == (A4, 4500)
    assert not gateway._st.nat_peer, "the update's NAT detection was built for the address it no longer left from"
    assert _requests(net, A4) == 2   # the liveness check, the update


def test_copies_from_one_known_address_make_one_update() -> None:
    """Guard: a report of the address the update left from sends the copy, and no second update."""
    net, client, gateway = _up()
    _move(net, A, A2)
    assert client.update_addresses((A2, 4500))
    assert client.update_addresses((A2, 4500))   # the same address reported again (another interface's change)
    net.log.clear()
    net.run(until=net.now + 30)
    assert _requests(net, A2) == 1
    assert gateway.remote_addr == (A2, 4500) and gateway.esp_remote == (A2, 4500)

