"""Review revperf (s20) F1: any peer at a gateway's address suppresses our INITIAL_CONTACT there.

h/fixclient's second line (endpoint._has_contact) counts every established IKE SA of our local
identity whose peer address is the gateway's, whoever initiated it and whoever the peer is.  A road
warrior of this host's own gateway connection that shares the partner gateway's public address (one
NAT in front of the partner's office and its gateway) is such an IKE SA: after our restart, our
site-to-site connection to that gateway then goes without INITIAL_CONTACT, and the gateway keeps
the IKE SA (and Child SAs) it had with us before the restart next to the new one (until its DPD;
forever without DPD).  Before h/fixclient the road warrior's identity, not the partner's, kept it
from counting.  One peer (the road warrior) decides how our IKE SA with another is set up.
"""

from __future__ import annotations

import dataclasses

from test_engine_redirect import CLIENT, GW_A, client_cfg, gateway_cfg

from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import DownReason, IkeSaDown
from tunsec.ike.identity import Identity
from tunsec.ike.sa import IkeSa, State
from tunsec.ike.testing import Network

HUB = Identity.parse("carol.example")      # this host's identity: its client and its gateway connection
DAVE = Identity.parse("dave.example")      # a road warrior of ours, behind the partner's public address


def _our_host() -> IkeEndpoint:
    """``rw``: our site-to-site connection to GW_A (an initiator); ``gw``: our gateway connection
    for road warriors of any address (a responder, the same local identity)."""
    rw = client_cfg()
    road = gateway_cfg(CLIENT, name="gw", local=rw.local, remote=dataclasses.replace(rw.remote, id=DAVE))
    return IkeEndpoint([rw, road])


def _partner_site() -> IkeEndpoint:
    """GW_A: the partner's gateway (``rw``) and, behind the same public address, dave, one of our
    road warriors (``dave``, initiating to our host)."""
    dave = client_cfg(name="dave", local=dataclasses.replace(client_cfg().local, id=DAVE),
                      remote=dataclasses.replace(client_cfg().remote, id=HUB), local_addr=GW_A, remote_addr=CLIENT)
    return IkeEndpoint([gateway_cfg(GW_A), dave])


def _site_up() -> tuple[Network, IkeEndpoint, IkeSa]:
    """Our ``rw`` up at GW_A; the partner's IKE SA of it (which our restart leaves there)."""
    net = Network()
    net.add(CLIENT, _our_host())
    partner = net.add(GW_A, _partner_site())
    net.nodes[CLIENT].initiate("rw", "net", 0.0)
    net.run(until=5.0)
    (stale,) = partner.sas
    assert stale.state is State.ESTABLISHED and stale.config.name == "rw"
    return net, partner, stale


def test_a_road_warrior_at_the_gateways_address_does_not_keep_our_stale_ike_sa_there() -> None:
    net, partner, stale = _site_up()
    # our host restarts (its IKE SAs gone, the partner's kept: no DELETE went out)
    ours = net.add(CLIENT, _our_host())
    partner.initiate("dave", "net", net.now)    # the road warrior behind the partner's NAT comes first
    net.run(until=10.0)
    (dave,) = ours.sas
    assert dave.state is State.ESTABLISHED and dave.config.name == "gw" and dave.remote_addr[0] == GW_A
    net.take(GW_A)
    fresh = ours.initiate("rw", "net", net.now)
    net.run(until=15.0)
    assert fresh.state is State.ESTABLISHED
    replaced = [e for e in net.take(GW_A) if isinstance(e, IkeSaDown) and e.reason is DownReason.REPLACED]
    # the restart's INITIAL_CONTACT ends the partner's IKE SA from before it, as without dave
    assert [e.name for e in replaced] == ["rw"], "the partner keeps our IKE SA from before the restart"
    assert stale.state is not State.ESTABLISHED


def test_without_the_road_warrior_the_restart_replaces_the_stale_ike_sa() -> None:
    """The same restart with no road warrior at GW_A (a guard: passes on main too): the partner's IKE
    SA from before the restart goes when the new one is up."""
    net, _partner, stale = _site_up()
    ours = net.add(CLIENT, _our_host())
    net.take(GW_A)
    fresh = ours.initiate("rw", "net", net.now)
    net.run(until=15.0)
    assert fresh.state is State.ESTABLISHED
    replaced = [e for e in net.take(GW_A) if isinstance(e, IkeSaDown) and e.reason is DownReason.REPLACED]
    assert [e.name for e in replaced] == ["rw"] and stale.state is not State.ESTABLISHED
