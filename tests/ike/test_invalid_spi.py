"""INVALID_SPI: ESP for an unknown SPI is a hint, never proof (RFC 7296 §1.5, §3.10.1).

Engine: the notify goes out inside the IKE SA; the receiver answers it and
starts a liveness check, and deletes nothing. Service: a notify only for a
peer we share an established IKE SA with, at most one per second per IKE SA.
Two engines on a fake clock.
"""

from __future__ import annotations

import ipaddress
import sys
import types
from collections.abc import Sequence

import pytest
from test_engine_more import A, B, _established, only

from tunsec.dataplane.pipe import Endpoint
from tunsec.ike.constants import ExchangeType, NotifyType
from tunsec.ike.events import IkeSaDown, PeerUnreachable
from tunsec.ike.exchanges import informational
from tunsec.ike.exchanges.base import Task
from tunsec.ike.message import NotifyPayload, Payload, decode_header
from tunsec.ike.sa import State
from tunsec.ike.state import IkeSaState
from tunsec.ike.testing import Network
from tunsec.services.ike import IkeService


def ike_modules() -> list[types.ModuleType]:
    """The modules of the IKE service package (tunsec.services.ike) that read the clock."""
    return [m for n, m in list(sys.modules.items()) if n.startswith("tunsec.services.ike.") and hasattr(m, "time")]


def informational_from(net: Network, ip: str, since: int) -> list[bool]:
    """The INFORMATIONAL messages ``ip`` sent since log entry ``since``: True for responses."""
    out = []
    for sent in net.log[since:]:
        hdr = decode_header(sent.data)
        if hdr.exchange == ExchangeType.INFORMATIONAL and sent.src[0] == ip:
            out.append(hdr.is_response)
    return out


@pytest.fixture
def received(monkeypatch: pytest.MonkeyPatch) -> list[Sequence[Payload]]:
    """The payloads of every INFORMATIONAL request an engine answered."""
    seen: list[Sequence[Payload]] = []
    real = informational.respond

    def spy(st: IkeSaState, payloads: Sequence[Payload], pending: Task | None = None) -> informational.Response:
        seen.append(payloads)
        return real(st, payloads, pending)

    monkeypatch.setattr(informational, "respond", spy)
    return seen


def test_notify_starts_a_liveness_check_and_deletes_nothing(received: list[Sequence[Payload]]) -> None:
    net, a, b = _established()
    sa_a, sa_b = a.sas[0], b.sas[0]
    children_a, children_b = list(sa_a.children), list(sa_b.children)
    mark = len(net.log)
    assert sa_a.send_invalid_spi(0xC0FFEE01)
    net.run()
    # B got the SPI in the notify's data, inside the IKE SA
    notify = [p for p in received[0] if isinstance(p, NotifyPayload)]
    assert [(n.type, n.data) for n in notify] == [(NotifyType.INVALID_SPI, bytes.fromhex("c0ffee01"))]
    # A: the notify and the answer to B's liveness check; B: the answer and its check
    assert informational_from(net, A, mark) == [False, True]
    assert informational_from(net, B, mark) == [True, False]
    assert received[1] == ()   # the liveness check is an empty INFORMATIONAL
    # nothing went down: the hint alone never deletes
    assert not net.take(A) and not net.take(B)
    assert sa_a.state is State.ESTABLISHED and sa_b.state is State.ESTABLISHED
    assert sa_a.children == children_a and sa_b.children == children_b


def test_an_unanswered_liveness_check_is_dead_peer_detection() -> None:
    """Only if the peer then stops answering does B give up on it (as for any DPD)."""
    net, a, _b = _established()
    a.sas[0].send_invalid_spi(0xC0FFEE02)
    net.drop = lambda sent: sent.src[0] == A and decode_header(sent.data).is_response
    net.run()
    events = net.take(B)
    assert only(events, PeerUnreachable) and only(events, IkeSaDown)


def test_not_sent_outside_an_established_ike_sa() -> None:
    _net, a, _b = _established()
    sa_a = a.sas[0]
    sa_a.delete()
    assert not sa_a.send_invalid_spi(0x1234)


# ------------------------------------------------------------------ the service


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def service(monkeypatch: pytest.MonkeyPatch) -> tuple[IkeService, Network, Clock]:
    clock = Clock()
    for mod in ike_modules():   # each module of the IKE service reads the clock itself
        monkeypatch.setattr(mod, "time", types.SimpleNamespace(monotonic=clock.monotonic))
    net, a, _b = _established()
    svc = IkeService([], worker=lambda: None, local_addrs={})  # type: ignore[arg-type,return-value]
    svc.endpoint = a          # A's engine, wired to B on the fake network
    monkeypatch.setattr(svc, "_pump", lambda: None)   # the fake network carries the datagrams
    return svc, net, clock


def test_service_sends_nothing_without_an_ike_sa_with_that_peer(
    service: tuple[IkeService, Network, Clock],
) -> None:
    svc, net, _clock = service
    mark = len(net.log)
    for addr in ("198.51.100.7", "192.0.2.99", "2001:db8::2"):
        assert not svc.invalid_spi(0xC0000001, Endpoint(ipaddress.ip_address(addr), 4500))
    net.run()
    assert net.log[mark:] == []
    assert svc.endpoint._by_address.notified == 0   # no state kept for strangers


def test_service_rate_limits_per_ike_sa(service: tuple[IkeService, Network, Clock]) -> None:
    svc, net, clock = service
    peer = Endpoint(ipaddress.ip_address(B), 4500)
    mark = len(net.log)
    assert svc.invalid_spi(0xC0000001, peer)
    assert not svc.invalid_spi(0xC0000002, peer)      # same second: dropped
    clock.now += 0.5
    assert not svc.invalid_spi(0xC0000003, peer)
    net.run()
    assert informational_from(net, A, mark).count(False) == 1
    clock.now += 0.6                                  # a second after the first
    mark = len(net.log)
    assert svc.invalid_spi(0xC0000004, Endpoint(ipaddress.ip_address(B), 34567))   # any port: NAT
    net.run()
    assert informational_from(net, A, mark).count(False) == 1


def test_service_ignores_an_ike_sa_that_is_not_established(service: tuple[IkeService, Network, Clock]) -> None:
    svc, _net, _clock = service
    svc.endpoint.sas[0].delete()
    assert not svc.invalid_spi(0xC0000001, Endpoint(ipaddress.ip_address(B), 4500))
