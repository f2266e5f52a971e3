"""ike/peer_warnings.py's ``peer_input`` takes only the warnings of the thread reading the peer's
data: one another thread raises meanwhile (a reload's thread loading the operator's certificates)
is that thread's, shown as the process shows warnings, not logged as the peer's nor hidden.

Real threads, sequenced with events so the other thread warns while ``peer_input`` is open."""

from __future__ import annotations

import logging
import threading
import warnings

import pytest
from test_ikeservice_cert_warnings import as_in_the_daemon

from tunsec.ike import peer_warnings
from tunsec.loglimit import LogLimiter


@pytest.fixture(autouse=True)
def fresh_log_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peer_warnings, "_log_limit", LogLimiter())


def _warn_in_a_thread(text: str) -> None:
    t = threading.Thread(target=lambda: warnings.warn(text, UserWarning, stacklevel=1))
    t.start()
    t.join()


def test_another_threads_warning_while_a_peers_input_is_read_stays_that_threads(
        capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    capfd.readouterr()
    with (caplog.at_level(logging.INFO, logger=peer_warnings.__name__), as_in_the_daemon("default"),
          peer_warnings.peer_input("a peer's certificate")):
        _warn_in_a_thread("the operator's own certificate is odd")
    assert "the operator's own certificate is odd" in capfd.readouterr().err
    assert not [r for r in caplog.records if r.name == peer_warnings.__name__]


def test_the_reading_threads_warning_is_still_the_peers_and_off_stderr(
        capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    capfd.readouterr()
    with (caplog.at_level(logging.INFO, logger=peer_warnings.__name__), as_in_the_daemon("error"),
          peer_warnings.peer_input("a peer's certificate")):
        warnings.warn("the peer's name is odd", UserWarning, stacklevel=1)
        _warn_in_a_thread("the operator's own certificate is odd")
    err = capfd.readouterr().err
    assert "the peer's name is odd" not in err
    assert "the operator's own certificate is odd" in err   # shown, as -W error's "always" would not raise it there
    (line,) = [r.getMessage() for r in caplog.records if r.name == peer_warnings.__name__]
    assert "reading a peer's certificate: a library warned: UserWarning: the peer's name is odd" in line
    assert "(and" not in line   # the other thread's is not counted as the peer's
