"""The server-health model authentication and accounting share (tunsec.radius.health), with a
fake clock: the order a new request tries the servers in, one probe at a time after the hold,
and a probe given up before it reached the server (its request cancelled) handed back."""
from __future__ import annotations

import contextlib
import ipaddress

from tunsec.ike.secret import Secret
from tunsec.radius.health import DEAD_HOLD, ServerHealth, in_order
from tunsec.radius.settings import RadiusServer


class Servers:
    def __init__(self, *names: str) -> None:
        self.now = 0.0
        self.servers = [RadiusServer(n, ipaddress.ip_address("192.0.2.1"), Secret(b"s"), 1812 + i)
                        for i, n in enumerate(names)]
        self.health = {s.name: ServerHealth(s.name, s.endpoint(s.auth_port), "Access-Requests", lambda: self.now)
                       for s in self.servers}

    def of(self, server: RadiusServer) -> ServerHealth:
        return self.health[server.name]

    def order(self) -> list[str]:
        """The whole order of one request that tries them all (and so releases its probe)."""
        return [s.name for s in in_order(self.servers, self.of)]


def test_a_down_server_goes_last_until_its_hold_is_over_then_one_request_probes_it() -> None:
    book = Servers("a", "b", "c")
    assert book.order() == ["a", "b", "c"]
    book.health["a"].missed()
    book.health["b"].answered()
    assert book.order() == ["b", "c", "a"]
    assert [h.status()["passed_by"] for h in book.health.values()] == [True, False, False]
    assert [h.state for h in book.health.values()] == ["down", "up", "unknown"]
    book.now = DEAD_HOLD
    first = in_order(book.servers, book.of)
    assert next(first).name == "a"   # this request probes it, before the others
    assert book.health["a"].probing
    assert book.order() == ["b", "c", "a"]   # while it is probed, the others still pass it by
    assert next(first).name == "b"           # the probe moved on from it (a's request unanswered)
    assert not book.health["a"].probing
    first.close()
    book.health["a"].answered()
    assert book.order() == ["a", "b", "c"] and book.health["a"].status()["unanswered_in_row"] == 0


def test_a_probe_closed_before_it_reached_the_server_is_handed_to_the_next_request() -> None:
    book = Servers("a", "b")
    book.health["b"].missed()
    book.now = DEAD_HOLD + 1
    with contextlib.closing(in_order(book.servers, book.of)) as servers:
        assert next(servers).name == "a"   # "b" is this request's probe, after "a"
        assert book.health["b"].probing
    assert not book.health["b"].probing   # the request ended at "a" (answered, or cancelled)
    assert book.order() == ["a", "b"]
    book.health["b"].missed()   # that probe found it silent: held again from now
    assert book.health["b"].status()["passed_by"] and book.health["b"].unanswered == 2
