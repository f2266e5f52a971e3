"""Review revfrag F5: of two certificate connections told apart only by their CAs, the second is
never reached; its clients are refused as failed authentications and banned.

ike_auth._select_config picks the responder's connection from IDi/IDr and the AUTH method before
the certificate is looked at: with ``remote.id`` %any in both, the first in the file wins, and
its ``cacerts`` alone are tried (certs.verify_peer), so a client of the other CA fails with
"not trusted" (an AuthFailed that counts towards ``auth_failures``: the contractors' NAT is banned
after a few tries).  strongSwan verifies with every trusted CA and then moves on to the next
candidate connection whose CA constraint (``cacerts``) the chain satisfies (ike_auth.c,
update_cfg_candidates), so its contractors get their own connection.
"""

from __future__ import annotations

import datetime

from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import AuthFailed, ChildSaUp, IkeSaUp
from tunsec.ike.identity import Identity
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.testing import EPOCH, Issued, Network, make_ca, make_cert

NOW = EPOCH + datetime.timedelta(days=30)
STAFF_CA, CONTRACTORS_CA = make_ca("revfrag staff CA"), make_ca("revfrag contractors CA")
GW = make_cert(STAFF_CA, "gw", san=["gw.example"])
PROPOSALS = parse_proposals("aes128-sha256-ecp256")
CLIENT, GATEWAY = "192.0.2.1", "192.0.2.2"


def _gateway_conn(name: str, ca: Issued, client_net: str) -> IkeConfig:
    return IkeConfig(
        name, LocalAuth("pubkey", Identity.parse("gw.example"), GW.cert, (), GW.key),
        RemoteAuth("pubkey", Identity.any(), (ca.cert,)), PROPOSALS,
        (child_config("net", "10.0.0.0/16", client_net, "aes128gcm16"),), local_addr=GATEWAY, send_cert="always")


def _client(me: Issued, ident: str, client_net: str) -> IkeConfig:
    return IkeConfig(
        "c", LocalAuth("pubkey", Identity.parse(ident), me.cert, (), me.key),
        RemoteAuth("pubkey", Identity.parse("gw.example"), (STAFF_CA.cert,)), PROPOSALS,
        (child_config("net", client_net, "10.0.0.0/16", "aes128gcm16"),),
        local_addr=CLIENT, remote_addr=GATEWAY, send_cert="always")


def _connect(me: Issued, ident: str, client_net: str) -> list[tuple[str, object]]:
    net = Network()
    a = net.add(CLIENT, IkeEndpoint([_client(me, ident, client_net)], wall_clock=lambda: NOW))
    net.add(GATEWAY, IkeEndpoint([_gateway_conn("staff", STAFF_CA, "10.1.0.0/16"),
                                  _gateway_conn("contractors", CONTRACTORS_CA, "10.9.0.0/16")],
                                 wall_clock=lambda: NOW))
    a.initiate("c", "net", net.now)
    net.run()
    return [(sa.name, ev) for sa, ev in net.events[GATEWAY]]


def test_a_client_of_the_second_connections_ca_gets_that_connection() -> None:
    bob = make_cert(CONTRACTORS_CA, "bob", san=["bob@contractors.example"])
    events = _connect(bob, "bob@contractors.example", "10.9.0.0/16")
    assert not [ev for _, ev in events if isinstance(ev, AuthFailed)], events
    assert [name for name, ev in events if isinstance(ev, IkeSaUp)] == ["contractors"]
    assert [name for name, ev in events if isinstance(ev, ChildSaUp)] == ["contractors"]


def test_a_client_of_the_first_connections_ca_still_gets_the_first() -> None:
    """What the fix must keep: each connection's CA binds its clients to it (alice never lands in
    contractors, bob never in staff)."""
    alice = make_cert(STAFF_CA, "alice", san=["alice@staff.example"])
    events = _connect(alice, "alice@staff.example", "10.1.0.0/16")
    assert [name for name, ev in events if isinstance(ev, IkeSaUp)] == ["staff"]
