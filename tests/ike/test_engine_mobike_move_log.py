"""Review revmobike F3: an authenticated MOBIKE peer decides how often it moves, and every move
writes INFO lines nothing limits: "peer moved from .. to .." (mobike._update) and "return
routability of .. confirmed" (ReturnRoutabilityTask.process), two lines per UPDATE_SA_ADDRESSES,
as fast as the peer's round trips allow.  The refused moves (REFUSED_LOG), the failed checks
(_FAILED_LOG) and the Child SAs' moves (IkeService._move_log) are limited; these are not.
(Since h/fixloglim all four are the gateway endpoint's per-peer limiters, ike/peer_logs.py.)"""

from __future__ import annotations

import logging

import pytest
from test_engine import A
from test_engine_mobike import A2, _move, _say, _up

from tunsec.ike.constants import NotifyType
from tunsec.ike.exchanges.base import notify
from tunsec.ike.state import nat_hash

MOVES = 40


def test_a_peer_moving_back_and_forth_writes_a_bounded_number_of_lines(caplog: pytest.LogCaptureFixture) -> None:
    net, client, gateway = _up()
    caplog.set_level(logging.INFO, logger="tunsec.ike")
    here = A
    for i in range(MOVES):
        there = A2 if i % 2 == 0 else A
        _move(net, here, there)
        here = there
        assert client.update_addresses((there, 4500))
        net.run(until=net.now + 1)
        assert gateway.esp_remote == (there, 4500)   # each move went through, checked
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("tunsec.ike.exchanges.mobike")
             and r.levelno >= logging.INFO and r.getMessage().startswith(gateway.name)]   # the gateway's
    # 5 a minute per peer, the rest counted in the next line (peer_logs.py): a few lines, not two per move
    assert len(lines) <= 12, f"{len(lines)} INFO lines for {MOVES} moves within {net.now:.0f} s: {lines[:3]}"


def test_a_peer_flipping_its_nat_detection_writes_a_bounded_number_of_lines(
        caplog: pytest.LogCaptureFixture) -> None:
    """The same without moving at all: NAT_DETECTION_SOURCE_IP alternately right and wrong in plain
    INFORMATIONALs (no UPDATE_SA_ADDRESSES, nothing acted on) makes "NAT detection: peer (not)
    behind a NAT" a change each time, logged at INFO (mobike._nat_detection)."""
    net, client, gateway = _up()
    caplog.set_level(logging.INFO, logger="tunsec.ike")
    st = client._st
    right = nat_hash(st.spi_i, st.spi_r, (A, 4500))
    for i in range(MOVES):
        _say(net, client, [notify(NotifyType.NAT_DETECTION_SOURCE_IP, right if i % 2 else b"\1" * 20)])
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("tunsec.ike.exchanges.mobike")
             and r.levelno >= logging.INFO and r.getMessage().startswith(gateway.name)]
    assert len(lines) <= 12, f"{len(lines)} INFO lines for {MOVES} requests: {lines[:2]}"
