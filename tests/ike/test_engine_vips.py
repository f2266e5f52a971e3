"""Virtual IPs in IKE_AUTH (RFC 7296 §3.15): two engines on a fake clock, a gateway with pools.

The gateway leases from :class:`tunsec.policy.pools.AddressPools` as the IKE
service does; the checks are on what each side would install (ChildSaUp
selectors), what the client learns (IkeSaUp), and the pools' lease table.
"""

from __future__ import annotations

import ipaddress

import pytest

from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaUp, Event, IkeSaDown, IkeSaRekeyed, IkeSaUp, NegotiationFailed
from tunsec.ike.exchanges.ike_config import MalformedCp, decode_attributes, encode_attributes
from tunsec.ike.identity import Identity
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.sa import State
from tunsec.ike.secret import Secret
from tunsec.ike.testing import Network
from tunsec.ike.ts import Ts
from tunsec.policy.pools import AddressPools, PoolConfig

GW = "192.0.2.1"
PSK = Secret(b"a shared secret of some length")
V4, V6 = ipaddress.ip_address("0.0.0.0"), ipaddress.ip_address("::")


def gateway_cfg(pools: tuple[str, ...] = ("v4", "v6")) -> IkeConfig:
    return IkeConfig(
        "rw",
        LocalAuth("psk", Identity.parse("gw.example")),
        RemoteAuth("psk"),
        parse_proposals("aes128gcm16-prfsha256-curve25519"),
        (child_config("net", ["10.9.0.0/16", "fd00:9::/48"], "dynamic", "aes128gcm16"),),
        psk=PSK,
        local_addr=GW,
        pools=pools,
    )


def client_cfg(ident: str, ip: str, vips: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]) -> IkeConfig:
    return IkeConfig(
        "home",
        LocalAuth("psk", Identity.parse(ident)),
        RemoteAuth("psk", Identity.parse("gw.example")),
        parse_proposals("aes128gcm16-prfsha256-curve25519"),
        (child_config("net", "dynamic", ["10.9.0.0/16", "fd00:9::/48"], "aes128gcm16"),),
        psk=PSK,
        local_addr=ip,
        remote_addr=GW,
        vips=vips,
    )


def pools(v4: str = "10.3.0.0/24", v6: str = "fd00:3::/120") -> AddressPools:
    dns4 = (ipaddress.ip_address("10.3.0.53"),)
    return AddressPools([PoolConfig.parse_addrs("v4", v4, dns4), PoolConfig.parse_addrs("v6", v6)])


def gateway(net: Network, pool: AddressPools, cfg: IkeConfig | None = None) -> IkeEndpoint:
    return net.add(GW, IkeEndpoint([cfg or gateway_cfg()], address_pool=pool))


def connect(net: Network, ident: str, ip: str, vips: tuple = (V4, V6)) -> IkeEndpoint:  # type: ignore[type-arg]
    client = net.add(ip, IkeEndpoint([client_cfg(ident, ip, vips)]))
    client.initiate("home", "net", net.now)
    net.run(until=net.now + 5)
    return client


def only(events: list[Event], kind: type) -> list:  # type: ignore[type-arg]
    return [e for e in events if isinstance(e, kind)]


def hosts(*addrs: str) -> tuple[Ts, ...]:
    return tuple(Ts.host(a) for a in addrs)


def test_client_gets_a_lease_and_dynamic_ts_narrows_to_it() -> None:
    net, pool = Network(), pools()
    gateway(net, pool)
    connect(net, "c1.example", "198.51.100.1")
    (up,) = only(net.take("198.51.100.1"), IkeSaUp)
    assert up.own_vips == (ipaddress.ip_address("10.3.0.1"), ipaddress.ip_address("fd00:3::1"))
    assert up.dns == (ipaddress.ip_address("10.3.0.53"),)
    events = net.take(GW)
    (gw_up,) = only(events, IkeSaUp)
    assert gw_up.peer_vips == up.own_vips
    (gw_child,) = only(events, ChildSaUp)
    assert gw_child.remote_ts == hosts("10.3.0.1", "fd00:3::1")  # exactly the lease, not 0/0
    assert [(lease.pool, str(lease.address), lease.identity, lease.online) for lease in pool.leases()] == [
        ("v4", "10.3.0.1", "c1.example", True), ("v6", "fd00:3::1", "c1.example", True)]


def test_client_child_selectors_are_its_virtual_ip() -> None:
    net, pool = Network(), pools()
    gateway(net, pool)
    connect(net, "c1.example", "198.51.100.1", (V4,))
    (child,) = only(net.take("198.51.100.1"), ChildSaUp)
    assert child.local_ts == hosts("10.3.0.1")
    # the IPv6 remote_ts stays in TSr (as with strongSwan); with no IPv6 TSi it pairs with nothing
    assert Ts.parse("10.9.0.0/16") in child.remote_ts


def test_leases_are_unique_and_the_same_identity_gets_its_address_back() -> None:
    net, pool = Network(), pools()
    gateway(net, pool)
    c1 = connect(net, "c1.example", "198.51.100.1", (V4,))
    connect(net, "c2.example", "198.51.100.2", (V4,))
    assert [str(x.address) for x in pool.leases()] == ["10.3.0.1", "10.3.0.2"]
    c1.sas[0].delete(net.now)
    net.run(until=net.now + 5)
    assert only(net.take(GW), IkeSaDown)
    assert [(str(x.address), x.identity, x.online) for x in pool.leases()] == [
        ("10.3.0.1", "c1.example", False), ("10.3.0.2", "c2.example", True)]
    del net.nodes["198.51.100.1"]
    connect(net, "c3.example", "198.51.100.3", (V4,))  # a new identity takes a fresh address
    net.events["198.51.100.1"] = []
    connect(net, "c1.example", "198.51.100.1", (V4,))  # c1 again, from the same or another address
    (up,) = only(net.take("198.51.100.1"), IkeSaUp)
    assert up.own_vips == (ipaddress.ip_address("10.3.0.1"),)
    assert {(str(x.address), x.identity, x.online) for x in pool.leases()} == {
        ("10.3.0.1", "c1.example", True), ("10.3.0.2", "c2.example", True), ("10.3.0.3", "c3.example", True)}


def test_exhausted_pool_fails_the_child_with_internal_address_failure() -> None:
    net, pool = Network(), pools(v4="10.3.0.7-10.3.0.7")
    gateway(net, pool)
    connect(net, "c1.example", "198.51.100.1", (V4,))
    net.take(GW)
    connect(net, "c2.example", "198.51.100.2", (V4,))
    events = net.take(GW)
    assert only(events, IkeSaUp) and not only(events, ChildSaUp)
    (failed,) = only(events, NegotiationFailed)
    assert failed.reason == "INTERNAL_ADDRESS_FAILURE" and "exhausted" in failed.detail and failed.child == "net"
    client = net.take("198.51.100.2")
    (up,) = only(client, IkeSaUp)
    assert up.own_vips == () and not only(client, ChildSaUp)
    (refused,) = only(client, NegotiationFailed)
    assert refused.reason == "INTERNAL_ADDRESS_FAILURE" and refused.child == "net"
    assert [(str(x.address), x.identity) for x in pool.leases()] == [("10.3.0.7", "c1.example")]


def test_offline_lease_is_reused_for_a_new_identity_only_when_nothing_else_is_free() -> None:
    pool = pools(v4="10.3.0.1-10.3.0.2")
    a, b, c = (Identity.parse(f"{n}.example") for n in "abc")
    la = pool.acquire(["v4"], a, 4)
    lb = pool.acquire(["v4"], b, 4)
    assert la is not None and lb is not None and la.address != lb.address
    assert pool.acquire(["v4"], c, 4) is None  # both online
    pool.release(la, a)
    lc = pool.acquire(["v4"], c, 4)
    assert lc is not None and lc.address == la.address  # a was offline: its address goes to c
    assert pool.acquire(["v4"], a, 4) is None
    assert pool.acquire(["v6"], a, 4) is None  # a pool of the other family never serves


def test_second_sa_of_the_same_identity_shares_the_lease_until_both_are_gone() -> None:
    pool = pools()
    a = Identity.parse("a.example")
    first, second = pool.acquire(["v4"], a, 4), pool.acquire(["v4"], a, 4)
    assert first == second and first is not None
    pool.release(first, a)
    assert pool.leases()[0].online
    pool.release(first, a)
    assert not pool.leases()[0].online
    pool.release(first, Identity.parse("b.example"))  # not b's: ignored
    assert not pool.leases()[0].online


def test_cidr_pool_skips_network_and_broadcast() -> None:
    p = PoolConfig.parse_addrs("p", "10.3.0.0/30")
    assert (str(p.first), str(p.last)) == ("10.3.0.1", "10.3.0.2")
    r = PoolConfig.parse_addrs("r", "10.3.0.10-10.3.0.20")
    assert r.size == 11


def test_ike_rekey_keeps_the_lease_and_the_final_delete_releases_it() -> None:
    net, pool = Network(), pools()
    gateway(net, pool)
    client = connect(net, "c1.example", "198.51.100.1", (V4,))
    client.sas[0].rekey()
    net.run(until=net.now + 60)
    assert only(net.take(GW), IkeSaRekeyed)
    assert [x.online for x in pool.leases()] == [True]
    (live,) = [s for s in client.sas if s.state is State.ESTABLISHED]
    live.delete(net.now)
    net.run(until=net.now + 60)
    assert [x.online for x in pool.leases()] == [False]


def test_gateway_without_pools_answers_internal_address_failure_as_strongswan() -> None:
    net, pool = Network(), pools()
    gateway(net, pool, gateway_cfg(pools=()))
    connect(net, "c1.example", "198.51.100.1", (V4,))
    (failed,) = only(net.take(GW), NegotiationFailed)
    assert failed.reason == "INTERNAL_ADDRESS_FAILURE" and "connection rw has no pools" in failed.detail
    client = net.take("198.51.100.1")
    assert only(client, IkeSaUp) and not only(client, ChildSaUp)
    (refused,) = only(client, NegotiationFailed)
    assert refused.reason == "INTERNAL_ADDRESS_FAILURE"
    assert pool.leases() == []


def test_client_refuses_a_tsi_wider_than_its_virtual_ip() -> None:
    """A gateway whose remote_ts is not dynamic leaves TSi 0.0.0.0/0: we would source any address, so no."""
    net, pool = Network(), pools()
    cfg = gateway_cfg()
    wide = IkeConfig(cfg.name, cfg.local, cfg.remote, cfg.proposals,
                     (child_config("net", ["10.9.0.0/16"], "0.0.0.0/0", "aes128gcm16"),),
                     psk=PSK, local_addr=GW, pools=cfg.pools)
    gateway(net, pool, wide)
    connect(net, "c1.example", "198.51.100.1", (V4,))
    client = net.take("198.51.100.1")
    (up,) = only(client, IkeSaUp)
    assert up.own_vips == (ipaddress.ip_address("10.3.0.1"),) and not only(client, ChildSaUp)
    (refused,) = only(client, NegotiationFailed)
    assert refused.reason == "TS_UNACCEPTABLE" and "not our virtual IP 10.3.0.1" in refused.detail


def test_malformed_configuration_attributes_are_refused_whole() -> None:
    good = encode_attributes([(1, b""), (8, bytes(17)), (3, b"")])
    assert decode_attributes(good) == [(1, b""), (8, bytes(17)), (3, b"")]
    for bad in (good[:-1] + b"\x00\x01\x00\x09abc", b"\x00\x01\x00", b"\x00\x01\x00\x05abcd"):
        with pytest.raises(MalformedCp):
            decode_attributes(bad)
    with pytest.raises(MalformedCp, match="too many"):
        decode_attributes(encode_attributes([(1, b"")] * 65))
