"""Review revlate11 F1 end to end: a `tunsec reload` stuck on a worker that does not answer (SIGSTOP) when
SIGTERM comes is cut short after the stop's RELOAD_STOP_WAIT (10 s), and its client gets the answer "reload
cut short by the stop" while the daemon still runs; the daemon stops cleanly.  Before the fix the stop went
on without it, closed the worker's pipe, and the reload answered that the worker had died and that its
restart (which never comes) would install the tunnels.

A real tunsec (manual keys) in a namespace of TwoHosts, its real worker, the control socket asked from
this process as the CLI asks it.  About 20 s: the stop's wait, the cut reload's undo, the worker's kill."""

from __future__ import annotations

import grp
import os
import secrets
import signal
import threading
from collections.abc import Iterator
from typing import Any

import control
import pytest
from conftest import TunnelOptions, TunsecPair

from tunsec.bench.netns import TwoHosts, wait_until
from tunsec.cli import _ask
from tunsec.conf.tunsec_section import WORKER_USER


@pytest.fixture
def topo() -> Iterator[TwoHosts]:
    with TwoHosts(ipv6=False, prefix="fixstop") as t:
        yield t


def more_tunnels(pair: TunsecPair, n: int) -> str:
    """n manual tunnels more to A's peer (networks 10.77.i.0/24), each with SPIs and keys of its own."""
    a, b = pair.topo.a, pair.topo.b
    return "".join(f"""  more{i} {{
    local_addr = {a.outer4}
    remote_addr = {b.outer4}
    local_ts = {a.inner_net4}
    remote_ts = 10.77.{i}.0/24
    esp = aes128gcm16
    spi_in = {0xC0030000 + i:#010x}
    key_in = 0x{secrets.token_hex(20)}
    spi_out = {0xC0040000 + i:#010x}
    key_out = 0x{secrets.token_hex(20)}
  }}
""" for i in range(n))


def test_a_reload_stuck_on_a_stopped_worker_is_answered_cut_short_and_the_stop_ends(topo: TwoHosts) -> None:
    pair = TunsecPair(topo, TunnelOptions(inner6=False))
    a = pair.a
    os.chown(a.conf, 0, grp.getgrnam(WORKER_USER).gr_gid)   # a reload reads it as the user tunsec drops to
    a.conf.chmod(0o640)
    pair.start(a)
    assert a.proc is not None
    worker = control.status(a.sock)["worker"]["pid"]
    text = a.conf.read_text()
    cut = text.rstrip().rindex("}")   # the manual section's end
    a.conf.write_text(text[:cut] + more_tunnels(pair, 3) + text[cut:])
    offset = control.log_size(a.log)
    answer: dict[str, Any] = {}

    def ask() -> None:
        try:
            answer.update(_ask(str(a.sock), {"cmd": "reload"}, timeout=120))
        except Exception as err:   # said in the assertion below
            answer["raised"] = repr(err)

    os.kill(worker, signal.SIGSTOP)   # no answer from now on: each request waits for its timeout (10 s)
    try:
        client = threading.Thread(target=ask)
        client.start()
        # the reload under way: its first new tunnel's reservation written, its GETSPI sent
        assert wait_until(lambda: b"more0: sequence numbers reserved" in a.log.read_bytes()[offset:], 20), \
            a.log.read_text()[-3000:]
        a.proc.send_signal(signal.SIGTERM)
        client.join(120)
        code = a.proc.wait(120)
    finally:
        if os.path.exists(f"/proc/{worker}"):   # the daemon did not kill it: let it go on to its end
            os.kill(worker, signal.SIGCONT)
    log = a.log.read_bytes()[offset:].decode(errors="replace")
    assert "at shutdown: a reload is still running after 10 s; the stop goes on without it" in log, log[-3000:]
    error = answer.get("error", "")
    assert answer.get("ok") is False and "reload cut short by the stop" in error, (answer, log[-3000:])
    assert "installed by the worker's restart" not in error, answer
    assert code == 0, log[-3000:]
