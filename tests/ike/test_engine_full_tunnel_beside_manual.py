"""review revclaimfix F1: a site-to-site full tunnel beside a manual tunnel never comes up.

h/fixmanclaims books each manual tunnel's remote_ts toward its local_ts in the selector claims.  A
connection of this host with ``local_ts = 10.1.0.0/24, remote_ts = 0.0.0.0/0`` (a site's default
route through an IKE hub) beside a manual tunnel 10.2.2.0/24 toward 10.1.0.0/24 proposes TSr
0.0.0.0/0 whole; the responder answers within it, 0.0.0.0/0, and answer_not_others refuses that
answer at every try (nothing can be narrowed in an answer).  Before h/fixmanclaims it came up (the
manual policies' band carried 10.2.2.0/24 outbound).  The load is silent about it
(ike_inside_manual_warnings warns only of a child *inside* a manual tunnel's remote_ts), so a site
upgrading loses its default route with runtime TS_UNACCEPTABLE lines only.

The fix proposed: our own proposal leaves out what the claims hold (as outside_others_leases leaves
out the pools), so the responder's answer lies outside the manual network; at least, a load
warning for an initiated child whose remote_ts holds a manual tunnel's toward meeting local_ts.
Both tests failed on main before h/fixclaims2 (exchanges/child.py outside_others_claims, the
load warning of conf/manual.py); further cases: test_engine_proposal_outside_claims.py."""
from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

from test_engine_vips import GW, client_cfg, gateway_cfg, only

from tunsec.conf.config import parse_config
from tunsec.ike.config import child_config
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaUp
from tunsec.ike.testing import Network
from tunsec.policy.claims import TsClaims
from tunsec.services.manual_claims import ManualClaims

SITE = "198.51.100.1"
KEY = "0x" + "11" * 20
MANUAL = f"""manual {{
  legacy {{ local_addr = {SITE}
    remote_addr = 192.0.2.50
    local_ts = 10.1.0.0/24
    remote_ts = 10.2.2.0/24
    spi_in = 0xc0010001
    key_in = {KEY}
    spi_out = 0xc0020001
    key_out = 0x{"22" * 20} }}
}}
"""


def _manual_claims(tmp: Path) -> TsClaims:
    cfg = parse_config(f"tunsec {{ state_dir = {tmp}/state }}\n" + MANUAL)
    claims = TsClaims()
    ManualClaims(claims).follow(cfg.manual)   # as the daemon does before the IKE service answers anyone
    return claims


def test_a_full_tunnel_we_initiate_beside_a_manual_tunnel_comes_up_without_its_network(tmp_path: Path) -> None:
    hub = dataclasses.replace(gateway_cfg(pools=()), children=(
        child_config("net", "0.0.0.0/0", "10.1.0.0/24", "aes128gcm16"),))
    site = dataclasses.replace(client_cfg("site.example", SITE, ()), children=(
        child_config("net", "10.1.0.0/24", "0.0.0.0/0", "aes128gcm16"),))
    net = Network()
    net.add(GW, IkeEndpoint([hub]))
    me = net.add(SITE, IkeEndpoint([site], ts_claims=_manual_claims(tmp_path)))
    me.initiate("home", "net", net.now)
    net.run(until=net.now + 5)
    ups = only(net.take(SITE), ChildSaUp)
    # on main: none (the hub's answer 0.0.0.0/0 refused: "overlaps 10.2.2.0/24 of manual tunnel legacy")
    assert ups, "the site's default-route tunnel never comes up beside the manual tunnel"
    manual_host = ipaddress.ip_address("10.2.2.7")
    assert not any(manual_host in net_ for ts in ups[0].remote_ts for net_ in ts.networks())


def hub_conf(tmp: Path, remote_ts: str) -> str:
    """A site's connection to its hub, started by us, local_ts the manual tunnel's local side."""
    return (f"tunsec {{ state_dir = {tmp}/state }}\n"
            "connections { hub { local_addrs = " + SITE + "\n remote_addrs = " + GW + "\n"
            " local { auth = psk\n id = site.example }\n remote { auth = psk\n id = gw.example }\n"
            " children { net { local_ts = 10.1.0.0/24\n remote_ts = " + remote_ts + "\n start_action = start } } } }\n"
            "secrets { ike { secret = 0sBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSY= } }\n" + MANUAL)


def _warned(text: str) -> bool:
    return any("manual tunnel legacy" in w.message and w.key.startswith("connections.hub.children.net")
               for w in parse_config(text).warnings)


def test_the_load_warns_of_an_initiated_full_tunnel_a_manual_tunnel_cuts_into(tmp_path: Path) -> None:
    assert _warned(hub_conf(tmp_path, "10.2.2.0/25"))   # inside the manual tunnel's: warned on main too
    # 0.0.0.0/0: every answer refused (the test above), yet silent on main
    assert _warned(hub_conf(tmp_path, "0.0.0.0/0"))
