"""A Child SA we start proposes its remote_ts without what others hold toward its local side
(exchanges/child.py outside_others_claims; review revclaimfix F1, the proof beside this file:
test_engine_full_tunnel_beside_manual.py): in CREATE_CHILD_SA as in IKE_AUTH, the same peer's own
claims kept, a rekey keeping the narrowed selectors, and the narrowed full tunnel still a full
tunnel to the address roles (policy/claims.py containing); and what the load warns of besides
(conf/manual.py).  Two engines in memory, the site's claims booked as the daemon books them."""
from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

from test_engine_full_tunnel_beside_manual import MANUAL, SITE, _manual_claims, hub_conf
from test_engine_vips import GW, client_cfg, gateway_cfg, only

from tunsec.conf.config import parse_config
from tunsec.ike.address_role import address_role, refused_address
from tunsec.ike.config import IkeConfig, child_config
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaUp, NegotiationFailed
from tunsec.ike.identity import Identity
from tunsec.ike.testing import Network
from tunsec.policy.claims import Peer, TsClaims
from tunsec.policy.selector import Ts

MANUAL_NET = ipaddress.ip_network("10.2.2.0/24")
GW_PEER = Peer(Identity.parse("gw.example"), "psk home")   # the hub as the site's claims book it


def _pair(claims: TsClaims, *children: tuple[str, str]) -> tuple[Network, IkeEndpoint]:
    """The hub (answering what it is asked within 0.0.0.0/0) and the site, each with these children
    (name, the site's remote_ts), toward the site's LAN 10.1.0.0/24."""
    hub = dataclasses.replace(gateway_cfg(pools=()), children=tuple(
        child_config(name, remote, "10.1.0.0/24", "aes128gcm16") for name, remote in children))
    site = dataclasses.replace(client_cfg("site.example", SITE, ()), children=tuple(
        child_config(name, "10.1.0.0/24", remote, "aes128gcm16") for name, remote in children))
    net = Network()
    net.add(GW, IkeEndpoint([hub]))
    return net, net.add(SITE, IkeEndpoint([site], ts_claims=claims))


def _holds(ts: tuple[Ts, ...], net: str) -> bool:
    """Some address of ``net`` lies in the selectors."""
    wanted = Ts.parse(net)
    return any(t.intersect(wanted) is not None for t in ts)


def _book(claims: TsClaims, handle: int, cfg: IkeConfig, up: ChildSaUp) -> None:
    """As the IKE service books a Child SA that came up (installs._child_registered)."""
    claims.add(handle, up.name, GW_PEER, up.remote_ts, up.local_ts, cfg.assigns(up.child, up.remote_ts),
               cfg.names_its_peer)


def test_a_full_tunnel_added_to_an_established_ike_sa_is_proposed_without_the_manual_network(tmp_path: Path) -> None:
    net, me = _pair(_manual_claims(tmp_path), ("lan", "10.5.0.0/16"), ("net", "0.0.0.0/0"))
    me.initiate("home", "lan", net.now)
    net.run(until=net.now + 5)
    assert [u.child for u in only(net.take(SITE), ChildSaUp)] == ["lan"]
    me.sas[0].initiate("net")   # CREATE_CHILD_SA: the peer is known
    net.run(until=net.now + 5)
    events = net.take(SITE)
    assert not only(events, NegotiationFailed), events
    (up,) = only(events, ChildSaUp)
    assert up.child == "net" and not _holds(up.remote_ts, "10.2.2.0/24")
    assert _holds(up.remote_ts, "10.2.1.0/24") and _holds(up.remote_ts, "10.2.3.0/24")


def test_the_peers_own_claims_stay_in_the_proposal_and_another_connections_go(tmp_path: Path) -> None:
    claims = _manual_claims(tmp_path)
    lan = (Ts.parse("10.1.0.0/24"),)
    # an earlier IKE SA of the same hub (a reauthentication's make-before-break) holds 10.7.0.0/16
    claims.add(1, "home", GW_PEER, (Ts.parse("10.7.0.0/16"),), lan, by_name=True)
    # a peer of another PSK connection holds 10.8.0.0/16 toward the same LAN: never the hub
    claims.add(2, "branch", Peer(Identity.parse("branch.example"), "psk branch"), (Ts.parse("10.8.0.0/16"),), lan,
               by_name=True)
    net, me = _pair(claims, ("net", "0.0.0.0/0"), ("more", "10.0.0.0/8"))
    me.initiate("home", "net", net.now)   # IKE_AUTH: the peer not known yet
    net.run(until=net.now + 5)
    me.sas[0].initiate("more")            # CREATE_CHILD_SA
    net.run(until=net.now + 5)
    events = net.take(SITE)
    assert not only(events, NegotiationFailed), events
    ups = {u.child: u for u in only(events, ChildSaUp)}
    assert set(ups) == {"net", "more"}
    for up in ups.values():
        assert _holds(up.remote_ts, "10.7.0.0/16"), up.remote_ts     # the same peer's: kept
        assert not _holds(up.remote_ts, "10.8.0.0/16"), up.remote_ts
        assert not _holds(up.remote_ts, "10.2.2.0/24"), up.remote_ts


def test_a_rekey_keeps_the_narrowed_selectors(tmp_path: Path) -> None:
    net, me = _pair(_manual_claims(tmp_path), ("net", "0.0.0.0/0"))
    me.initiate("home", "net", net.now)
    net.run(until=net.now + 5)
    (first,) = only(net.take(SITE), ChildSaUp)
    sa = me.sas[0]
    sa.rekey_child(sa.children[0].unique_id)
    net.run(until=net.now + 5)
    events = net.take(SITE)
    assert not only(events, NegotiationFailed), events
    (again,) = only(events, ChildSaUp)
    assert again.rekey_of == first.unique_id
    assert set(again.remote_ts) == set(first.remote_ts) and not _holds(again.remote_ts, "10.2.2.0/24")


def test_the_narrowed_full_tunnel_is_still_a_full_tunnel_and_the_manual_network_the_tunnels(tmp_path: Path) -> None:
    claims = _manual_claims(tmp_path)
    net, me = _pair(claims, ("net", "0.0.0.0/0"))
    me.initiate("home", "net", net.now)
    net.run(until=net.now + 5)
    (up,) = only(net.take(SITE), ChildSaUp)
    assert len(up.remote_ts) == 2   # 0.0.0.0-10.2.1.255, 10.2.3.0-255.255.255.255
    st = me.sas[0]._st
    _book(claims, 1, st.config, up)
    # the hub moving (MOBIKE, a NAT float) to an address on the internet is followed: a full tunnel's
    # networks are nobody's (address_role.py), cut or not
    assert refused_address(st, "203.0.113.9", "IKE and ESP", moving=True) is None
    role = address_role([], {}, None, ipaddress.ip_address("203.0.113.9"), claims)   # type: ignore[arg-type]
    assert role is None
    # the manual tunnel's network is its own
    role = address_role([], {}, None, ipaddress.ip_address("10.2.2.7"), claims)   # type: ignore[arg-type]
    assert role is not None and role.kind == "tunnel" and role.network == MANUAL_NET
    assert role.connection == "manual tunnel legacy"


def test_pieces_with_a_gap_nobody_holds_are_no_full_tunnel() -> None:
    """The widening joins only across what other claims hold: a peer given two pieces of the
    address space (a hub's spoke) is that tunnel's, not a default route."""
    claims = TsClaims()
    claims.add(1, "hub", GW_PEER, (Ts.parse("0.0.0.0-10.2.1.255"), Ts.parse("10.2.3.0-255.255.255.255")),
               (Ts.parse("10.1.0.0/24"),))
    role = address_role([], {}, None, ipaddress.ip_address("203.0.113.9"), claims)   # type: ignore[arg-type]
    assert role is not None and role.kind == "tunnel" and role.connection == "hub"
    claims.add(-1, "manual tunnel legacy", Peer("legacy", "manual"), (Ts.parse("10.2.2.0/24"),),
               (Ts.parse("10.1.0.0/24"),))
    assert address_role([], {}, None, ipaddress.ip_address("203.0.113.9"), claims) is None   # type: ignore[arg-type]


POOL_CONF = """pools { rw { addrs = 10.2.2.128/25 } }
connections { rw { local_addrs = """ + SITE + """
  local { auth = psk
 id = site.example }
  remote { auth = psk }
  pools = rw
  children { net { local_ts = 10.1.0.0/24
 remote_ts = dynamic } } } }
secrets { ike { secret = 0sBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSY= } }
"""


def test_the_load_warns_of_a_pool_inside_a_manual_tunnels_network(tmp_path: Path) -> None:
    head = f"tunsec {{ state_dir = {tmp_path}/state }}\n"
    warned = [w for w in parse_config(head + POOL_CONF + MANUAL).warnings if "manual tunnel legacy" in w.message]
    assert [w.key for w in warned] == ["connections.rw.pools"], warned
    assert "pool rw (10.2.2.129-10.2.2.254)" in warned[0].message
    apart = POOL_CONF.replace("10.2.2.128/25", "10.3.0.0/24")
    assert not [w for w in parse_config(head + apart + MANUAL).warnings if "manual tunnel" in w.message]


def test_the_load_leaves_a_full_tunnel_toward_another_local_side_alone(tmp_path: Path) -> None:
    text = hub_conf(tmp_path, "0.0.0.0/0").replace("local_ts = 10.1.0.0/24", "local_ts = 10.4.0.0/24", 1)
    warned = [w for w in parse_config(text).warnings if "manual tunnel" in w.message]
    assert not warned
    message = next(w.message for w in parse_config(hub_conf(tmp_path, "0.0.0.0/0")).warnings
                   if "manual tunnel legacy" in w.message)
    assert "narrowed around the tunnel" in message
