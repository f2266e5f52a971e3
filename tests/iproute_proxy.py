"""pyroute2's IPRoute as tun.py opens it (``tun._iproute``), wrapped for a test that puts the subclass
in its place: a subclass intercepts a request by defining its method (``route``, ``addr``...), and
``before`` runs ahead of every other attribute taken from the real one (a route lookup before each
request, say)."""

from __future__ import annotations

from typing import Any, Self

from tunsec.dataplane import tun as tunmod

REAL = tunmod._iproute   # taken at import, before any test puts a proxy in its place


class IPRouteProxy:
    def __init__(self) -> None:
        self.i = REAL()

    def __enter__(self) -> Self:
        self.i.__enter__()
        return self

    def __exit__(self, *exc: object) -> Any:
        return self.i.__exit__(*exc)

    def __getattr__(self, name: str) -> Any:
        self.before()
        return getattr(self.i, name)

    def before(self) -> None:
        """Ahead of each attribute taken from the real IPRoute: nothing here."""
