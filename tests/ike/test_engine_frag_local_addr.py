"""Review revfrag F4: a fragmented IKE_AUTH response does not tell a wildcard initiator its address.

sa_requester.on_response: an initiator whose connection names no local address learns it where the
peer's first authenticated answer arrived (not from IKE_SA_INIT's, which anyone could send), and its
Child SAs are installed from it (ChildSaUp.local_ip; status shows it).  sa_fragments.on_fragment
hands a reassembled response to _accept_response directly and skips that step: the same IKE_AUTH
answered in fragments (a gateway sending a certificate chain over a 1280-byte path, the case RFC
7383 exists for) leaves ``local_ip`` unknown, so the first Child SA goes to the worker with the
wildcard address, and later ``dynamic`` selectors of ours have no address to stand for.
"""

from __future__ import annotations

import dataclasses
import datetime

import pytest
from test_engine_fragments import A, B, _cert_cfg, _over_mtu

from tunsec.ike.config import IkeConfig
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaUp, IkeSaUp
from tunsec.ike.testing import EPOCH, Network

NOW = EPOCH + datetime.timedelta(days=30)


def _wildcard(cfg: IkeConfig) -> IkeConfig:
    return dataclasses.replace(cfg, local_addr=None)


def _run(mtu_limited: bool) -> tuple[IkeEndpoint, list[object]]:
    net = Network()
    mode = "yes" if mtu_limited else "no"   # "no": the same IKE_AUTH, sent whole over an unlimited path
    a = net.add(A, IkeEndpoint([_wildcard(_cert_cfg(True, mode))], wall_clock=lambda: NOW))
    net.add(B, IkeEndpoint([_cert_cfg(False, mode)], wall_clock=lambda: NOW))
    if mtu_limited:
        net.drop = _over_mtu
    a.initiate("c", "net", net.now)
    net.run()
    return a, [ev for _, ev in net.events[A]]


@pytest.mark.parametrize("mtu_limited", [False, True], ids=["whole", "fragmented"])
def test_the_initiator_learns_its_address_from_the_ike_auth_response(mtu_limited: bool) -> None:
    a, events = _run(mtu_limited)
    assert any(isinstance(e, IkeSaUp) for e in events)
    # the response came in fragments, or whole
    assert (a.fragment_stats.messages_reassembled >= 1) == mtu_limited
    up = [e for e in events if isinstance(e, ChildSaUp)]
    assert up and up[0].local_ip == A
    assert a.sas[0].local_ip == A

