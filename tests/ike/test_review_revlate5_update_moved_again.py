"""Review revlate5 (2026-12-05), F2: a MOBIKE client that moves again while its UPDATE_SA_ADDRESSES is
out leaves the gateway at the address the first copy came from.

Since h/fixlate3 (review revlate3 F2) an address report during a pending UPDATE_SA_ADDRESSES sends the
request's datagrams again at once from the client's current address (ike/sa.py update_addresses), and
nothing more: no new UPDATE_SA_ADDRESSES is queued for after it.  The gateway moves the IKE SA and
its Child SAs to where the *first* copy it got came from (a retransmission is answered from storage,
RFC 7296 §2.1, and moves nothing); its answer to that copy went to an address the client may have
lost already, the answer to the later copy reaches the client, and the client's task is done.  So
a client that went Wi-Fi -> LTE -> Wi-Fi (or whose address flapped, the case h/fixlate3 was about)
within one round trip ends with the gateway sending its ESP and IKE to the LTE address it no
longer has, until a DPD gives the IKE SA up; RFC 4555 §3.5 has the initiator start a new
UPDATE_SA_ADDRESSES when its address changed while one was in progress.

Two engines on the fake network (test_engine_mobike's _up and _move)."""

from __future__ import annotations

from test_engine_mobike import A2, A, _move, _up

from tunsec.ike.testing import Sent


def _moved_back_during_the_update() -> tuple[object, object, str]:
    """The client moves A -> A2 and sends its UPDATE_SA_ADDRESSES; the gateway takes it, but its answer
    to A2 is lost: the client is back at A before it came (A2 gone).  The address report that follows
    sends the request again, from A.  The gateway's IKE path and ESP peer, and where the client is."""
    net, client, gateway = _up()
    _move(net, A, A2)
    assert client.update_addresses()
    lost = [False]

    def drop(s: Sent) -> bool:
        # the gateway's answer to A2: the client has left A2 before it arrives
        if s.src[0] != A2 and s.dst[0] == A2 and not lost[0]:
            lost[0] = True
            return True
        return False

    net.drop = drop
    net.run(until=net.now)   # the request goes, the gateway moves to A2 and answers there: lost
    assert lost[0], "the gateway did not answer the first copy"
    _move(net, A2, A)   # back on the first network, before the answer would have come
    net.drop = None
    assert client.update_addresses()   # the watch's report: the pending request again, from A
    net.run(until=net.now + 30)
    return gateway.remote_addr, gateway.esp_remote, A


def test_a_client_that_moved_again_during_its_update_is_where_the_gateway_sends() -> None:
    ike_path, esp_peer, client_at = _moved_back_during_the_update()
    assert ike_path[0] == client_at and esp_peer is not None and esp_peer[0] == client_at, (
        f"the client is at {client_at}; the gateway sends IKE to {ike_path} and ESP to {esp_peer} "
        f"(where the first copy of the UPDATE_SA_ADDRESSES came from)")


def test_one_move_is_followed() -> None:
    """Guard (passes on main): a single move with its answer received moves the gateway there."""
    net, client, gateway = _up()
    _move(net, A, A2)
    assert client.update_addresses()
    net.run(until=net.now + 5)
    assert gateway.remote_addr[0] == A2 and gateway.esp_remote is not None and gateway.esp_remote[0] == A2
