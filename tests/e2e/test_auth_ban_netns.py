"""tunsec's own failed-authentication ban (tunsec { auth_failures }) over real UDP: an IPv6 attacker
changing its address within its /64 at each wrong-PSK try is banned as one source (review AE F1), its
next IKE_SA_INIT dropped unanswered and counted, the ban line matched by the shipped fail2ban filter as
the /64; a client established before stays up, and a client from another address still comes up; a
reload keeps the ban; `tunsec unban` lifts it.

tunsec in namespace B is a gateway on its IPv6 address (`remote_addrs = %any`, PSK, auth_failures = 3).
Namespace A owns 2001:db8:66::/48 as "any IP" (a local route on lo, non-local bind), B routes it to A.
From A, tunsec's own IKE engine as the initiator runs whole IKE_SA_INIT and IKE_AUTH exchanges over
real sockets (ports 500 and 4500), from a new address of 2001:db8:66:6::/64 each time, with a wrong PSK.
"""

from __future__ import annotations

import dataclasses
import grp
import os
import select
import socket
import time
from collections.abc import Iterator

import pytest
from f2b import FILTER, fail2ban_regex
from ike_peers import CHILD, PSK, Conn, TunsecIke

from tunsec.bench.netns import TwoHosts, wait_until
from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.constants import has_marker
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import AuthFailed, ChildSaUp, PeerUnreachable
from tunsec.ike.identity import Identity
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.secret import Secret

ANY_IP = "2001:db8:66::/48"
ATTACKER_64, OTHER_64 = "2001:db8:66:6", "2001:db8:66:7"   # two /64s of it
GW_ID, CLIENT_ID = "gw.tunsec.test", "client.tunsec.test"
MAX = 3


@dataclasses.dataclass(frozen=True)
class Gateway(Conn):
    """B's connection on its IPv6 address: open to IKE from anywhere, for the client identity."""

    def conn_lines(self) -> str:
        return f"    local_addrs = {self.me.outer6}\n    remote_addrs = %any\n    proposals = {self.proposals}\n"

    def my_id(self) -> str:
        return GW_ID

    def peer_id(self) -> str:
        return CLIENT_ID


@pytest.fixture
def topo() -> Iterator[TwoHosts]:
    with TwoHosts(prefix="ban") as t:
        t.run(t.a, ["ip", "-6", "route", "add", "local", ANY_IP, "dev", "lo"])
        t.run(t.a, ["sysctl", "-q", "-w", "net.ipv6.ip_nonlocal_bind=1"])
        t.run(t.b, ["ip", "-6", "route", "add", ANY_IP, "via", t.a.outer6])
        yield t


class Peer:
    """One address in A: tunsec's engine as an initiator of one IKE SA to the gateway."""

    def __init__(self, topo: TwoHosts, addr: str, conn: Conn, psk: str) -> None:
        self.addr = addr
        self.socks: dict[int, socket.socket] = {}
        for port in (500, 4500):
            sock = topo.socket(topo.a, socket.AF_INET6)
            sock.bind((addr, port))
            self.socks[port] = sock
        cfg = IkeConfig("c", LocalAuth("psk", Identity.parse(CLIENT_ID)), RemoteAuth("psk", Identity.parse(GW_ID)),
                        parse_proposals(conn.proposals),
                        (child_config(CHILD, topo.a.inner_net4, topo.b.inner_net4, "aes128gcm16"),),
                        psk=Secret(psk.encode()), local_addr=addr, remote_addr=topo.b.outer6)
        self.ike = IkeEndpoint([cfg])
        self.ike.initiate("c", CHILD, time.monotonic())

    def close(self) -> None:
        for sock in self.socks.values():
            sock.close()

    def send(self) -> None:
        for d in self.ike.datagrams_to_send(time.monotonic()):
            marker = bytes(4) if has_marker(d.local_port, d.addr[1]) else b""
            self.socks[d.local_port].sendto(marker + d.data, d.addr)

    def pending(self) -> bool:
        """Whether an answer waits on a socket."""
        return bool(select.select(list(self.socks.values()), [], [], 0)[0])

    def run(self) -> object:
        """Exchanges to the first AuthFailed or ChildSaUp."""
        while True:
            self.send()
            while (got := self.ike.next_event()) is not None:
                assert not isinstance(got[1], PeerUnreachable), f"{self.addr}: the gateway never answered"
                if isinstance(got[1], AuthFailed | ChildSaUp):
                    return got[1]
            now = time.monotonic()
            timer = self.ike.get_timer()
            ready, _, _ = select.select(list(self.socks.values()), [], [], max(0.0, timer - now) if timer else None)
            if not ready:
                self.ike.handle_timer(time.monotonic())
            for sock in ready:
                data, src = sock.recvfrom(65535)
                port = sock.getsockname()[1]
                if has_marker(port, src[1]):
                    data = data[4:]
                self.ike.receive(data, src[:2], time.monotonic(), (self.addr, port))


def test_an_ipv6_attacker_rotating_within_its_64_is_banned(topo: TwoHosts) -> None:
    conn = Gateway(topo.b, topo.a)
    gw = TunsecIke(topo, conn, tunsec_extra=f"  auth_failures = {MAX}\n  auth_failures_ban = 1h\n")
    gw.start()
    peers: list[Peer] = []
    try:
        client = Peer(topo, topo.a.outer6, conn, PSK)   # established before the attack
        peers.append(client)
        assert isinstance(client.run(), ChildSaUp)
        for i in range(MAX):   # a new address of the /64 each try
            peers.append(attacker := Peer(topo, f"{ATTACKER_64}::{i + 1:x}", conn, "a wrong guess"))
            failed = attacker.run()
            assert isinstance(failed, AuthFailed) and failed.by_peer, failed
        # yet another address of it: its IKE_SA_INIT is dropped, counted, never answered
        peers.append(banned := Peer(topo, f"{ATTACKER_64}:abcd::99", conn, "a wrong guess"))
        banned.send()
        assert wait_until(lambda: gw.status()["ike_drops"].get("auth_banned") == 1, 10), gw.log_tail()
        assert not banned.pending()
        status = gw.status()
        assert [(b["source"], b["failures"]) for b in status["auth_bans"]] == [(f"{ATTACKER_64}::/64", MAX)]
        assert status["ike_half_open"] == 0   # nothing kept for it
        # a reload keeps the ban (the file made readable by tunsec's user, which it runs as)
        os.chown(gw.conf, -1, grp.getgrnam("tunsec").gr_gid)
        gw.conf.chmod(0o640)
        assert gw.cli("reload").returncode == 0, gw.log_tail()
        assert [b["source"] for b in gw.status()["auth_bans"]] == [f"{ATTACKER_64}::/64"]
        # the client established before is still up; a client from another /64 comes up
        assert [sa["remote"].partition("[")[0] for sa in gw.established()] == [topo.a.outer6]
        peers.append(other := Peer(topo, f"{OTHER_64}::1", conn, PSK))
        assert isinstance(other.run(), ChildSaUp)
        # the operator lifts it (tunsec unban, an address of the /64): the /64 is answered again
        nothing = gw.cli("unban", "192.0.2.99")
        assert nothing.returncode == 1 and "no ban in force covers 192.0.2.99" in nothing.stderr, nothing
        lifted = gw.cli("unban", f"{ATTACKER_64}::abcd")
        assert lifted.returncode == 0 and f"ban lifted: {ATTACKER_64}::/64" in lifted.stdout, lifted
        assert gw.status()["auth_bans"] == []
        peers.append(vouched := Peer(topo, f"{ATTACKER_64}::77", conn, PSK))
        assert isinstance(vouched.run(), ChildSaUp)
    finally:
        for p in peers:
            p.close()
    # one ban line, naming the /64: what the shipped filter (either mode) takes from it
    bans = [ln for ln in gw.log_text().splitlines() if "banned: AUTHENTICATION_FAILED" in ln]
    assert len(bans) == 1 and f"from {ATTACKER_64}::/64: " in bans[0], bans
    assert fail2ban_regex(gw.log, f"{FILTER}[mode=bans]") == [f"{ATTACKER_64}::/64"]
    assert fail2ban_regex(gw.log).count(f"{ATTACKER_64}::/64") == 1
