"""ike/peer_warnings.py's ``peer_input`` leaves a ResourceWarning to the process's filters: the
collector's finalizers raise it (an unclosed socket of anything the process holds) wherever they
happen to run, and one that ran while a peer's certificate was read was logged as the certificate's
(the clean-clone CI run of 5df96e79: a test harness's unclosed netlink sockets, "(and 5 more)").

A real socket left unclosed and collected inside ``peer_input``."""

from __future__ import annotations

import gc
import logging
import socket
import warnings

import pytest
from test_ikeservice_cert_warnings import as_in_the_daemon

from tunsec.ike import peer_warnings
from tunsec.loglimit import LogLimiter


@pytest.fixture(autouse=True)
def fresh_log_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peer_warnings, "_log_limit", LogLimiter())


def _drop_an_unclosed_socket() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    cycle: list[object] = [sock]
    cycle.append(cycle)   # only the collector frees it: as the harness's did, at an arbitrary moment
    del sock, cycle
    gc.collect()


def _peer_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == peer_warnings.__name__]


@pytest.mark.parametrize("mode", ["default", "error"])
def test_a_finalizers_resource_warning_is_not_the_peers(
        mode: str, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    capfd.readouterr()
    with (caplog.at_level(logging.INFO, logger=peer_warnings.__name__), as_in_the_daemon(mode),
          peer_warnings.peer_input("a peer's certificate")):
        warnings.warn("the peer's name is odd", UserWarning, stacklevel=1)
        _drop_an_unclosed_socket()
    (line,) = _peer_lines(caplog)
    assert "a library warned: UserWarning: the peer's name is odd" in line
    assert "(and" not in line and "ResourceWarning" not in line
    assert capfd.readouterr().err == ""   # ignored, as the process's filters say


def test_a_resource_warning_the_process_shows_is_shown_as_outside(
        capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    """Under -W always::ResourceWarning (python -X dev) it reaches stderr as it would outside."""
    capfd.readouterr()
    with (caplog.at_level(logging.INFO, logger=peer_warnings.__name__), as_in_the_daemon("default")):
        warnings.simplefilter("always", ResourceWarning)
        with peer_warnings.peer_input("a peer's certificate"):
            _drop_an_unclosed_socket()
        assert "ResourceWarning: unclosed <socket.socket" in capfd.readouterr().err
        assert _peer_lines(caplog) == []
        _drop_an_unclosed_socket()   # and the filters are the process's again after it
        assert "ResourceWarning: unclosed <socket.socket" in capfd.readouterr().err
