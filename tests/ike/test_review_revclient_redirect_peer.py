"""Review revclient (s20) F1: a REDIRECT to the address of another connection's gateway is followed.

address_role.refused_address refuses a REDIRECT target that is this host's own, in a pool or in
another tunnel, but not one whose role is "peer": the gateway of another of the client's
connections (configured or established).  The client then starts the redirected connection's IKE
SA there, with its identity, its certificate and, as no IKE SA with *this* connection's remote
identity is up, N(INITIAL_CONTACT) (ike_auth.py build, endpoint._has_contact compares the
connection's remote.id).  The other gateway authenticates the client (same certificate), takes
the INITIAL_CONTACT as "the client rebooted" and deletes the client's IKE SA of the other
connection (RFC 7296 §2.4): one gateway (or, for a REDIRECT in IKE_SA_INIT, anyone on the path who
saw our nonce) tears down the client's tunnel to another peer.
"""

from __future__ import annotations

import datetime

import pytest

from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import DownReason, IkeSaDown
from tunsec.ike.identity import Identity
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.sa import State
from tunsec.ike.testing import EPOCH, Network, make_ca, make_cert

NOW = EPOCH + datetime.timedelta(days=30)
CA = make_ca("revclient CA")
CAROL = make_cert(CA, "carol", san=["carol.example"])
GW_A_CERT = make_cert(CA, "gw-a", san=["gw-a.example"])
GW_B_CERT = make_cert(CA, "gw-b", san=["gw-b.example"])
PROPOSALS = parse_proposals("aes128-sha256-ecp256")
CLIENT, GW_A, GW_B = "192.0.2.1", "192.0.2.2", "192.0.2.3"


def _client_conn(name: str, gw: str, gw_id: str, remote_ts: str) -> IkeConfig:
    return IkeConfig(
        name, LocalAuth("pubkey", Identity.parse("carol.example"), CAROL.cert, (), CAROL.key),
        RemoteAuth("pubkey", Identity.parse(gw_id), (CA.cert,)), PROPOSALS,
        (child_config("net", "10.1.0.0/16", remote_ts, "aes128gcm16"),),
        local_addr=CLIENT, remote_addr=gw, send_cert="always")


def _gateway(address: str, gw_id: str, cert: object, local_ts: str, **kw: object) -> IkeEndpoint:
    cfg = IkeConfig(
        "rw", LocalAuth("pubkey", Identity.parse(gw_id), cert.cert, (), cert.key),  # type: ignore[attr-defined]
        RemoteAuth("pubkey", Identity.parse("carol.example"), (CA.cert,)), PROPOSALS,
        (child_config("net", local_ts, "10.1.0.0/16", "aes128gcm16"),), local_addr=address, send_cert="always",
        **kw)  # type: ignore[arg-type]
    return IkeEndpoint([cfg], wall_clock=lambda: NOW)


def _network(redirect_on: str) -> tuple[Network, IkeEndpoint, IkeEndpoint]:
    net = Network()
    client = net.add(CLIENT, IkeEndpoint([_client_conn("corp", GW_A, "gw-a.example", "10.2.0.0/16"),
                                          _client_conn("site", GW_B, "gw-b.example", "10.3.0.0/16")],
                                         wall_clock=lambda: NOW))
    net.add(GW_A, _gateway(GW_A, "gw-a.example", GW_A_CERT, "10.2.0.0/16", redirect_to=GW_B,
                           redirect_on=redirect_on))
    gw_b = net.add(GW_B, _gateway(GW_B, "gw-b.example", GW_B_CERT, "10.3.0.0/16"))
    return net, client, gw_b


@pytest.mark.parametrize("redirect_on", ["init", "auth"])
def test_a_redirect_to_another_connections_gateway_is_not_followed(redirect_on: str) -> None:
    """``init``: the REDIRECT in IKE_SA_INIT (unauthenticated: anyone who saw our request's nonce);
    ``auth``: gateway A, authenticated, redirects in IKE_AUTH.  Either way B must keep the client's
    IKE SA of connection ``site`` (the client still has it up and sends its ESP there)."""
    net, client, gw_b = _network(redirect_on)
    site = client.initiate("site", "net", net.now)
    net.run(until=5.0)
    assert site.state is State.ESTABLISHED and gw_b.sa_count == 1
    net.take(GW_B)
    client.initiate("corp", "net", net.now)
    net.run(until=15.0)
    replaced = [ev for ev in net.take(GW_B) if isinstance(ev, IkeSaDown) and ev.reason is DownReason.REPLACED]
    assert site.state is State.ESTABLISHED   # the client does not know
    assert replaced == [], f"gateway B dropped the client's IKE SA of connection site: {replaced}"
