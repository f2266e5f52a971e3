"""IKE_AUTH's Child SA whose install failed while our answer was still held (the service's barrier):
the answer is rebuilt with the IKE SA in it and the Child SA refused by an error notify in place of
SA/TSi/TSr (ike/child_refusal.py; fixauthchild).  As strongSwan's child_create: NO_PROPOSAL_CHOSEN
when its SAs did not go in, TS_UNACCEPTABLE when its policies did not; the IKE SA stays on both sides,
no DELETE is sent, and a virtual IP the CP gave stays with the IKE SA.  Before, the answer carried the
Child SA and a DELETE followed: the client saw its first Child SA come up and go."""

from __future__ import annotations

import dataclasses

import pytest
from test_engine_eap_relay import MschapBackend, relay
from test_engine_eap_relay import client as relay_client
from test_engine_eap_relay import gateway as relay_gateway
from test_engine_eap_relay import setup as relay_setup
from test_engine_more import A, B, cfg, net_of, only
from test_engine_vips import V4, client_cfg, gateway, pools

from tunsec.ike.constants import ExchangeType, NotifyType
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaDown, ChildSaUp, IkeSaUp, NegotiationFailed
from tunsec.ike.message import SaPayload, TsPayload, decode_header
from tunsec.ike.sa import IkeSa, State
from tunsec.ike.testing import Network, Sent


def _ike_auth_held(net: Network) -> list[Sent]:
    """Run A's IKE_SA_INIT and IKE_AUTH to B; B's answer to the IKE_AUTH, not delivered yet."""
    for _ in range(3):        # IKE_SA_INIT request, its answer, the IKE_AUTH request
        assert net.step()
    return net.collect()


def _refused(sa: IkeSa, flight: list[Sent], policies: bool = False) -> tuple[list[Sent], bytes]:
    """``flight`` with ``sa``'s IKE_AUTH answer refused as the service's barrier swaps it (Barrier.replace)."""
    uid = sa.children[0].unique_id
    old = sa.answer_of(uid)
    assert old is not None and len(old) == 1 and sa.answer_copies() == 1
    (new,) = sa.refuse_child(uid, policies)
    return [dataclasses.replace(s, data=new) if s.data == old[0] else s for s in flight], new


@pytest.mark.parametrize(("policies", "error"), [(False, NotifyType.NO_PROPOSAL_CHOSEN),
                                                 (True, NotifyType.TS_UNACCEPTABLE)])
def test_a_failed_install_refuses_the_ike_auth_child_sa_and_keeps_the_ike_sa(policies: bool,
                                                                             error: NotifyType) -> None:
    net, a, b = net_of(cfg(True), cfg(False))
    a.initiate("conn", "net", net.now)
    flight = _ike_auth_held(net)
    (sa_b,) = b.sas
    (child_b,) = sa_b.children
    assert only(net.take(B), ChildSaUp)
    request = next(s for s in net.log if s.src[0] == A and decode_header(s.data).exchange == ExchangeType.IKE_AUTH)
    assert sa_b.refusal(child_b.unique_id, policies) is error
    flight, refusal = _refused(sa_b, flight, policies)
    assert decode_header(refusal).exchange == ExchangeType.IKE_AUTH and decode_header(refusal).is_response
    assert net.collect() == []   # (its events)
    (down,) = only(net.take(B), ChildSaDown)
    assert down.unique_id == child_b.unique_id and f"refused in our answer ({error.name})" in down.detail
    assert sa_b.state is State.ESTABLISHED and not sa_b.children
    for sent in flight:
        net.deliver(sent)
    assert [s for s in net.collect() if s.src[0] == A] == []   # A sends nothing: no DELETE (its events)
    (sa_a,) = a.sas
    events = net.take(A)
    assert only(events, IkeSaUp) and not only(events, ChildSaUp)
    (failed,) = only(events, NegotiationFailed)
    assert failed.reason == error.name and failed.child == "net"
    assert sa_a.state is State.ESTABLISHED and not sa_a.children
    # A's retransmission of its IKE_AUTH (its answer lost) gets the refusal again
    net.deliver(request)
    assert [s.data for s in net.collect() if s.src[0] == B] == [refusal]
    net.run(until=net.now + 60)
    # no DELETE either way: both keep the IKE SA, neither a Child SA
    assert not [s for s in net.log if decode_header(s.data).exchange == ExchangeType.INFORMATIONAL
                and not decode_header(s.data).is_response and s.time < 30]
    assert sa_a.state is State.ESTABLISHED and sa_b.state is State.ESTABLISHED
    assert not sa_a.children and not sa_b.children


def test_the_refused_answer_keeps_the_ike_sa_s_payloads_and_drops_the_child_sa_s() -> None:
    """The rebuilt answer is the same IKE_AUTH answer less SA, TSi, TSr, with the error notify."""
    net, a, b = net_of(cfg(True), cfg(False))
    a.initiate("conn", "net", net.now)
    _ike_auth_held(net)
    (sa_b,) = b.sas
    st = sa_b._st
    auth = st.auth_answer
    assert auth is not None and auth.unique_id == sa_b.children[0].unique_id
    before = [type(p) for p in auth.before]
    assert SaPayload not in before and TsPayload not in before
    sa_b.refuse_child(auth.unique_id)
    assert st.auth_answer is None and not st.unconfirmed


def test_the_ike_auth_answer_is_no_longer_refused_once_the_worker_took_its_child_sa() -> None:
    net, a, b = net_of(cfg(True), cfg(False))
    a.initiate("conn", "net", net.now)
    _ike_auth_held(net)
    (sa_b,) = b.sas
    uid = sa_b.children[0].unique_id
    assert sa_b.answer_of(uid) is not None
    sa_b.child_installed(uid)
    assert sa_b.answer_of(uid) is None and sa_b._st.auth_answer is None   # what was kept for it went


def test_the_ike_auth_answer_is_no_longer_refused_after_the_peer_s_next_request() -> None:
    net, a, b = net_of(cfg(True), cfg(False))
    a.initiate("conn", "net", net.now)
    net.run(until=net.now + 5)
    (sa_a,), (sa_b,) = a.sas, b.sas
    uid = sa_b.children[0].unique_id
    assert sa_b.answer_of(uid) is not None   # nothing told B the install went in (no service here)
    sa_a.initiate("web")                     # A's next request: it has our IKE_AUTH answer
    net.run(until=net.now + 5)
    assert sa_b.answer_of(uid) is None and sa_b._st.auth_answer is None


def test_a_client_s_virtual_ip_stays_with_the_ike_sa_when_its_child_sa_is_refused() -> None:
    """As strongSwan: the IKE SA is kept, and the virtual IP its CP assigned with it (the lease stays
    online, the client has its address); it goes with the IKE SA."""
    net, pool = Network(), pools()
    gw = gateway(net, pool)
    client_ip = "198.51.100.1"
    client = net.add(client_ip, IkeEndpoint([client_cfg("c1.example", client_ip, (V4,))]))
    client.initiate("home", "net", net.now)
    flight = _ike_auth_held(net)
    (sa_gw,) = gw.sas
    flight, _refusal = _refused(sa_gw, flight)
    for sent in flight:
        net.deliver(sent)
    net.collect()   # (the client's events)
    events = net.take(client_ip)
    (up,) = only(events, IkeSaUp)
    assert [str(v) for v in up.own_vips] == ["10.3.0.1"] and not only(events, ChildSaUp)
    assert [(str(x.address), x.identity, x.online) for x in pool.leases()] == [("10.3.0.1", "c1.example", True)]
    client.sas[0].delete(net.now)
    net.run(until=net.now + 5)
    assert [(str(x.address), x.online) for x in pool.leases()] == [("10.3.0.1", False)]


def test_the_last_ike_auth_answer_of_an_eap_radius_client_is_refusable_too() -> None:
    """With EAP relayed to RADIUS the Child SA comes with the answer to the client's last IKE_AUTH (its
    AUTH, after the Access-Accept's EAP-Success), a request served as any other (answered_in set)."""
    net, _a, b = relay_setup(relay_client(), relay_gateway())
    relay(net, b, MschapBackend(), until=20.0)
    (sa_b,) = b.sas
    uid = sa_b.children[0].unique_id
    assert sa_b.answer_of(uid) is not None and sa_b.refusal(uid) is NotifyType.NO_PROPOSAL_CHOSEN
