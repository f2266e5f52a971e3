"""Review revupdown F1, with real daemons: `tunsec up` stopped (SIGTERM) exits before the
down-client of its Child SA has ended, the script left running behind it.

Two tunsec daemons in network namespaces (ike_peers.TunsecIke), A's child with a real updown
script (/bin/sh) whose down-client takes 10 s, a third of the 30 s tunsec gives a run (a
`conntrack -D`, a large `iptables-restore`, an accounting call).  strongSwan's promise, that tunsec's
docs repeat: every up-client is followed by exactly one down-client; one that tunsec cancelled or
left running when it exited is not.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from ike_peers import Conn, TunsecIke

from tunsec.bench.netns import TwoHosts, wait_until
from tunsec.updown import UPDOWN_TIMEOUT

DOWN_SECONDS = 10


@pytest.fixture
def topo() -> Iterator[TwoHosts]:
    with TwoHosts(ipv6=False) as t:
        yield t


def _script(topo: TwoHosts) -> tuple[Path, Path, Path]:
    """(script, log, pids): the script in a root-only-writable folder (tunsec checks who may change
    it), its log and pid list in a folder the service user writes."""
    home = topo.workdir / "revupdown-script"
    home.mkdir(mode=0o755)
    out = topo.workdir / "revupdown-out"
    out.mkdir()
    out.chmod(0o1777)
    log, pids = out / "updown.log", out / "pids"
    script = home / "updown.sh"
    script.write_text(f'#!/bin/sh\necho $$ >> {pids}\necho "$PLUTO_VERB start" >> {log}\n'
                      f'case "$PLUTO_VERB" in down*) sleep {DOWN_SECONDS};; esac\n'
                      f'echo "$PLUTO_VERB done" >> {log}\n')
    script.chmod(0o755)
    return script, log, pids


def _pids(pids: Path) -> list[int]:
    return [int(p) for p in pids.read_text().split()] if pids.exists() else []


def _lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def _stopped_after_its_down_client(topo: TwoHosts, peer_silent: bool) -> None:
    """A's Child SA up, its up-client done; A stopped (SIGTERM; its peer B frozen first with
    ``peer_silent``): A must exit 0 after the down-client ran to its end, none left running."""
    assert UPDOWN_TIMEOUT > DOWN_SECONDS
    script, log, pids = _script(topo)
    a = TunsecIke(topo, Conn(topo.a, topo.b, start_action="start", extra_child=f"        updown = {script}\n"))
    b = TunsecIke(topo, Conn(topo.b, topo.a))
    frozen = False
    try:
        b.start()
        a.start()
        a.wait_established()
        assert wait_until(lambda: "up-client done" in _lines(log), 20), f"{_lines(log)}\n{a.log_tail()}"
        assert a.proc is not None and b.proc is not None
        if peer_silent:   # B answers nothing (A's DELETE included) until it is let go at the end
            b.proc.send_signal(signal.SIGSTOP)
            frozen = True
        a.proc.send_signal(signal.SIGTERM)
        assert a.proc.wait(timeout=UPDOWN_TIMEOUT + 30) == 0
        at_exit = _lines(log)
        running = [pid for pid in _pids(pids) if os.path.exists(f"/proc/{pid}")]
        assert "down-client start" in at_exit, f"{at_exit}\n{a.log_tail()}"
        assert "down-client done" in at_exit, (f"tunsec exited before its down-client ended: {at_exit}; "
                                               f"scripts still running: {running}\n{a.log_tail(200)}")
    finally:
        for pid in _pids(pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if frozen and b.proc is not None:
            b.proc.send_signal(signal.SIGCONT)
        a.stop()
        b.stop()


def test_tunsec_stopped_exits_after_the_down_client_of_its_child_sa(topo: TwoHosts) -> None:
    _stopped_after_its_down_client(topo, peer_silent=False)


def test_tunsec_stopped_runs_the_down_client_when_the_peer_does_not_answer_the_delete(topo: TwoHosts) -> None:
    """h/fixdown: the stop left the events of its own DELETEs in the IKE SAs until the next input;
    from a silent peer none came, and no Child SA went down in the service: no down-client ran."""
    _stopped_after_its_down_client(topo, peer_silent=True)
