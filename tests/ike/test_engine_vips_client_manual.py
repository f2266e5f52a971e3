"""A client's virtual IP inside a manual tunnel's remote network (review revvip: "manual tunnels'
networks are not consulted").

The "tunnel" role (address_role.py) reads the Child SAs' claims (policy/claims.py), and the daemon
books its manual tunnels' networks in the same claims (services/manual_claims.py): a gateway
assigning this host an address of a network routed into a manual tunnel is refused as for another
connection's, and the refusal names the manual tunnel."""
from __future__ import annotations

from pathlib import Path

from test_engine_vips import gateway
from test_engine_vips_client import CLIENT
from test_engine_vips_client_tunnels import home, leasing, refused, run, wide_gateway
from test_manual_claims import config, write
from test_manual_network_reload_no_ike_peer import KEY, hub, manual

from tunsec.conf.config import load_config
from tunsec.daemon import Daemon
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.testing import Network
from tunsec.runtime import resolved

LEGACY_HOST = "172.16.0.10"


def test_a_vip_inside_a_manual_tunnels_remote_network_is_refused(tmp_path: Path) -> None:
    """The manual tunnel legacy routes 172.16.0.0/24; the upstream gateway assigns 172.16.0.10."""
    legacy = manual(KEY).replace("10.2.2.0/24", "172.16.0.0/24")
    daemon = Daemon(resolved(load_config(write(tmp_path, config(tmp_path, hub(1), legacy)))))
    assert daemon.ike is not None
    net = Network()
    gateway(net, leasing(LEGACY_HOST), wide_gateway())
    client = net.add(CLIENT, IkeEndpoint([home()], ts_claims=daemon.ike.ts_claims))
    refused(run(client, net), LEGACY_HOST, f"virtual IP {LEGACY_HOST} (inside remote_ts 172.16.0.0/24 of manual "
                                           "tunnel legacy: as ours it would take that tunnel's traffic to it)")
