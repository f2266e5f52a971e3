"""What a peer's ``dynamic`` remote_ts stands for on the gateway (child.remote_dynamic): only
addresses the peer has proven are its, never one an authenticated request merely came from.

The attacker is a logged-in client: it holds its IKE SA's keys, so it can send an authenticated
request from a spoofed source X (a third party, or another client) and fetch the stored answer
by sending the same request again from its real address.  Two engines on the fake network.
"""

from __future__ import annotations

import dataclasses
import logging

import pytest
from test_engine import A, B, psk_config
from test_engine_vips import GW, V4, client_cfg, gateway, hosts, only, pools

from tunsec.ike.config import child_config
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaUp, IkeSaUp, NegotiationFailed
from tunsec.ike.message import decode_header
from tunsec.ike.sa import IkeSa
from tunsec.ike.testing import Network, Sent
from tunsec.ike.ts import Ts
from tunsec.policy.pools import AddressPools, PoolConfig

X = "198.51.100.77"   # a third party's address (or another client's)
A2 = "192.0.2.11"     # the client's new address after a real move


def _up(mobike: bool) -> tuple[Network, IkeSa, IkeSa]:
    """A client at A that proposes TSi 0.0.0.0/0, a gateway with remote_ts = dynamic."""
    net = Network()
    ci = child_config("net", "0.0.0.0/0", "10.2.0.0/16", "aes128gcm16")
    cr = child_config("net", "10.2.0.0/16", "dynamic", "aes128gcm16")
    init = dataclasses.replace(psk_config("a-to-b", "moon.example", "sun.example", A, B, (ci,)), mobike=mobike)
    a = net.add(A, IkeEndpoint([init]))
    b = net.add(B, IkeEndpoint([psk_config("b-from-a", "sun.example", "moon.example", B, None, (cr,))]))
    a.initiate("a-to-b", "net", net.now)
    net.run()
    (up,) = only(net.take(B), ChildSaUp)
    assert up.remote_ts == hosts(A)
    (client,), (gw,) = a.sas, b.sas
    assert client.mobike == gw.mobike == mobike
    return net, client, gw


def _covers(ts: tuple[Ts, ...], addr: str) -> bool:
    return any(t.contains(Ts.host(addr)) for t in ts)


def _requests_to_gateway(net: Network) -> list[Sent]:
    return [s for s in net.collect() if s.dst[0] == B]


def test_a_spoofed_mobike_update_gives_no_child_sa_for_its_source() -> None:
    net, client, gw = _up(mobike=True)
    client.update_addresses((A, 4500))
    for s in _requests_to_gateway(net):   # UPDATE_SA_ADDRESSES, from a spoofed X
        net.deliver(Sent(s.time, (X, 4500), s.dst, s.data))
    assert gw.remote_addr == (X, 4500) and gw.esp_remote == (A, 4500)   # moved, not yet checked
    for s in net.collect():   # the attacker fetches the stored answer from A
        if s.src[0] == B and decode_header(s.data).is_response:
            net.deliver(Sent(s.time, s.src, (A, 4500), s.data))
    client.initiate("net")   # CREATE_CHILD_SA for TSi 0.0.0.0/0, from the real address
    for s in _requests_to_gateway(net):
        net.deliver(s)
    net.collect()
    (up,) = only(net.take(B), ChildSaUp)
    assert up.remote_ts == hosts(A), "dynamic followed the unchecked UPDATE_SA_ADDRESSES"
    assert not _covers(up.remote_ts, X) and up.remote_addr == (A, 4500)


def _child_from_spoofed_source(net: Network, client: IkeSa, gw: IkeSa) -> ChildSaUp:
    """The client's CREATE_CHILD_SA for TSi 0.0.0.0/0 from a spoofed X, where the SA floats
    (RFC 7296 §2.23); the answer to X is lost; the same request from A fetches it."""
    client.initiate("net")
    client._changed()
    request = _requests_to_gateway(net)
    for s in request:
        net.deliver(Sent(s.time, (X, 4500), s.dst, s.data))
    assert gw.remote_addr == (X, 4500)
    net.collect()
    for s in request:
        net.deliver(s)
    net.run(until=net.now + 1)
    (up,) = only(net.take(B), ChildSaUp)
    return up


def test_a_spoofed_request_without_mobike_gives_no_child_sa_for_its_source() -> None:
    net, client, gw = _up(mobike=False)
    up = _child_from_spoofed_source(net, client, gw)
    assert up.remote_ts == hosts(A), "dynamic followed an unproven float"
    client.send_liveness()   # any request from A floats the SA back
    net.run(until=net.now + 2)
    assert len(gw.children) == 2 and not any(_covers(c.remote_ts, X) for c in gw.children)


def test_the_proven_address_survives_an_ike_rekey() -> None:
    net, client, gw = _up(mobike=False)
    client.rekey()
    net.run(until=net.now + 1)
    net.take(B)
    (new_client,), (new_gw,) = net.nodes[A].sas, net.nodes[B].sas
    assert new_gw is not gw and new_client is not client
    up = _child_from_spoofed_source(net, new_client, new_gw)
    assert up.remote_ts == hosts(A)


def test_a_move_that_passed_the_return_routability_check_is_what_dynamic_stands_for() -> None:
    net, client, gw = _up(mobike=True)
    net.nodes[A2] = net.nodes.pop(A)
    net.events[A2] = net.events.pop(A)
    assert client.update_addresses((A2, 4500))
    net.run(until=net.now + 1)
    assert gw.esp_remote == (A2, 4500)   # the check passed
    client.initiate("net")
    net.run(until=net.now + 1)
    (up,) = only(net.take(B), ChildSaUp)
    assert up.remote_ts == hosts(A2)


def test_a_client_without_a_lease_gets_nothing_inside_a_pool(caplog: pytest.LogCaptureFixture) -> None:
    """A client that asks for no virtual IP, at an address inside the pool: its dynamic would be a
    host policy over a lease of another client's (now or later).  Refused, and said why."""
    net, pool = Network(), pools(v4="10.3.0.0/24")
    gateway(net, pool)
    inside = "10.3.0.7"
    client = net.add(inside, IkeEndpoint([client_cfg("c1.example", inside, ())]))
    with caplog.at_level(logging.WARNING, logger="tunsec.ike"):
        client.initiate("home", "net", net.now)
        net.run(until=net.now + 5)
    events = net.take(GW)
    assert only(events, IkeSaUp) and not only(events, ChildSaUp)
    (failed,) = only(events, NegotiationFailed)
    assert failed.reason == "TS_UNACCEPTABLE" and failed.child == "net"
    assert "rw: peer c1.example has no virtual IP and its address 10.3.0.7 lies in pool v4" in caplog.text
    assert not pool.leases()


def test_a_client_without_a_lease_outside_the_pools_gets_its_address() -> None:
    """As strongSwan: with no virtual IP, a client's dynamic is its (proven) address."""
    net, pool = Network(), pools()
    gateway(net, pool)
    outside = "198.51.100.1"
    client = net.add(outside, IkeEndpoint([client_cfg("c1.example", outside, ())]))
    client.initiate("home", "net", net.now)
    net.run(until=net.now + 5)
    (up,) = only(net.take(GW), ChildSaUp)
    assert up.remote_ts == hosts(outside)


def test_a_client_with_a_lease_gets_only_the_lease() -> None:
    net, pool = Network(), pools()
    gateway(net, pool)
    inside = "10.3.0.7"   # its outer address lies in the pool, but it holds a lease
    client = net.add(inside, IkeEndpoint([client_cfg("c1.example", inside, (V4,))]))
    client.initiate("home", "net", net.now)
    net.run(until=net.now + 5)
    (up,) = only(net.take(GW), ChildSaUp)
    assert up.remote_ts == hosts("10.3.0.1")


def test_which_pool_holds_an_address() -> None:
    pool = AddressPools([PoolConfig.parse_addrs("net", "10.3.0.0/24"),
                         PoolConfig.parse_addrs("rng", "10.4.0.10-10.4.0.20"),
                         PoolConfig.parse_addrs("v6", "fd00:3::/120")])
    names = ("net", "rng", "v6")
    # a subnet pool's network and broadcast address are never leased, but route into it all the same
    assert [pool.holding(names, a) for a in ("10.3.0.0", "10.3.0.255", "10.4.0.10", "10.4.0.20", "fd00:3::ff")] == [
        "net", "net", "rng", "rng", "v6"]
    assert [pool.holding(names, a) for a in ("10.3.1.0", "10.4.0.9", "10.4.0.21", "fd00:3::100")] == [None] * 4
    assert pool.holding(("rng",), "10.3.0.7") is None   # only the connection's own pools count
