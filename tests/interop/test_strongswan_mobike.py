"""MOBIKE (RFC 4555) end to end: a strongSwan road warrior (``mobike = yes``, kernel-libipsec)
changes its address in the middle of a ping; the tunsec gateway follows it.  And the other way
round: tunsec as the road warrior changes its address; a strongSwan gateway follows it.

StarHosts' site A is the client; its outer address 192.0.2.2 is deleted and 192.0.2.12 added
on the same link.  charon notices through netlink and sends UPDATE_SA_ADDRESSES from the new
address; the gateway moves the IKE SA, checks the new address (COOKIE2) and MIGRATEs the Child
SA (which charon then rekeys: see below).  Pings go one at a time so that each is known to have been sent
before the address went, while the client had none, or after the gateway had moved: only the
ones sent while it had no address (and any sent before charon's update reached the gateway)
may be lost.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from ike_peers import Charon, TunsecIke, requires_strongswan
from roadwarrior import RoadWarriorConn, hub_gateway

from tunsec.bench.netns import StarHosts, wait_until

pytestmark = [
    pytest.mark.interop,
    pytest.mark.netns,
    requires_strongswan,
]

NEW = "192.0.2.12"


@pytest.fixture
def star() -> Iterator[StarHosts]:
    with StarHosts(prefix="mb") as t:
        yield t


def ping_from_a(star: StarHosts) -> bool:
    """One echo from site A's inner address to the gateway's, answered within 1 s."""
    return star.ping(star.a, star.g.inner4, src=star.a.inner4, timeout=1.0)


def roam(star: StarHosts, moved: Callable[[], bool]) -> tuple[list[bool], list[bool], list[bool]]:
    """A's outer address goes and NEW comes, one ping at a time; whether each passed: the pings sent before,
    while A had no address, and after NEW came until ``moved()`` (the gateway follows; 15 at most)."""
    a = star.a
    sent_before = [ping_from_a(star) for _ in range(5)]
    subprocess.run(["ip", "-n", a.ns, "addr", "del", f"{a.outer4}/24", "dev", a.veth], check=True)
    without_address = [ping_from_a(star) for _ in range(2)]
    subprocess.run(["ip", "-n", a.ns, "addr", "add", f"{NEW}/24", "dev", a.veth], check=True)
    before_the_move: list[bool] = []
    while not moved() and len(before_the_move) < 15:
        before_the_move.append(ping_from_a(star))
    return sent_before, without_address, before_the_move


def ike_sa(gw: TunsecIke) -> dict[str, Any] | None:
    sas = [sa for sa in gw.ike_sas() if sa["state"] == "established"]
    return sas[0] if len(sas) == 1 else None


def at(gw: TunsecIke, ip: str) -> bool:
    """The gateway's IKE SA and each of its children send to ``ip`` port 4500."""
    sa = ike_sa(gw)
    where = f"{ip}[4500]"
    return sa is not None and sa["remote"] == where and bool(sa["children"]) \
        and all(c["remote"] == where for c in sa["children"])


def test_a_client_that_changes_its_address_keeps_its_sas(star: StarHosts) -> None:
    g, a = star.g, star.a
    gw = TunsecIke(star, hub_gateway(star))
    # no local_addrs: charon may speak from whatever address it has
    client = Charon(star, RoadWarriorConn(a, g, fixed_address=False, mobike=True))
    client.start()
    gw.start()
    r = client.initiate()
    assert r.returncode == 0, f"swanctl --initiate: {r.stdout[-1500:]}\n{gw.log_tail()}"
    assert wait_until(lambda: at(gw, a.outer4), 15), gw.log_tail()
    before = ike_sa(gw)
    assert before is not None
    assert star.wait_ping(a, g.inner4, src=a.inner4, timeout=10)
    assert "peer supports MOBIKE" in client.log_text() and before["mobike"] is True

    sent_before, without_address, before_the_move = roam(star, lambda: at(gw, NEW))
    assert at(gw, NEW), f"the gateway did not follow the client:\n{gw.log_tail()}\n{client.log_tail(30)}"
    sent_after = [ping_from_a(star) for _ in range(5)]

    assert all(sent_before), sent_before
    assert not any(without_address), "a ping passed while the client had no address"
    assert all(sent_after), f"pings lost after the gateway moved: {sent_after}\n{gw.log_tail()}"
    # between the new address and the move only the first may be lost: none after one passed
    assert before_the_move == sorted(before_the_move), before_the_move
    # the same IKE SA, moved.  charon's kernel-libipsec cannot update an SA's addresses, so charon
    # rekeys its Child SA after the update (strongSwan's fallback, ike_sa.c update_hosts): the
    # child keeps its reqid, and its new SAs go to the new address too (checked by at())
    after = ike_sa(gw)
    assert after is not None
    assert (after["spi_i"], after["spi_r"]) == (before["spi_i"], before["spi_r"])
    assert [c["reqid"] for c in after["children"]] == [c["reqid"] for c in before["children"]]
    log = gw.log_text()
    assert f"MOBIKE: peer moved from {a.outer4}[4500] to {NEW}[4500]" in log
    assert f"return routability of {NEW}[4500] confirmed" in log
    print(f"pings lost after the new address came and before the gateway moved: "
          f"{before_the_move.count(False)} of {len(before_the_move)}")


def charon_peer(charon: Charon) -> str:
    """The address:port of the client in the gateway charon's only IKE SA ('' if none is up)."""
    for sa in charon.sas().values():
        if isinstance(sa, dict) and sa.get("state") == "ESTABLISHED":
            return f"{sa.get('remote-host')}[{sa.get('remote-port')}]"
    return ""


def test_tunsec_as_a_client_that_changes_its_address_keeps_its_ike_sa(star: StarHosts) -> None:
    """tunsec (no local_addrs) watches its addresses (rtnetlink) and sends UPDATE_SA_ADDRESSES
    when they change; the strongSwan gateway moves the IKE SA and its Child SA to the new address."""
    g, a = star.g, star.a
    gateway = Charon(star, hub_gateway(star))
    client = TunsecIke(star, RoadWarriorConn(a, g, fixed_address=False, start_action="start"))
    gateway.start()
    client.start()
    sa = client.wait_established()
    assert sa["mobike"] is True, client.log_tail()
    assert star.wait_ping(a, g.inner4, src=a.inner4, timeout=10)
    assert charon_peer(gateway) == f"{a.outer4}[4500]"

    sent_before, without_address, before_the_move = roam(star, lambda: charon_peer(gateway) == f"{NEW}[4500]")
    assert charon_peer(gateway) == f"{NEW}[4500]", f"{client.log_tail()}\n{gateway.log_tail(30)}"
    # charon (kernel-libipsec) rekeys its Child SA after the update; let that settle
    assert wait_until(lambda: ping_from_a(star), 10), client.log_tail()
    sent_after = [ping_from_a(star) for _ in range(5)]

    assert all(sent_before), sent_before
    assert not any(without_address), "a ping passed while the client had no address"
    assert all(sent_after), f"pings lost after the gateway moved: {sent_after}\n{client.log_tail()}"
    assert before_the_move == sorted(before_the_move), before_the_move   # none lost after one passed
    after = client.wait_established()
    assert (after["spi_i"], after["spi_r"]) == (sa["spi_i"], sa["spi_r"])   # the same IKE SA
    log = client.log_text()
    assert "MOBIKE: our addresses changed: updating 1 IKE SA(s)" in log
    assert "MOBIKE: the peer updated its SAs to our new address" in log


def esp_from(star: StarHosts) -> dict[str, int]:
    """Counters in the gateway's namespace: ESP in UDP (port 4500, a non-zero SPI where IKE's
    non-ESP marker is zero) that arrived from site A's first address and from NEW."""
    out = subprocess.run(["ip", "netns", "exec", star.g.ns, "nft", "-j", "list", "table", "inet", "esp_from"],
                         check=True, capture_output=True, text=True).stdout
    counts = {}
    for item in json.loads(out)["nftables"]:
        if (rule := item.get("rule")) is not None:
            counts[rule["comment"]] = next(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
    return counts


def test_tunsec_as_a_client_moves_to_a_second_address_while_the_first_stays(star: StarHosts) -> None:
    """Wi-Fi to LTE with both up: site A (tunsec, no local_addrs, MOBIKE) gains NEW and its route to
    the gateway now leaves from NEW, the first address staying. tunsec sends UPDATE_SA_ADDRESSES from
    NEW, charon moves its SAs there, and the gateway's namespace sees ESP only from NEW afterwards."""
    g, a = star.g, star.a
    rules = star.workdir / "esp_from.nft"
    rules.write_text(f"""table inet esp_from {{
  chain input {{
    type filter hook input priority 0; policy accept;
    ip saddr {a.outer4} udp dport 4500 @th,64,32 != 0 counter comment "old"
    ip saddr {NEW} udp dport 4500 @th,64,32 != 0 counter comment "new"
  }}
}}
""")
    subprocess.run(["ip", "netns", "exec", g.ns, "nft", "-f", str(rules)], check=True)
    gateway = Charon(star, hub_gateway(star))
    client = TunsecIke(star, RoadWarriorConn(a, g, fixed_address=False, start_action="start"))
    gateway.start()
    client.start()
    sa = client.wait_established()
    assert sa["mobike"] is True, client.log_tail()
    assert star.wait_ping(a, g.inner4, src=a.inner4, timeout=10)
    assert esp_from(star)["old"] >= 1 and esp_from(star)["new"] == 0
    # one batch, within the address watch's settle time: the route has its new source when tunsec updates
    subprocess.run(["ip", "-n", a.ns, "-batch", "-"], check=True, text=True,
                   input=f"addr add {NEW}/24 dev {a.veth}\nroute add {g.outer4}/32 dev {a.veth} src {NEW}\n")
    assert wait_until(lambda: charon_peer(gateway) == f"{NEW}[4500]", 15), \
        f"{client.log_tail()}\n{gateway.log_tail(30)}"
    # charon (kernel-libipsec) rekeys its Child SA after the update; let that settle
    assert wait_until(lambda: ping_from_a(star), 10), client.log_tail()
    before = esp_from(star)
    assert all(ping_from_a(star) for _ in range(3))
    after = esp_from(star)
    assert after["old"] == before["old"], (before, after)   # the first address is still A's, and unused
    assert after["new"] >= before["new"] + 3, (before, after)
    assert client.wait_established()["spi_i"] == sa["spi_i"]   # the same IKE SA
    assert "MOBIKE: the peer updated its SAs to our new address" in client.log_text()
