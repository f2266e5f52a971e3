"""fail2ban's own fail2ban-regex, with the filter tunsec ships (contrib/fail2ban/filter.d/tunsec.conf),
finds a brute force in a real gateway's log although decoys keep the failures above the log's rate
limit (10 AUTHENTICATION_FAILED lines every 10 s).

tunsec in namespace B is a gateway (`remote_addrs = %any`, PSK). Namespace A owns 198.51.100.0/24 as
"any IP" (a local route on lo) and B routes it to A, so A can send from any address of it. From A,
tunsec's own IKE engine as an initiator, over real UDP sockets bound to those addresses (ports 500
and 4500, as a client floats), runs whole IKE_SA_INIT and IKE_AUTH exchanges with a wrong PSK: each
ends in AUTHENTICATION_FAILED at the gateway.  Each round, 11 failures from three decoy addresses
come first (the first opens the limiter's period: 10 lines pass, the 11th is held), then the
attacker's two (held); the next round starts once the gateway has reported what it held (a period
after the first held line, when that period is over).  So the gateway never writes one of the
attacker's failures as a line of its own: only what it reports of those held back names it.

fail2ban counts lines: the attacker must be matched at least `maxretry` times (the shipped jail's)
for a ban, in as many rounds; fail2ban-server with the shipped jail then bans it.  Nothing is banned
on the machine: fail2ban-regex only reads the log, the server's ban action writes to a file.
"""

from __future__ import annotations

import re
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from f2b import Fail2banServer, fail2ban_regex, maxretry
from ike_peers import CHILD, Conn, TunsecIke

from tunsec.bench.netns import TwoHosts, wait_until
from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.constants import has_marker
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import AuthFailed, PeerUnreachable
from tunsec.ike.identity import Identity
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.secret import Secret

ANY_IP = "198.51.100.0/24"
ATTACKER, DECOYS = "198.51.100.66", ["198.51.100.11", "198.51.100.12", "198.51.100.13"]
GW_ID, CLIENT_ID = "gw.tunsec.test", "client.tunsec.test"
BURST = 10   # lines a period the gateway's AUTHENTICATION_FAILED limiter lets through


@dataclass(frozen=True)
class Gateway(Conn):
    """B's connection: open to IKE from anywhere, for the client identity (whose PSK no peer here has)."""

    def conn_lines(self) -> str:
        return f"    local_addrs = {self.me.outer4}\n    remote_addrs = %any\n    proposals = {self.proposals}\n"

    def my_id(self) -> str:
        return GW_ID

    def peer_id(self) -> str:
        return CLIENT_ID


@pytest.fixture
def topo() -> Iterator[TwoHosts]:
    with TwoHosts(ipv6=False, prefix="fail2ban") as t:
        t.run(t.a, ["ip", "route", "add", "local", ANY_IP, "dev", "lo"])
        t.run(t.b, ["ip", "route", "add", ANY_IP, "via", t.a.outer4])
        yield t


class Guesser:
    """One address in A trying the gateway's PSK: tunsec's engine as the initiator, a new IKE SA a try."""

    def __init__(self, topo: TwoHosts, addr: str, conn: Conn) -> None:
        self.topo, self.addr, self.conn = topo, addr, conn
        self.socks: dict[int, socket.socket] = {}
        for port in (500, 4500):
            sock = topo.socket(topo.a)
            sock.bind((addr, port))
            self.socks[port] = sock

    def close(self) -> None:
        for sock in self.socks.values():
            sock.close()

    def fail(self) -> None:
        """One whole try, to the gateway's AUTHENTICATION_FAILED."""
        cfg = IkeConfig("guess", LocalAuth("psk", Identity.parse(CLIENT_ID)), RemoteAuth("psk", Identity.parse(GW_ID)),
                        parse_proposals(self.conn.proposals),
                        (child_config(CHILD, self.topo.a.inner_net4, self.topo.b.inner_net4, "aes128gcm16"),),
                        psk=Secret(b"a guess, not the gateway's secret"), local_addr=self.addr,
                        remote_addr=self.topo.b.outer4)
        ike = IkeEndpoint([cfg])
        ike.initiate("guess", CHILD, time.monotonic())
        while True:
            now = time.monotonic()
            for d in ike.datagrams_to_send(now):
                marker = bytes(4) if has_marker(d.local_port, d.addr[1]) else b""
                self.socks[d.local_port].sendto(marker + d.data, d.addr)
            while (got := ike.next_event()) is not None:
                assert not isinstance(got[1], PeerUnreachable), f"{self.addr}: the gateway never answered"
                if isinstance(got[1], AuthFailed):
                    assert got[1].by_peer, got[1]   # the gateway refused us
                    return
            timer = ike.get_timer()
            ready, _, _ = select.select(list(self.socks.values()), [], [], max(0.0, timer - now) if timer else None)
            if not ready:
                ike.handle_timer(time.monotonic())
            for sock in ready:
                data, src = sock.recvfrom(65535)
                port = sock.getsockname()[1]
                if has_marker(port, src[1]):
                    if data[:4] != bytes(4):
                        continue   # ESP: none is expected
                    data = data[4:]
                ike.receive(data, src, time.monotonic(), (self.addr, port))


def _reports_naming(gw: TunsecIke, addr: str) -> int:
    """Lines of the gateway's log that report held failures and name addr."""
    return sum(1 for ln in gw.log_text().splitlines() if "AUTHENTICATION_FAILED" in ln and "suppressed" in ln
               and re.search(rf"\b{re.escape(addr)}\b", ln))


def test_fail2ban_finds_a_brute_force_that_decoys_keep_above_the_log_limit(topo: TwoHosts, tmp_path: Path) -> None:
    conn = Gateway(topo.b, topo.a)
    # tunsec's own ban off: the decoys fail more than auth_failures (tests/e2e/test_auth_ban_netns.py has it)
    gw = TunsecIke(topo, conn, tunsec_extra="  auth_failures = 0\n")
    gw.start()
    attacker = Guesser(topo, ATTACKER, conn)
    decoys = [Guesser(topo, addr, conn) for addr in DECOYS]
    rounds = maxretry()
    try:
        for n in range(1, rounds + 1):
            for i in range(BURST + 1):
                decoys[i % len(decoys)].fail()
            attacker.fail()
            attacker.fail()
            # the report of this round's held failures, a period after the first of them
            assert wait_until(lambda n=n: _reports_naming(gw, ATTACKER) >= n, 60), gw.log_tail()
    finally:
        for guesser in [attacker, *decoys]:
            guesser.close()
    lines = gw.log_text().splitlines()
    # the decoys took every line the limit lets through: none of the attacker's failures was a line of its own
    assert not [ln for ln in lines if f"tun: AUTHENTICATION_FAILED from {ATTACKER}[" in ln], gw.log_tail()
    assert sum(1 for ln in lines if re.search(r" tun: AUTHENTICATION_FAILED from \S+: the peer failed", ln)) \
        == BURST * rounds
    matched = fail2ban_regex(gw.log)
    assert matched.count(ATTACKER) >= rounds, matched
    assert set(matched) == {ATTACKER, *DECOYS}, matched
    # and fail2ban's server, with the shipped jail (its bans only written to a file), bans the attacker
    server = Fail2banServer(tmp_path, gw.log)
    try:
        assert wait_until(lambda: ATTACKER in server.banned(), 60), server.banned()
    finally:
        server.stop()
