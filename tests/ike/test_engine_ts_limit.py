"""An authenticated peer that proposes (or answers) more traffic selectors than a Child SA holds
(review O, F1): a TS payload may list 255, each a piece of what the child allows (its address with
one TCP port each, the other side's with another), and the pairing of 255 x 255 pieces stalled the
gateway's event loop for about an hour.  Now such a request is refused with TS_UNACCEPTABLE after
bounded work, as an IKE_AUTH, a CREATE_CHILD_SA or a rekey, and so is such an answer to ours.

Two engines on a fake clock; the work is counted (selector comparisons in the receiving engine),
never timed."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from test_engine import A, B, initiator_cfg, only, responder_cfg

from tunsec.ike.config import ChildConfig, child_config
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaUp, IkeSaUp, NegotiationFailed
from tunsec.ike.exchanges import child as childmod
from tunsec.ike.sa import IkeSa
from tunsec.ike.testing import Network
from tunsec.policy import selector
from tunsec.policy.selector import Ts

N = 255   # a TS payload's most
ip = ipaddress.ip_address


def pieces(addr: str, first_port: int, n: int = N) -> tuple[Ts, ...]:
    """``addr`` cut into n selectors, TCP with one port each."""
    return tuple(Ts(ip(addr), ip(addr), 6, first_port + i, first_port + i) for i in range(n))


def many_child() -> ChildConfig:
    """The initiator's child that proposes 255 TSi x 255 TSr, all inside the responder's 'net' child."""
    return ChildConfig("many", pieces("10.1.0.1", 1000), pieces("10.2.0.1", 2000),
                       initiator_cfg().children[0].esp_proposals)


def pair(first: str = "net") -> tuple[Network, IkeEndpoint, IkeEndpoint]:
    init = initiator_cfg()
    init = dataclasses.replace(init, children=(*init.children, many_child()))
    net = Network()
    a = net.add(A, IkeEndpoint([init]))
    b = net.add(B, IkeEndpoint([responder_cfg()]))
    a.initiate("a-to-b", first, net.now)
    return net, a, b


class Work:
    """Selector comparisons made inside one endpoint's receive()."""

    def __init__(self) -> None:
        self.intersect = self.compatible = 0
        self.inside = False


@contextmanager
def work_of(endpoint: IkeEndpoint, monkeypatch: pytest.MonkeyPatch) -> Iterator[Work]:
    work = Work()
    receive, intersect, compatible = IkeEndpoint.receive, Ts.intersect, selector._compatible

    def counted_receive(self: IkeEndpoint, *args: Any, **kw: Any) -> Any:
        work.inside = self is endpoint
        try:
            return receive(self, *args, **kw)
        finally:
            work.inside = False

    def counted(field: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any) -> Any:
            if work.inside:
                setattr(work, field, getattr(work, field) + 1)
            return real(*args)
        return wrapper
    with monkeypatch.context() as m:
        m.setattr(IkeEndpoint, "receive", counted_receive)
        m.setattr(Ts, "intersect", counted("intersect", intersect))
        m.setattr(selector, "_compatible", counted("compatible", compatible))
        yield work


def refused(events: list[Any]) -> NegotiationFailed:
    (failed,) = only(events, NegotiationFailed)
    assert failed.reason == "TS_UNACCEPTABLE" and failed.child == "net", failed
    return failed


def test_a_create_child_sa_of_255_by_255_pieces_is_refused_after_bounded_work(
        monkeypatch: pytest.MonkeyPatch) -> None:
    net, a, b = pair()
    net.run()
    net.take(A), net.take(B)
    with work_of(b, monkeypatch) as work:
        a.sas[0].initiate("many")
        net.run()
    failed = refused(net.take(B))
    assert failed.ts_limit and failed.peer_request
    assert "proposed 255 TSi" in failed.detail and "(and 247 more)" in failed.detail
    assert only(net.take(A), NegotiationFailed)[0].reason == "TS_UNACCEPTABLE"
    # narrowing stops at the 17th piece kept (side_limit), nothing is paired
    assert work.compatible == 0 and work.intersect <= 2 * 17, (work.intersect, work.compatible)
    assert [c.name for c in b.sas[0].children] == ["net"]


def test_an_ike_auth_of_255_by_255_pieces_gets_its_ike_sa_but_no_child_sa(monkeypatch: pytest.MonkeyPatch) -> None:
    net, _, b = pair("many")
    with work_of(b, monkeypatch) as work:
        net.run()
    events = net.take(B)
    failed = refused(events)
    assert failed.ts_limit and only(events, IkeSaUp) and not only(events, ChildSaUp)
    assert work.compatible == 0 and work.intersect <= 2 * 17, (work.intersect, work.compatible)


def test_a_rekey_proposing_255_pieces_is_refused_after_bounded_work(monkeypatch: pytest.MonkeyPatch) -> None:
    net, a, b = pair()
    net.run()
    net.take(A), net.take(B)
    a_sa: IkeSa = a.sas[0]
    (child,) = a_sa.children
    child.local_ts, child.remote_ts = pieces("10.1.0.1", 1000), pieces("10.2.0.1", 2000)
    with work_of(b, monkeypatch) as work:
        a_sa.rekey_child(child.unique_id)
        net.run(until=net.now + 1.0)   # the refused rekey is tried again later (backoff): not until then
    failed = refused(net.take(B))
    assert failed.ts_limit and "rekey of Child SA net proposed 255 TSi" in failed.detail
    assert work.compatible == 0 and work.intersect <= 2 * 17, (work.intersect, work.compatible)


@pytest.mark.parametrize("exchange", ["IKE_AUTH", "CREATE_CHILD_SA"])
def test_an_answer_of_255_pieces_is_refused_by_the_initiator_after_bounded_work(
        exchange: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The responder (made to) answer our 10.1.0.0/16 <-> 10.2.0.0/16 with 255 pieces of each: we
    refuse it before comparing them with what we proposed, and delete the half the peer installed."""
    real = childmod.responder_select

    def cut(*args: Any, **kw: Any) -> Any:
        chosen = real(*args, **kw)
        assert isinstance(chosen, childmod.Selection)
        return dataclasses.replace(chosen, tsi=pieces("10.1.0.1", 1000), tsr=pieces("10.2.0.1", 2000))
    net, a, b = pair()
    if exchange == "CREATE_CHILD_SA":
        net.run()
        net.take(A), net.take(B)
        a.sas[0].initiate("net")
    monkeypatch.setattr(childmod, "responder_select", cut)
    with work_of(a, monkeypatch) as work:
        net.run()
    failed = refused(net.take(A))
    assert failed.ts_limit and "peer answered 255 TSi" in failed.detail
    assert work.compatible == 0 and work.intersect == 0, (work.intersect, work.compatible)
    assert [c.installed for c in a.sas[0].children] == ([True] if exchange == "CREATE_CHILD_SA" else [])
    assert len(b.sas[0].children) == len(a.sas[0].children)   # its half deleted


def test_a_dual_stack_local_ts_toward_a_client_of_one_family_is_not_too_many() -> None:
    """9 local selectors, 4 of them IPv6 toward an IPv4-only peer: 5 pairs, and the 4 that pair with
    nothing are no reason to refuse (side_limit), on either side."""
    local = ", ".join([f"10.2.{i}.0/24" for i in range(5)] + [f"fd00:{i}::/64" for i in range(4)])
    resp = dataclasses.replace(responder_cfg(), children=(child_config("net", local, "10.1.0.0/16", "aes128gcm16"),))
    init = dataclasses.replace(initiator_cfg(),
                               children=(child_config("net", "10.1.0.0/16", "0.0.0.0/0, ::/0", "aes128gcm16"),))
    net = Network()
    a = net.add(A, IkeEndpoint([init]))
    net.add(B, IkeEndpoint([resp]))
    a.initiate("a-to-b", "net", net.now)
    net.run()
    (up_b,) = only(net.take(B), ChildSaUp)
    (up_a,) = only(net.take(A), ChildSaUp)
    assert len(up_b.local_ts) == 9 and len(up_a.remote_ts) == 9
