"""Review revworker F3: a worker taken over writes the control process's log without bound, through events.

Daemon._on_event logs every worker event no service owns, one line each, with no rate limit: an
INVALID_SPI from an address no IKE SA has (INFO "ESP for unknown SPI ..."), an EXPIRE of an SA
nobody installed (WARNING "SA ... reached its ... limit"), an ACQUIRE of a policy nobody added
(INFO).  In a healthy worker the fast path bounds the first (one a second per source, ten a second
in all: docs/pipe.md) and the others only name what the control process installed; a worker taken
over writes them as fast as the pipe takes them, 40-odd bytes a datagram, each a line of ~80 bytes
in tunsec's own voice (logger tunsec, process tunsec: not marked as the worker's).  The worker's
stderr is held to 1000 lines in 10 s for exactly this (stderr_relay.py: "a worker taken over would
flood the log"), and malformed datagrams are rate-limited in the pipe reader; these lines are not.
Under systemd, journald's per-service rate limit (10,000 lines in 30 s by default) then drops
tunsec's own lines with them, the AUTHENTICATION_FAILED and ban lines fail2ban reads among them.

A real Daemon (a manual tunnel, test_reload_manual.Harness) reading a real SOCK_SEQPACKET pipe with
its WorkerClient; the worker's end written by a thread, as the worker writes it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from test_reload_manual import Harness, conf, tunnel
from worker_pipe import attach

from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Direction, Endpoint, ExpireReason, Selector

EACH = 3000   # events of each kind the worker sends


def _events() -> list[bytes]:
    """What a worker taken over sends: events naming nothing the control process installed."""
    a, b = ipaddress.ip_address("10.9.0.1"), ipaddress.ip_address("10.8.0.1")
    sel = Selector(a, a, b, b)
    out = []
    for i in range(EACH):
        src = Endpoint(ipaddress.ip_address(f"198.51.{100 + i // 250}.{i % 250 + 1}"), 4500)
        out.append(pipe.encode(pipe.InvalidSpi(spi=0x1000 + i, remote=src)))
        out.append(pipe.encode(pipe.Expire(spi=0x2000 + i, direction=Direction.IN, hard=False,
                                           reason=ExpireReason.BYTES)))
        out.append(pipe.encode(pipe.Acquire(policy_id=0x7000_0000 + i, selector=sel)))
    return out


def _send_all(tmp_path: Path, caplog: pytest.LogCaptureFixture,
              datagrams: Callable[[Harness], list[bytes]]) -> None:
    """A real Daemon with one manual tunnel takes ``datagrams(harness)`` from its worker's end, then a
    FIRST_USE nobody owns; returns once that last one was handled (its DEBUG line logged)."""
    async def body() -> None:
        h = Harness(tmp_path, conf(tmp_path, tunnel("site", 1)))
        await h.start()
        wp = attach(h.daemon, as_worker=False)
        theirs, loop = wp.theirs, asyncio.get_running_loop()
        sent = datagrams(h)

        def write() -> None:
            for data in sent:
                theirs.send(data)
            theirs.send(pipe.encode(pipe.FirstUse(spi=0xFFFF_FFFF)))   # the last: nobody's either

        await loop.run_in_executor(None, write)
        while not any("worker event FirstUse" in r.getMessage() for r in caplog.records):
            await asyncio.sleep(0.01)
        wp.close()
        h.stop()

    with caplog.at_level(logging.DEBUG, logger="tunsec"):
        asyncio.run(body())


def test_events_nobody_owns_are_not_a_line_each(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Fails on main: 9000 forged events (3000 each of INVALID_SPI, soft EXPIREs of unknown SAs and
    ACQUIREs of unknown policies) are 9000 lines of the control process's own; the malformed
    datagrams' lines, for comparison, are at most 10 in 10 s."""
    _send_all(tmp_path, caplog, lambda h: _events())
    lines = [r for r in caplog.records if r.levelno >= logging.INFO and r.name.startswith("tunsec")
             and ("unknown SPI" in r.getMessage() or "reached its" in r.getMessage()
                  or "has no SA" in r.getMessage())]
    assert len(lines) <= 100, f"{len(lines)} log lines for {3 * EACH} events the worker made up"


def test_soft_expires_of_a_manual_sa_are_not_a_line_each(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The review's remark under F3: ManualService owns the EXPIREs of its SAs and wrote a WARNING for
    each soft one, whatever their number (fails before h/fixworker: 3000 lines)."""
    def forged(h: Harness) -> list[bytes]:
        spi = h.daemon.manual.plans[0].inbound.spi
        return [pipe.encode(pipe.Expire(spi=spi, direction=Direction.IN, hard=False, reason=ExpireReason.BYTES))] * EACH

    _send_all(tmp_path, caplog, forged)
    lines = [r for r in caplog.records if "reached its soft bytes limit" in r.getMessage()]
    assert 0 < len(lines) <= 100, f"{len(lines)} log lines for {EACH} soft EXPIREs of one SA"
