"""The server-health model authentication and accounting share (tunsec.radius.health), with a
fake clock: the order a new request tries the servers in (strongSwan's preference: configured
preference, free share of ``sockets``, up), one probe at a time after the hold, and a probe given
up before it reached the server (its request cancelled) handed back."""
from __future__ import annotations

import contextlib
import ipaddress

from tunsec.ike.secret import Secret
from tunsec.radius.health import DEAD_HOLD, ServerHealth, in_order
from tunsec.radius.settings import RadiusServer


class Servers:
    def __init__(self, *names: str, preference: dict[str, int] | None = None,
                 sockets: dict[str, int] | None = None) -> None:
        self.now = 0.0
        self.servers = [RadiusServer(n, ipaddress.ip_address("192.0.2.1"), Secret(b"s"), 1812 + i,
                                     preference=(preference or {}).get(n, 0), sockets=(sockets or {}).get(n, 1))
                        for i, n in enumerate(names)]
        self.health = {s.name: ServerHealth(s.name, s.endpoint(s.auth_port), "Access-Requests", lambda: self.now)
                       for s in self.servers}
        self.under_way = {n: 0 for n in names}

    def of(self, server: RadiusServer) -> ServerHealth:
        return self.health[server.name]

    def order(self) -> list[str]:
        """The whole order of one request that tries them all (and so releases its probe)."""
        return [s.name for s in in_order(self.servers, self.of, lambda s: self.under_way[s.name])]


def test_the_highest_preference_goes_first_whatever_the_order_written() -> None:
    book = Servers("a", "b", "c", preference={"b": 100, "c": -5})
    assert book.order() == ["b", "a", "c"]
    book.health["b"].answered()
    book.health["a"].answered()
    assert book.order() == ["b", "a", "c"]   # up or not yet asked: the same boost


def test_a_dead_preferred_server_is_passed_by_for_the_hold_then_probed_first() -> None:
    book = Servers("a", "b", preference={"b": 50})
    book.health["b"].missed()
    assert book.order() == ["a", "b"]
    book.now = DEAD_HOLD / 2
    assert book.order() == ["a", "b"]
    book.now = DEAD_HOLD
    probe = in_order(book.servers, book.of)
    assert next(probe).name == "b"   # its hold is over: this request tries it first
    assert book.order() == ["a", "b"]   # the others pass it by while it is probed
    probe.close()
    book.health["b"].answered()
    assert book.order() == ["b", "a"]


def test_equal_servers_share_the_load_by_the_free_share_of_their_sockets() -> None:
    book = Servers("a", "b")
    assert book.order() == ["a", "b"]   # a tie: the one written first
    book.under_way["a"] = 1             # its one socket busy: 110 against 210
    assert book.order() == ["b", "a"]
    book.under_way["b"] = 1
    assert book.order() == ["a", "b"]
    wide = Servers("a", "b", sockets={"a": 4, "b": 4})
    wide.under_way.update(a=2, b=1)     # 50 free against 75
    assert wide.order() == ["b", "a"]
    wide.under_way["b"] = 9             # more under way than sockets: nothing free, not less
    assert wide.order() == ["a", "b"]


def test_a_preference_of_100_keeps_a_busy_server_first_a_smaller_one_lets_the_load_spill_over() -> None:
    strong = Servers("a", "b", preference={"b": 100})
    strong.under_way["b"] = 1            # 100 + 0 + 110 against 0 + 100 + 110: a tie, the first written
    assert strong.order() == ["a", "b"]
    stronger = Servers("a", "b", preference={"b": 101})
    stronger.under_way["b"] = 1
    assert stronger.order() == ["b", "a"]
    weak = Servers("a", "b", preference={"b": 50})
    weak.under_way["b"] = 1
    assert weak.order() == ["a", "b"]
    weak.under_way["b"] = 0
    assert weak.order() == ["b", "a"]


def test_a_busy_server_that_answers_still_goes_before_a_dead_one() -> None:
    book = Servers("a", "b", preference={"a": 30})
    book.under_way["b"] = 1
    book.health["a"].missed()
    assert book.order() == ["b", "a"]   # 0 + 0 + 110 against 30 + 100: the dead one last anyway


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


def test_beyond_their_sockets_the_smaller_share_of_identifiers_in_use_goes_first() -> None:
    """Past ``sockets`` under way strongSwan's score says nothing more (no socket free): tunsec's
    sockets take 256 requests each, so of equal scores the one with the smaller share of its
    identifiers in use goes first, and the load stays shared however high."""
    book = Servers("a", "b", sockets={"a": 1, "b": 2})
    book.under_way.update(a=5, b=5)     # both scores 110: 5 of 256 against 5 of 512
    assert book.order() == ["b", "a"]
    book.under_way.update(a=5, b=20)    # 20 of 512 is more than 5 of 256
    assert book.order() == ["a", "b"]
    book.under_way.update(a=20, b=40)   # the same share: the one written first
    assert book.order() == ["a", "b"]


def test_a_server_whose_identifiers_are_all_in_use_goes_after_one_with_a_free_identifier() -> None:
    """A request there would wait for an identifier: it goes to one that can take it now, whatever
    the preference; with none free, still the preferred one (and it waits there)."""
    book = Servers("a", "b", preference={"a": 500})
    book.under_way.update(a=255, b=100)
    assert book.order() == ["a", "b"]
    book.under_way["a"] = 256
    assert book.order() == ["b", "a"]
    book.under_way["b"] = 256
    assert book.order() == ["a", "b"]
    book.health["b"].missed()           # one free but down: the full one that answers goes first
    book.under_way["b"] = 0
    assert book.order() == ["a", "b"]
