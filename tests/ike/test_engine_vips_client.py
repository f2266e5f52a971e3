"""A client's virtual IPs against a gateway that assigns what it should not (review N2).

Every address of a CFG_REPLY that a client takes goes on its TUN as a local address: a gateway
pushing several, or the address of a resolver, of broadcast, of itself or of another IKE peer of
the client's, would make the client's host deliver that traffic to itself (another gateway's IKE
and ESP: one peer killing the client's SAs with another).  The client takes the first address of
each family it asked for, and refuses reserved ones and IKE peers' with FAILED_CP_REQUIRED.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Callable

import pytest
from test_engine_vips import GW, V4, client_cfg, gateway, only, pools

from tunsec.ike.constants import CfgType, NotifyType
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaUp, IkeSaUp, NegotiationFailed
from tunsec.ike.exchanges import ike_config
from tunsec.ike.message import CpPayload, Payload
from tunsec.ike.state import IkeSaState
from tunsec.ike.testing import Network
from tunsec.ike.ts import Ts

CLIENT = "198.51.100.1"
OTHER_GW = "203.0.113.5"   # the client's other gateway (a second connection)
LEASE = ipaddress.ip_address("10.3.0.1")


Respond = Callable[[IkeSaState, list[Payload]], ike_config.CpAnswer]


def pushing(addresses: list[str], keep_lease: bool = True) -> Respond:
    """The gateway's CFG_REPLY with ``addresses`` after (or instead of) the lease it gave."""
    real = ike_config.respond

    def respond(st: IkeSaState, payloads: list[Payload]) -> ike_config.CpAnswer:
        answer = real(st, payloads)
        (cp,) = answer.payloads
        assert isinstance(cp, CpPayload)
        extra = ike_config.encode_attributes([(1, ipaddress.ip_address(a).packed) for a in addresses])
        return ike_config.CpAnswer([CpPayload(CfgType.CFG_REPLY, (cp.attributes if keep_lease else b"") + extra)])

    return respond


def connect(net: Network) -> IkeEndpoint:
    """The client, with a second connection to another gateway (not up yet) besides ``home``."""
    other = client_cfg("c1.example", CLIENT, (V4,))
    object.__setattr__(other, "name", "other")
    object.__setattr__(other, "remote_addr", OTHER_GW)
    client = net.add(CLIENT, IkeEndpoint([client_cfg("c1.example", CLIENT, (V4,)), other]))
    client.initiate("home", "net", net.now)
    net.run(until=net.now + 5)
    return client


def test_one_address_per_family_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ike_config, "respond", pushing(["8.8.8.8", "192.168.1.1", "10.3.0.99"]))
    net = Network()
    gateway(net, pools())
    connect(net)
    events = net.take(CLIENT)
    (up,) = only(events, IkeSaUp)
    assert up.own_vips == (LEASE,)
    (child,) = only(events, ChildSaUp)
    assert child.local_ts == (Ts.host(str(LEASE)),)
    assert not only(events, NegotiationFailed)


@pytest.mark.parametrize("address, why", [
    (GW, "the address of an IKE peer"),                 # the gateway's own outer address
    (OTHER_GW, "the address of an IKE peer"),           # the client's other gateway
    (CLIENT, "an address of this host"),                # the client's own IKE address
    ("255.255.255.255", "a reserved, broadcast"),
    ("0.0.0.1", "a reserved, broadcast"),
    ("240.0.0.1", "a reserved, broadcast"),
    ("169.254.1.1", "a reserved, broadcast"),
])
def test_an_ike_peer_or_reserved_address_is_refused(monkeypatch: pytest.MonkeyPatch, address: str, why: str) -> None:
    monkeypatch.setattr(ike_config, "respond", pushing([address], keep_lease=False))
    net = Network()
    gateway(net, pools())
    connect(net)
    events = net.take(CLIENT)
    (up,) = only(events, IkeSaUp)
    assert up.own_vips == ()
    assert not only(events, ChildSaUp)
    (failed,) = only(events, NegotiationFailed)
    assert failed.reason == NotifyType.FAILED_CP_REQUIRED.name
    assert failed.detail.startswith(f"gateway {GW} assigned virtual IP {address} ({why}")


def split_routes(n: int) -> list[tuple[int, bytes]]:
    """n INTERNAL_IP4_SUBNET attributes (13), as a gateway pushing one split route per subnet sends."""
    return [(13, ipaddress.ip_address(f"10.{100 + i // 256}.{i % 256}.0").packed + bytes([255, 255, 255, 0]))
            for i in range(n)]


@pytest.mark.parametrize("lease_first", [True, False])
def test_a_reply_with_more_than_64_attributes_still_gives_the_lease(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, lease_first: bool) -> None:
    real = ike_config.respond

    def respond(st: IkeSaState, payloads: list[Payload]) -> ike_config.CpAnswer:
        (cp,) = real(st, payloads).payloads
        assert isinstance(cp, CpPayload)
        routes = ike_config.encode_attributes(split_routes(200))
        body = cp.attributes + routes if lease_first else routes + cp.attributes
        return ike_config.CpAnswer([CpPayload(CfgType.CFG_REPLY, body)])

    monkeypatch.setattr(ike_config, "respond", respond)
    net, pool = Network(), pools()
    gateway(net, pool)
    with caplog.at_level("INFO", "tunsec.ike.exchanges.ike_config"):
        connect(net)
    events = net.take(CLIENT)
    (up,) = only(events, IkeSaUp)
    assert up.own_vips == (LEASE,) and up.dns == (ipaddress.ip_address("10.3.0.53"),)
    assert len(only(events, ChildSaUp)) == 1 and not only(events, NegotiationFailed)
    assert f"CFG_REPLY of gateway {GW} has 202 attributes (more than 64): only its addresses" in caplog.text
