"""A reload that names a network a hub's spoke holds takes it from the spoke (review revtrap F1), end to end.

StarHosts: the tunsec gateway G with the hub connection of roadwarrior.hub_gateway (any site with the
PSK, the sites' 10.2.0.0/16), strongSwan sites A (10.2.1.0/24) and B.  A comes up for 10.2.1.0/24.  A
reload then adds a connection that names B (its identity and address) and gives it 10.2.1.0/24.
Before the fix the reload left A's Child SA, and B's own Child SA for its network was refused
(TS_UNACCEPTABLE: A held it) for as long as A stayed up.  Now the reload deletes A's Child SA (A's IKE
SA stays), its answer names A, and B comes up for 10.2.1.0/24.  B's charon proposes 10.2.1.0/24 as its
local side, the network the configuration now gives it (an address of it on B's loopback for charon's
route; its real LAN does not matter to the claims).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from ike_peers import CONN, Charon, Conn, TunsecIke, ident, requires_strongswan
from roadwarrior import hub_gateway

from tunsec.bench.netns import StarHosts, wait_until

pytestmark = [
    pytest.mark.interop,
    pytest.mark.netns,
    requires_strongswan,
]


@pytest.fixture
def star() -> Iterator[StarHosts]:
    with StarHosts() as t:
        yield t


def child_sas(gw: TunsecIke) -> dict[str, list[dict[str, Any]]]:
    """The gateway's established IKE SAs' Child SAs, by peer address."""
    return {sa["remote"].split("[")[0]: sa["children"] for sa in gw.ike_sas() if sa["state"] == "established"}


def named_site(star: StarHosts, network: str) -> str:
    """A connection of G that names B (its identity and address) and gives it ``network``."""
    b, g = star.b, star.g
    return f"""  site-b {{
    version = 2
    remote_addrs = {b.outer4}
    encap = yes
    proposals = aes128gcm16-prfsha256-curve25519
    local {{
      auth = psk
      id = {ident(g)}
    }}
    remote {{
      auth = psk
      id = {ident(b)}
    }}
    children {{
      net {{
        local_ts = {g.inner_net4}
        remote_ts = {network}
        esp_proposals = aes128gcm16
        mode = tunnel
      }}
    }}
  }}
"""


def test_a_reload_naming_a_spokes_network_deletes_its_child_sa_and_the_named_site_comes_up(star: StarHosts) -> None:
    a, b = star.a, star.b
    gw = TunsecIke(star, hub_gateway(star))
    site_a = Charon(star, Conn(a, star.gateway_for(a)))
    # B proposes A's network as its own: an address of it on B, for charon's route's source
    star.run(b, ["ip", "addr", "add", "10.2.1.254/32", "dev", "lo"])
    site_b = Charon(star, Conn(b, star.gateway_for(b), local_ts=a.inner_net4))
    for c in (site_a, site_b):
        c.start()
    gw.start()
    r = site_a.initiate()
    assert r.returncode == 0, f"A's initiate: {r.stdout[-1500:]}\n{gw.log_tail()}"
    assert wait_until(lambda: [c["remote_ts"] for c in child_sas(gw).get(a.outer4, [])] == [[a.inner_net4]], 15), \
        gw.log_tail()

    text = gw.conf.read_text()
    gw.conf.write_text(text.replace("connections {\n", "connections {\n" + named_site(star, a.inner_net4), 1))
    gw.readable_by_tunsec()
    r = gw.cli("reload")
    assert r.returncode == 0, f"reload: {r.stdout}{r.stderr}\n{gw.log_tail()}"
    assert "site-b" in r.stdout and f"deleted: {ident(a)} ({CONN})" in r.stdout, r.stdout
    assert wait_until(lambda: child_sas(gw).get(a.outer4) == [], 10), f"A's Child SA stayed:\n{gw.log_tail()}"
    assert "names its peer" in gw.log.read_text()

    r = site_b.initiate()
    assert r.returncode == 0, f"B's initiate for its named network: {r.stdout[-4000:]}\n{gw.log_tail()}"
    assert wait_until(lambda: [c["remote_ts"] for c in child_sas(gw).get(b.outer4, [])] == [[a.inner_net4]], 15), \
        gw.log_tail()
    assert child_sas(gw).get(a.outer4) == []   # A's IKE SA stayed, without the network
