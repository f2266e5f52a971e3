"""NAT rebinding (RFC 7296 §2.23) end to end: a strongSwan client behind a NAT whose mapping
changes, against the tunsec gateway.

StarHosts' site A is the client; an nftables masquerade in A's namespace (postrouting, towards
the gateway, to source port 40000) is its NAT.  The mapping changes mid-ping: the rule now
masquerades to port 40001 and A's conntrack table is flushed (pyroute2).  The gateway's ESP to
the old mapping then reaches nobody, so charon's DPD sends an IKE request from the new mapping.
Both sides announce MOBIKE (strongSwan's default, and tunsec's), so the request carries NAT
detection, charon sees its mapping changed and sends UPDATE_SA_ADDRESSES (RFC 4555 §3.5); the
gateway moves the IKE SA and, after the return routability check, the Child SA, and the ping
goes on through the same SAs (no rekey).  With ``mobike = no`` on the client the gateway follows
the DPD request itself (RFC 7296 §2.23).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from ike_peers import Charon, TunsecIke, requires_strongswan
from pyroute2 import Conntrack
from roadwarrior import RoadWarriorConn, hub_gateway

from tunsec.bench.netns import StarHosts, in_netns, wait_until

pytestmark = [
    pytest.mark.interop,
    pytest.mark.netns,
    requires_strongswan,
]

FIRST, SECOND = 40000, 40001   # the NAT's source port towards the gateway, before and after


@pytest.fixture
def star() -> Iterator[StarHosts]:
    with StarHosts(prefix="nr") as t:
        yield t


def masquerade(star: StarHosts, port: int) -> None:
    """A's NAT: UDP to the gateway leaves with A's address and source port ``port`` (replacing the rule)."""
    script = f"""
table ip tunsec_nat {{}}
flush table ip tunsec_nat
table ip tunsec_nat {{
  chain post {{
    type nat hook postrouting priority srcnat; policy accept;
    ip daddr {star.g.outer4} meta l4proto udp masquerade to :{port}
  }}
}}
"""
    subprocess.run(["ip", "netns", "exec", star.a.ns, "nft", "-f", "-"], input=script, text=True, check=True,
                   capture_output=True)


def child_of(gw: TunsecIke, ip: str) -> dict[str, Any] | None:
    """The gateway's established child with the peer at ``ip``, with its IKE SA's endpoint."""
    for sa in gw.ike_sas():
        if sa["state"] == "established" and sa["remote"].startswith(ip + "["):
            for c in sa["children"]:
                return dict(c) | {"ike_remote": sa["remote"]}
    return None


def at_port(gw: TunsecIke, ip: str, port: int) -> bool:
    c = child_of(gw, ip)
    return c is not None and c["ike_remote"] == f"{ip}[{port}]" and c["remote"] == f"{ip}[{port}]"


@pytest.mark.parametrize("mobike", ["yes", "no"])
def test_a_client_whose_nat_mapping_changes_keeps_its_child_sa(star: StarHosts, mobike: str) -> None:
    g, a = star.g, star.a
    masquerade(star, FIRST)
    gw = TunsecIke(star, hub_gateway(star))
    client = Charon(star, RoadWarriorConn(a, g, mobike=mobike == "yes", extra_conn="    dpd_delay = 1s\n"))
    client.start()
    gw.start()
    r = client.initiate()
    assert r.returncode == 0, f"swanctl --initiate: {r.stdout[-1500:]}\n{gw.log_tail()}"
    assert wait_until(lambda: at_port(gw, a.outer4, FIRST), 15), gw.log_tail()
    before = child_of(gw, a.outer4)
    assert before is not None
    assert star.wait_ping(a, g.inner4, src=a.inner4, timeout=10)

    log = star.workdir / "ping.log"
    ping = star.popen(a, ["ping", "-n", "-i", "0.1", "-c", "60", "-W", "3", "-I", a.inner4, g.inner4], log=log)
    assert wait_until(lambda: log.exists() and log.read_text().count("bytes from") >= 10, 10)
    if mobike == "yes":
        # charon notices a changed mapping by comparing the NAT detection of one MOBIKE liveness
        # check with the last one: change it only after its first check (3 s after IKE_AUTH), or
        # charon never sends UPDATE_SA_ADDRESSES (as against a strongSwan gateway, which does not
        # follow a MOBIKE peer implicitly either)
        gw.wait_log(r"MOBIKE: NAT detection", 15)
    answered_before = log.read_text().count("bytes from")
    masquerade(star, SECOND)
    # the old mapping is gone: what the gateway still sends there reaches nobody
    with in_netns(a.ns):
        ct = Conntrack()
        try:
            ct.flush()
        finally:
            ct.close()
    assert wait_until(lambda: at_port(gw, a.outer4, SECOND), 15), gw.log_tail() + "\ncharon:\n" + client.log_tail(80)
    after = child_of(gw, a.outer4)
    assert after is not None
    # the same Child SA, moved: no rekey, no new SPIs
    assert (after["spi_in"], after["spi_out"], after["reqid"]) == (before["spi_in"], before["spi_out"],
                                                                   before["reqid"])
    assert ping.wait(timeout=60) is not None
    text = log.read_text()
    m = re.search(r"(\d+) packets transmitted, (\d+) received", text)
    assert m, text[-500:]
    # only the pings sent while the gateway still sent to the old mapping are lost; the last ones all pass
    replies = [int(s) for s in re.findall(r"icmp_seq=(\d+)", text)]
    assert replies and replies[-1] == 60, text[-800:]
    # the pings lost are one run, after those answered before the mapping changed: each one sent
    # from then until the gateway followed (none before, none after, none lost here and there)
    lost = sorted(set(range(1, 61)) - set(replies))
    if lost:
        assert lost == list(range(lost[0], lost[-1] + 1)), f"lost {lost}\n{text[-800:]}"
        assert lost[0] > answered_before, (answered_before, lost)
    assert star.ping(a, g.inner4, count=5, src=a.inner4), "pings after the rebinding lost"
    assert f"follows its peer to {a.outer4}:{SECOND}" in gw.log_text()
    # with MOBIKE the move is charon's UPDATE_SA_ADDRESSES, checked for return routability first
    moved_by_update = "return routability of" in gw.log_text()
    assert moved_by_update == (mobike == "yes"), gw.log_tail()
