"""The daemon's own part of ``tunsec status`` stubbed (no TUN, no sockets, no control socket), for
tests that render a service's status as the CLI prints it."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from tunsec.ctlsocket import Counts


def stub_daemon(service_status: Callable[[Any], Any]) -> SimpleNamespace:
    return SimpleNamespace(
        cfg=SimpleNamespace(tunsec=SimpleNamespace(tun="tun0")), mtu=1400, tun=None,
        sockets=SimpleNamespace(offloads=lambda: []),
        worker=SimpleNamespace(pid=None, malformed=0, late=0, dump_overflows=0, stderr_dropped=0),
        unowned=SimpleNamespace(count=0), services=[],
        calm=None, restarts=[], started=0.0, ctl_counts=Counts(), route_keeper=None,
        service_status=lambda d: [{"tunnels": []}, service_status(d)])
