"""tunsec <-> tunsec IKE lifecycle edges, end to end in two namespaces.

- start_action = trap: the packet that triggers the negotiation waits in the
  dataplane's per-policy hold and goes out once the SA is installed, so a
  single echo request through an on-demand tunnel is answered.
- SIGTERM (to the control process and its worker together, as systemd's stop
  does; or to both peers at once): the IKE DELETE reaches the peer and is
  answered before the worker stops, and no failed send is logged.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest
from ike_peers import Conn, TunsecIke

from tunsec.bench.netns import TwoHosts, wait_until


@pytest.fixture
def topo() -> Iterator[TwoHosts]:
    with TwoHosts(ipv6=False) as t:
        yield t


def test_trap_single_ping_is_answered(topo: TwoHosts) -> None:
    a = TunsecIke(topo, Conn(topo.a, topo.b, start_action="trap"))
    b = TunsecIke(topo, Conn(topo.b, topo.a))
    b.start()
    a.start()
    # the trap policy is in place before the first packet, and nothing else
    assert wait_until(lambda: len(a.status()["policies"]) > 0, 10), a.status()
    assert a.ike_sas() == [] and b.ike_sas() == []
    # one echo request, nothing else: it is the packet that raises ACQUIRE
    assert topo.ping(topo.a, topo.b.inner4, count=1, src=topo.a.inner4, timeout=5), \
        f"A:\n{a.log_tail()}\nB:\n{b.log_tail()}"
    a.wait_established()
    drops = a.status()["drops"]
    assert drops["no_sa"] == 0 and drops["hold_full"] == 0 and drops["hold_timeout"] == 0, drops


def test_sigterm_to_the_group_sends_delete_before_the_worker_stops(topo: TwoHosts) -> None:
    """SIGTERM to the control process and its worker at once, as systemd's stop
    (or Ctrl-C to the process group) does: the DELETE still goes out and is
    acknowledged, and the stopping side logs no failed send."""
    a = TunsecIke(topo, Conn(topo.a, topo.b, start_action="start"))
    b = TunsecIke(topo, Conn(topo.b, topo.a))
    b.start()
    a.start()
    a.wait_established()
    b.wait_established()
    assert a.proc is not None
    worker_pid = int(a.wait_log(r"worker started, pid (\d+)").group(1))
    os.kill(worker_pid, signal.SIGTERM)
    a.proc.send_signal(signal.SIGTERM)
    assert a.proc.wait(timeout=20) == 0
    b.wait_log(r"IKE SA closed: deleted by peer")
    assert wait_until(lambda: b.ike_sas() == [], 10), b.ike_sas()
    text = a.log_text()
    assert "tunsec stopped" in text
    assert "failed: worker" not in text and "EIO" not in text, text[-3000:]
    assert "killing it" not in text   # the worker left by itself once the pipe closed
    # our DELETE was answered (through the worker, after its signal) before it stopped
    assert "IKE SA closed: deleted locally\n" in text, text[-3000:]


def test_both_peers_stopped_at_once_log_no_failed_send(topo: TwoHosts) -> None:
    """Both sides SIGTERMed together: each gets the other's DELETE while sending
    its own, and answers it before its worker stops."""
    a = TunsecIke(topo, Conn(topo.a, topo.b, start_action="start"))
    b = TunsecIke(topo, Conn(topo.b, topo.a))
    b.start()
    a.start()
    a.wait_established()
    b.wait_established()
    assert a.proc is not None and b.proc is not None
    a.proc.send_signal(signal.SIGTERM)
    b.proc.send_signal(signal.SIGTERM)
    assert a.proc.wait(timeout=20) == 0 and b.proc.wait(timeout=20) == 0
    for side in (a, b):
        text = side.log_text()
        assert "tunsec stopped" in text
        assert "failed: worker" not in text and "EIO" not in text, text[-3000:]
