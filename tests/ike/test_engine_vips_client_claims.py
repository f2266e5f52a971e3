"""A client's virtual IP inside what another connection's Child SA holds (review revvip F1).

The "tunnel" role (address_role.py) read the connections' configured remote_ts only.  A hub of %any
spokes whose remote_ts is 0.0.0.0/0 (a full tunnel: no one's in particular) holds, in each spoke's
Child SA, that spoke's LAN (172.16.0.0/24, narrowed at negotiation and booked in TsClaims by the IKE
service): routed through the TUN to that spoke.  An upstream gateway assigning this host, as a client,
172.16.0.10 would have the hub's traffic to that spoke host delivered locally.  The same for any wide
remote_ts narrowed at negotiation, and for a Child SA whose connection a reload dropped (it is still
up until torn down).  The client now consults what the Child SAs hold, by the rules the remote_ts
follow: its own connection's claims, and a peer's claims that are together a full tunnel, count for
none.
"""
from __future__ import annotations

import dataclasses
import ipaddress

import pytest
from test_engine_vips import gateway, gateway_cfg, only
from test_engine_vips_client import CLIENT
from test_engine_vips_client_tunnels import home, leasing, refused, run, wide_gateway

from tunsec.ike.config import IkeConfig, child_config
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaUp, IkeSaUp, NegotiationFailed
from tunsec.ike.identity import Identity
from tunsec.ike.testing import Network
from tunsec.policy.claims import TsClaims
from tunsec.policy.selector import Ts

SPOKE_HOST = "172.16.0.10"
SPOKE = Identity.parse("spoke.example")


def hub(remote_ts: str) -> IkeConfig:
    """The host's gateway connection to spokes of any identity (no Child SA set up in these tests:
    its claims are booked as the IKE service books a spoke's ChildSaUp)."""
    return dataclasses.replace(gateway_cfg(()), name="hub", local_addr=CLIENT,
                               children=(child_config("lan", "10.1.0.0/24", remote_ts, "aes128gcm16"),))


def claims(*held: tuple[str, list[str]]) -> TsClaims:
    """One Child SA of a spoke per (connection, its remote selectors), toward the hub's LAN."""
    booked = TsClaims()
    for handle, (conn, remote) in enumerate(held, 1):
        booked.add(handle, conn, SPOKE, [Ts.parse(t) for t in remote], [Ts.parse("10.1.0.0/24")])
    return booked


@pytest.mark.parametrize(("own", "configs", "held", "network"), [
    # a hub of any spoke LAN: its remote_ts /0 counts for no one, the spoke's /24 does
    ("10.9.0.0/16", ["0.0.0.0/0"], [("hub", ["172.16.0.0/24"])], "172.16.0.0/24"),
    # ours /16 beats the hub's configured /12, not the spoke's /24 chosen from it
    ("172.16.0.0/16", ["172.16.0.0/12"], [("hub", ["172.16.0.0/24"])], "172.16.0.0/24"),
    # a spoke LAN given as a range, not a prefix: its most specific network holding the address
    ("10.9.0.0/16", ["0.0.0.0/0"], [("hub", ["172.16.0.8-172.16.0.11"])], "172.16.0.8/30"),
    # the hub went in a reload, its spoke's Child SA did not (yet)
    ("10.9.0.0/16", [], [("hub", ["172.16.0.0/24"])], "172.16.0.0/24"),
])
def test_a_vip_inside_what_another_connections_child_sa_holds_is_refused(
        own: str, configs: list[str], held: list[tuple[str, list[str]]], network: str) -> None:
    net = Network()
    gateway(net, leasing(SPOKE_HOST), wide_gateway())
    client = net.add(CLIENT, IkeEndpoint([home(own), *(hub(ts) for ts in configs)], ts_claims=claims(*held)))
    refused(run(client, net), SPOKE_HOST, f"inside remote_ts {network} of connection hub")


@pytest.mark.parametrize(("own", "held", "address"), [
    ("10.9.0.0/16", [("hub", ["0.0.0.0/0"])], "10.3.0.1"),                  # a full tunnel's Child SA
    ("10.9.0.0/16", [("hub", ["0.0.0.0/1"]), ("hub", ["128.0.0.0/1"])], "10.3.0.1"),   # in halves, two SAs
    ("10.9.0.0/16", [("hub", ["10.3.0.0/16"])], SPOKE_HOST),                # the spoke holds another LAN
    ("172.16.0.0/16", [("home", ["172.16.0.0/24"])], SPOKE_HOST),           # our own connection's (a reauth)
    ("172.16.0.0/24", [("hub", ["172.16.0.0/24"])], SPOKE_HOST),            # ours holds it as specifically
])
def test_a_vip_no_other_child_sa_holds_more_specifically_is_taken(
        own: str, held: list[tuple[str, list[str]]], address: str) -> None:
    """Where the fix stops (these pass before it too, and fail for a check that refused more)."""
    net = Network()
    gateway(net, leasing(address), wide_gateway())
    client = net.add(CLIENT, IkeEndpoint([home(own), hub("0.0.0.0/0")], ts_claims=claims(*held)))
    events = run(client, net)
    assert not only(events, NegotiationFailed), [getattr(e, "detail", "") for e in only(events, NegotiationFailed)]
    (up,) = only(events, IkeSaUp)
    assert up.own_vips == (ipaddress.ip_address(address),)
    assert only(events, ChildSaUp)
