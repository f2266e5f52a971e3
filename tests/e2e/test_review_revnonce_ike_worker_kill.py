"""Review revnonce (report-only): a kill -9 of the worker of an IKE tunnel repeats no ESP nonce.

A guard, not a proof of a bug (it passes on main).  The new worker has an empty SAD; the IKE
service does not install the old Child SAs' keys again (their sequence numbers would start at 1
under the same key: AES-GCM's nonce is salt || sequence number) but rekeys every Child SA into it
(services/ike/restart.py).  On the wire, seen from B's namespace: every ESP packet A sends after the
kill is under an SPI A had not sent on before it (a new Child SA, so new KEYMAT), and no (SPI,
sequence number) appears twice.  Real parts: two tunsec daemons in namespaces, a raw packet capture
parsed with scapy (test_manual_restart's), the worker killed by its PID.
"""

from __future__ import annotations

import collections
import os
import signal
import sys
import time
from collections.abc import Iterator

import control
import pytest
from ike_peers import Conn, TunsecIke
from test_manual_restart import CAPTURE, esp_packets

from tunsec.bench.netns import TwoHosts, wait_until


@pytest.fixture
def topo() -> Iterator[TwoHosts]:
    with TwoHosts(ipv6=False) as t:
        yield t


def _pings(topo: TwoHosts, n: int) -> bool:
    return topo.ping(topo.a, topo.b.inner4, count=n, src=topo.a.inner4, timeout=10)


def test_worker_kill_rekeys_instead_of_reinstalling_the_same_keys(topo: TwoHosts) -> None:
    a = TunsecIke(topo, Conn(topo.a, topo.b, start_action="start"))
    b = TunsecIke(topo, Conn(topo.b, topo.a))
    b.start()
    a.start()
    a.wait_established()
    b.wait_established()
    capture = topo.workdir / "esp.hex"
    sniffer = topo.popen(topo.b, [sys.executable, "-c", CAPTURE, str(capture)])
    assert wait_until(lambda: capture.exists() and capture.read_text().startswith("ready"), 10)
    assert wait_until(lambda: _pings(topo, 1), 20), f"A:\n{a.log_tail()}\nB:\n{b.log_tail()}"
    assert _pings(topo, 5)
    before = {spi for src, spi, _, _ in esp_packets(capture) if src == topo.a.outer4}
    assert before, "no ESP from A captured before the kill"

    old = int(a.wait_log(r"worker started, pid (\d+)").group(1))
    os.kill(old, signal.SIGKILL)
    assert wait_until(lambda: not os.path.exists(f"/proc/{old}"), 10)
    time.sleep(1)   # what the dead worker sent is written by the capture by now
    mark = len(capture.read_text().splitlines())

    def restarted() -> bool:
        doc = control.status_if_ok(a.sock)
        return doc is not None and doc["worker"]["pid"] != old

    assert wait_until(restarted, 20), a.log_tail()
    assert wait_until(lambda: _pings(topo, 1), 30), f"A:\n{a.log_tail()}\nB:\n{b.log_tail()}"
    assert _pings(topo, 5)
    topo.stop(sniffer)

    seen = esp_packets(capture)
    lines = capture.read_text().splitlines()
    later = topo.workdir / "esp-after-kill.hex"
    later.write_text("\n".join(["ready", *lines[mark:]]) + "\n")
    after_kill = esp_packets(later)
    from_a = [(spi, seq) for src, spi, seq, _ in seen if src == topo.a.outer4]
    reused = sorted({spi for src, spi, _, _ in after_kill if src == topo.a.outer4 and spi in before})
    assert not reused, f"A sent on an SPI of before the worker's kill (same keys, numbers from 1 again): {reused}"
    twice = [k for k, n in collections.Counter(from_a).items() if n > 1]
    assert not twice, f"(SPI, sequence number) sent twice by A: {twice[:10]}"
    assert any(spi not in before for spi, _ in from_a), "no ESP from A on a new Child SA after the restart"
