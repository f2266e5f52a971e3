"""Review revlate3 F2: a flapping address gives up a MOBIKE client's IKE SA within seconds.

Since h/fixhost (review revperf F3) the address watch reports a burst of changes at least every
MAX_BURSTS settle periods (4 x 0.1 s) while the changes go on, and each report calls
IkeSa.update_addresses on every MOBIKE IKE SA we initiated (services/ike/mobility.py
_addresses_changed, local_addresses_changed).  With an UPDATE_SA_ADDRESSES already in flight,
update_addresses pulls its retransmission deadline to now (ike/sa.py update_addresses, "send it
again at once"), and the retransmission that follows counts as one of the request's
``retransmit.tries`` (5; ike/sa_timers.py).  So while the address flaps (a link going up and down, a
DHCP or SLAAC client in a loop) and the gateway does not answer at once, the sixth report
(2.4 s) gives the IKE SA up, where its retransmission schedule allows 165 s (RetransmitConfig.span).
Before h/fixhost a flap faster than the settle period made no report until it stopped.

Two engines on the fake network (test_engine_mobike._up); the reports come as the capped watch
makes them, every 0.4 s.
"""

from __future__ import annotations

from test_engine_mobike import A2, A, _move, _up

from tunsec.services.addrwatch import MAX_BURSTS

SETTLE = 0.1   # AddressWatch's default
REPORT_EVERY = MAX_BURSTS * SETTLE   # how often a flapping address is reported


def _flap(seconds: float, reports: bool) -> bool:
    """The client moved, the path to the gateway down for ``seconds`` while (reports) the address keeps
    flapping; whether the client's IKE SA is closed at the end."""
    net, client, _gateway = _up()
    _move(net, A, A2)
    net.drop = lambda s: True   # the gateway hears nothing for now
    assert client.update_addresses()
    net.run(until=net.now)
    t, end = net.now, net.now + seconds
    while t < end:
        t += REPORT_EVERY
        net.run(until=t)
        if reports:
            client.update_addresses()
        net.run(until=t)
    return client.is_closed


def test_a_flapping_address_does_not_give_up_the_ike_sa_before_its_retransmissions_would() -> None:
    closed = _flap(10.0, reports=True)
    assert not closed, "the IKE SA was given up after 10 s of address reports (its schedule allows " \
        "165 s): each report's retransmission counted as one of its tries"


def test_without_reports_the_ike_sa_waits_out_its_retransmissions() -> None:
    """Guard (passes on both): the same 10 s without the watch's reports."""
    closed = _flap(10.0, reports=False)
    assert not closed
