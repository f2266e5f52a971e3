"""tunsec.sdnotify: the datagram systemd's sd_notify(3) protocol expects, on a real socket."""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tunsec.sdnotify import notify


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[socket.socket]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(tmp_path / "notify"))
        s.settimeout(5)
        yield s


def test_path_socket_gets_one_datagram(listener: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", listener.getsockname())
    assert notify("READY=1", "STATUS=up")
    assert listener.recv(4096) == b"READY=1\nSTATUS=up"


def test_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"tunsec-test-{secrets.token_hex(4)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        s.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify("STOPPING=1")
        assert s.recv(4096) == b"STOPPING=1"


def test_outside_systemd_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not notify("READY=1")
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")     # a transport this sender does not speak
    assert not notify("READY=1")


def test_gone_socket_is_a_warning_not_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "gone"
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    with caplog.at_level(logging.WARNING, logger="tunsec"):
        assert not notify("READY=1")
    assert f"cannot notify systemd on {path}" in caplog.text
    assert not os.path.exists(path)
