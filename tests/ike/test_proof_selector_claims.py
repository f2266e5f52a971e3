"""Review reveapfix F1 (fixed on h/fixproof): h/fixeapid bound a lease to (identity, how it was proven)
(reveapid F4), but the selector claims (policy/claims.py, the "is this another peer's address?"
check of every Child SA) still compared the identity alone.  A holder of a group PSK of a %any site
connection (remote_ts wide, no pools) who sends IDi ``alice`` is "the same peer" as the EAP user
alice, so its Child SA may hold alice's virtual IP as remote selector: its inbound SA admits packets
with alice's source address, and once alice reconnects (her new policy younger) it draws alice's
return traffic.  The same client saying IDi ``eve`` is refused (TS_UNACCEPTABLE), as it should be.

Now the peer is (identity, IkeConfig.lease_proof) in the claims (policy/claims.py Peer) and in the
worker reserve's share (services/ike/trusted.py peer_of).  Failed on main as merged (aee160c): the
'alice' client's Child SA came up, and both 'alice's had one reserve share.
"""
from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from tests.ike.test_engine_eap import NOW, B, client, gateway, only
from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaUp, IkeSaUp
from tunsec.ike.identity import Identity
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.secret import Secret
from tunsec.ike.testing import Network
from tunsec.policy.claims import Peer, TsClaims
from tunsec.policy.pools import AddressPools, PoolConfig

PSK = Secret(b"the branch routers' group PSK, long")
ANY_V4 = (ipaddress.ip_address("0.0.0.0"),)


def _branch(idi: str, addr: str) -> IkeConfig:
    """A holder of the branches' group PSK, claiming the pool's subnet is behind it."""
    return IkeConfig("br", LocalAuth("psk", Identity.parse(idi)), RemoteAuth("psk", Identity.parse("sun.example")),
                     parse_proposals("default"), (child_config("net", "10.3.0.0/24", "10.2.0.0/16"),), psk=PSK,
                     local_addr=addr, remote_addr=B)


@pytest.mark.parametrize("idi", ["eve", "alice"])
def test_a_group_psk_branch_naming_itself_alice_cannot_hold_eap_alices_virtual_ip(idi: str) -> None:
    pool = AddressPools([PoolConfig.parse_addrs("v4", "10.3.0.0/24")])
    claims = TsClaims()
    eap_gw = dataclasses.replace(gateway("%any"), pools=("v4",),
                                 children=(child_config("net", "10.2.0.0/16", "dynamic"),))
    # branches behind a group PSK: any 10/8 subnet they say they have, not a pool's leased address
    site = IkeConfig("branches", LocalAuth("psk", Identity.parse("sun.example")), RemoteAuth("psk"),
                     parse_proposals("default"), (child_config("net", "10.2.0.0/16", "10.0.0.0/8"),),
                     psk=PSK, local_addr=B)
    net = Network()
    net.add(B, IkeEndpoint([eap_gw, site], address_pool=pool, ts_claims=claims, wall_clock=lambda: NOW))
    alice = dataclasses.replace(client("alice", b"Alice-pw-1"), local_addr="192.0.2.5", vips=ANY_V4,
                                children=(child_config("net", "dynamic", "10.2.0.0/16"),))
    net.add("192.0.2.5", IkeEndpoint([alice], wall_clock=lambda: NOW)).initiate("rw", "net", net.now)
    net.run(until=net.now + 5)
    events = net.take(B)
    (up,) = only(events, IkeSaUp)
    (child,) = only(events, ChildSaUp)
    assert str(up.remote_id) == "alice" and up.peer_vips
    assert up.proof == eap_gw.lease_proof == "eap-mschapv2"
    # what the IKE service does on ChildSaUp (services/ike/installs.py): alice's Child SA claims her VIP
    claims.add(1, "gw", Peer(up.remote_id, eap_gw.lease_proof), child.remote_ts, child.local_ts, False,
               eap_gw.names_its_peer)

    branch = net.add("192.0.2.6", IkeEndpoint([_branch(idi, "192.0.2.6")], wall_clock=lambda: NOW))
    branch.initiate("br", "net", net.now)
    net.run(until=net.now + 5)
    events = net.take(B)
    assert [str(u.remote_id) for u in only(events, IkeSaUp)] == [idi]   # the PSK proves the IKE SA
    taken = [str(ts) for c in only(events, ChildSaUp) for ts in c.remote_ts]
    assert not taken, f"the group-PSK client {idi!r} holds {taken}, alice's virtual IP {up.peer_vips[0]} among them"


def test_the_worker_reserve_share_of_eap_alice_is_not_a_group_psk_clients_of_her_name() -> None:
    """The same gap in the worker's reserve for established IKE SAs (services/ike/trusted.py):
    "all the IKE SAs one identity opens share one share of the reserve", the identity alone, so a
    group-PSK holder naming itself alice (unique = no: as many IKE SAs as it likes) floods within
    EAP alice's share, and her DPD/rekeys lose their reserve.  Failed on main: one peer id."""
    from tunsec.services.ike.trusted import peer_of
    alice = Identity.parse("alice")
    common = dict(local_id=Identity.parse("sun.example"), remote_id=alice, local_port=4500, proposal="x")
    eap = IkeSaUp("gw", b"\1" * 8, b"\2" * 8, remote_addr=("192.0.2.5", 4500), proof="eap-mschapv2",
                  **common)   # type: ignore[arg-type]
    psk = IkeSaUp("branches", b"\3" * 8, b"\4" * 8, remote_addr=("192.0.2.6", 4500), proof="psk branches",
                  **common)   # type: ignore[arg-type]
    assert peer_of(eap) != peer_of(psk), "EAP user alice and a group-PSK 'alice' share one reserve share"
    again = IkeSaUp("gw", b"\5" * 8, b"\6" * 8, remote_addr=("192.0.2.7", 4500), proof="eap-mschapv2",
                    **common)   # type: ignore[arg-type]
    assert peer_of(again) == peer_of(eap), "alice's own IKE SAs still share one share"
