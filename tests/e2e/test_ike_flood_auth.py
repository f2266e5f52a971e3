"""A client's IKE_AUTH gets through a spoofed flood of IKE to port 4500 while the gateway's control
process is behind: the SPI our IKE_SA_INIT answer gave it carries our tag for its address, so the
gateway's worker holds its IKE_AUTH in a reserve of its own (IKE_SPI_KEY, ike/spi_tag.py, docs/pipe.md).

tunsec A initiates, tunsec B responds.  A's first IKE_AUTH is dropped on its way out (nftables in A's
namespace), so that its retransmission (retransmit_timeout = 5 s, then 50 s) arrives when wanted: B's
control process is stopped (SIGSTOP: every IKE event waits in B's worker, as when a flood outruns it)
and a raw socket floods B's port 4500 from 64 spoofed addresses, far more than B's queues hold.  The
drop rule goes, A's retransmitted IKE_AUTH arrives (counted by nftables in B) in the middle of the
flood, thousands of flood datagrams follow it, the flood stops and B goes on.  B must answer that
IKE_AUTH: the IKE SA is up with B having seen one IKE_AUTH only (A's next try would come 50 s later).
Without the tag's reserve the flood pushes it out and B sees a second.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest
from ike_peers import Conn, TunsecIke
from test_ike_flood_reserve import AFTER_DPD, Flood, counted, nft_load

from tunsec.bench.netns import TwoHosts, wait_until

# IKE_AUTH (exchange 35) from the original initiator (I flag), behind the non-ESP marker on port 4500
_AUTH = "udp dport 4500 @th,64,32 0 @th,240,8 35 @th,248,8 & 0x28 == 0x08"


@pytest.fixture
def topo() -> Iterator[TwoHosts]:
    with TwoHosts(ipv6=False) as t:
        yield t


def test_a_clients_ike_auth_gets_through_a_spoofed_flood(topo: TwoHosts) -> None:
    a = TunsecIke(topo, Conn(topo.a, topo.b, start_action="start"),
                  tunsec_extra="  retransmit_timeout = 5\n  retransmit_base = 10\n")
    b = TunsecIke(topo, Conn(topo.b, topo.a))
    nft_load(topo, topo.a, "hold-auth.nft", f"""table ip holdauth {{
  counter held {{}}
  chain out {{
    type filter hook output priority 0;
    ip daddr {topo.b.outer4} {_AUTH} counter name held drop;
  }}
}}
""")
    nft_load(topo, topo.b, "auth-in.nft", f"""table ip authwatch {{
  counter auths {{}}
  chain in {{
    type filter hook input priority 0;
    ip saddr {topo.a.outer4} {_AUTH} counter name auths;
  }}
}}
""")
    # B's reverse path to the spoofed sources (else rp_filter drops them before the worker)
    topo.run(topo.b, ["ip", "route", "add", "198.51.100.0/24", "via", topo.a.outer4])
    b.start()
    a.start()
    assert wait_until(lambda: counted(topo, "held", "holdauth", topo.a) >= 1, 30), a.log_tail()
    assert b.proc is not None
    os.kill(b.proc.pid, signal.SIGSTOP)
    try:
        flood = Flood(topo)
        try:
            assert wait_until(lambda: flood.sent >= AFTER_DPD, 60)   # B's queues are full of it
            topo.run(topo.a, ["nft", "delete", "table", "ip", "holdauth"])
            assert wait_until(lambda: counted(topo, "auths", "authwatch") >= 1, 15), a.log_tail()
            more = flood.sent + AFTER_DPD
            assert wait_until(lambda: flood.sent >= more, 60)
        finally:
            flood.stop()
    finally:
        os.kill(b.proc.pid, signal.SIGCONT)
    b.wait_established(30)
    a.wait_established(30)
    assert counted(topo, "auths", "authwatch") == 1, b.log_tail()
    drops = b.status()["drops"]
    flooded = ("queue_full", "ike_source_limit", "pipe_ike_full", "pipe_ike_source_full")
    assert sum(drops[k] for k in flooded) > 0, drops
    proven = ("ike_proven_full", "ike_proven_source", "pipe_ike_proven_full", "pipe_ike_proven_source")
    assert {k: drops[k] for k in proven} == dict.fromkeys(proven, 0)
