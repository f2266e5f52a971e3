"""(review revfull F5) CAP_NET_ADMIN kept for a full tunnel is never given up, not even once a reload
made it a split tunnel that needs no exclude route.

daemon._give_up_privilege keeps CAP_NET_ADMIN (for life: netadmin.BlocksHold, the one release path,
is for blocks alone) when a tunnel is a full tunnel or an exclude route is in at the drop. Before
h/fixfull a full tunnel of a TUN tunsec made, without virtual IPs, dropped it at start. Here a site
(no ``vips``) sends everything to its hub; a reload narrows ``remote_ts`` to the hub's LAN, which
covers no IKE peer: nothing is left that needs the capability (the hub's exclude route, kept
because the hub is still configured, is no longer needed either), yet the control process, the one
that reads every unauthenticated IKE datagram, keeps the right to rewrite the host's routes,
addresses and firewall.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import tunsec_table
from ike_peers import Conn, TunsecIke
from routed_hosts import RoutedHosts

CAP_NET_ADMIN = 1 << 12


@pytest.fixture
def topo() -> Iterator[RoutedHosts]:
    t = RoutedHosts(prefix="revfull")
    with t:
        yield t


def capabilities(pid: int) -> tuple[int, str]:
    """The effective capabilities and real uid of pid."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["CapEff"].strip(), 16), fields["Uid"].split()[0]


def test_cap_net_admin_goes_once_no_full_tunnel_nor_needed_exclude_route_is_left(topo: RoutedHosts) -> None:
    site = TunsecIke(topo, Conn(topo.a, topo.b, remote_ts="0.0.0.0/0"))
    site.start()
    assert site.proc is not None
    caps, uid = capabilities(site.proc.pid)
    assert uid != "0" and caps & CAP_NET_ADMIN   # kept for the full tunnel: fine
    site.write(remote_ts=topo.b.inner_net4)
    site.readable_by_tunsec()
    r = site.cli("reload")
    assert r.returncode == 0, r.stdout + r.stderr
    tun = tunsec_table.show("-4", "dev", "tunsec0", ns=topo.a.ns)
    assert "0.0.0.0/1" not in tun and topo.b.inner_net4 in tun, tun
    # the hub's address is reached by the default route again, whatever its exclude route says
    ours = tunsec_table.proto_routes(topo.a.ns)
    caps, _ = capabilities(site.proc.pid)
    assert not caps & CAP_NET_ADMIN, f"CAP_NET_ADMIN kept with no full tunnel left (routes of tunsec's: {ours!r})"
    site.stop()
