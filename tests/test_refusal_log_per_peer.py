"""Review revpeerdos R3: the service's lines of what it refused a peer (TEMPORARY_FAILURE, other
requests refused, max_child_sas, max_ike_sas_per_identity, installs the worker did not take) passed
5 a minute for the whole service, so one peer asking again and again used them up and every other
peer's refusal was only counted.  They are limited per peer now (services/ike/refusal_log.py,
loglimit.PeerLogLimiter): one peer's refusals spend its own share.

The gateway is a real IkeService with the worker's request handling and the C fast path in process;
the clients are IKE engines wired to it (test_ikeservice_ts_claims.TsGateway)."""

from __future__ import annotations

import dataclasses
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from test_ikeservice_peers import run
from test_ikeservice_ts_claims import Client, TsGateway, refusals

from tunsec.ike.events import NegotiationFailed
from tunsec.ike.identity import Identity
from tunsec.ike.ts import Ts
from tunsec.loglimit import PeerLogLimiter
from tunsec.services.ike import refusal_log
from tunsec.services.ike.trusted import peer_of

WIDE = "10.2.0.0/16"
A, B = 0, 1
TRIES = 20   # more than a limiter's burst


def test_one_peers_refused_requests_do_not_silence_another_peers_line(caplog: pytest.LogCaptureFixture) -> None:
    """Client A asks TRIES times to rekey its Child SA to another subnet, each refused
    (TS_UNACCEPTABLE): a burst of its lines is logged, the rest held.  Then client B asks the same
    once: its line is logged (it was held with A's, the limiter being one for the whole service)."""
    caplog.set_level(logging.INFO, logger="tunsec")

    def lines(subnet: str) -> list[str]:
        return [m for r in caplog.records if "rekey of Child SA" in (m := r.getMessage()) and subnet in m]

    async def body() -> None:
        gw = TsGateway(2, mobike=False, clients=(Client("a.example", "10.2.1.0/24"),
                                                 Client("b.example", "10.2.2.0/24")), remote_ts=WIDE)
        await gw.start()
        for i in (A, B):
            gw.connect(i)
            await gw.settle()
        for i, elsewhere, tries in ((A, "10.2.3.0/24", TRIES), (B, "10.2.4.0/24", 1)):
            sa = gw.site_sa(i)
            (child,) = sa.children
            child.local_ts = (Ts.parse(elsewhere),)
            for _ in range(tries):
                sa.rekey_child(child.unique_id)
                await gw.settle()
            assert [e.reason for e in refusals(gw, i)] == ["TS_UNACCEPTABLE"] * tries
        assert gw.service.events.rekey_ts_refused[("gw", "net")] == TRIES + 1   # each one counted
    run(body())
    assert len(lines("10.2.3.0/24")) == refusal_log.BURST   # A's: a burst, the rest held
    assert len(lines("10.2.4.0/24")) == 1, "B's refusal was held with A's"


def test_a_peers_share_is_its_identity_over_its_ike_sas_and_an_unproven_ones_its_source() -> None:
    """refusal_log.peer_key: an established IKE SA's peer is trusted.peer_of of its IkeSaUp (as
    churn_log's lines and the worker's shares count it); the same identity's IKE SA refused before it
    came up (max_ike_sas_per_identity) is the same peer; another identity another peer; an IKE SA
    not authenticated, or by an unproven name, is its connection and source (an IPv6 /64)."""
    alice, bob = Identity.parse("alice@example.org"), Identity.parse("bob@example.org")
    # EAP accounts: names their back end proves (a group PSK's are the client's choice and count by
    # source: test_refusal_log_chosen_names.py)
    up_ev = SimpleNamespace(remote_id=alice, proof="eap-mschapv2")
    service: Any = SimpleNamespace(ike_up={b"up": SimpleNamespace(ev=up_ev)},
                                   endpoint=SimpleNamespace(limits=SimpleNamespace(ipv6_source_prefix=64)))
    config = SimpleNamespace(lease_proof="eap-mschapv2", remote=SimpleNamespace(method="eap-mschapv2"))

    def sa(spi: bytes, peer: Identity | None, addr: str = "192.0.2.1") -> Any:
        return SimpleNamespace(local_spi=spi, peer_id=peer, config=config, name="rw", remote_addr=(addr, 4500))

    key = refusal_log.peer_key
    assert key(service, sa(b"up", alice), "x") == peer_of(up_ev)  # type: ignore[arg-type]
    assert key(service, sa(b"refused", alice, "198.51.100.9"), "x") == peer_of(up_ev)  # type: ignore[arg-type]
    assert key(service, sa(b"other", bob), "x") != peer_of(up_ev)  # type: ignore[arg-type]
    assert key(service, None, "x") == "x"
    unproven = [sa(b"u%d" % i, alice.unproven(), f"2001:db8:1:2::{i}") for i in range(1, 3)]
    assert key(service, unproven[0], "x") == key(service, unproven[1], "x") == ("rw", "2001:db8:1:2::/64")
    assert key(service, sa(b"n", None, "2001:db8:9::1"), "x") == ("rw", "2001:db8:9::/64")


def test_each_kind_is_limited_per_peer_apart() -> None:
    """Every one of the service's refusal limiters is per peer, and one kind's burst spent leaves a
    peer its lines of the other kinds."""
    logs = refusal_log.RefusalLogs()
    kinds = [f.name for f in dataclasses.fields(logs)]
    assert set(kinds) == {"busy", "refused", "child_limit", "ike_limit", "install_failed"}
    for kind in kinds:
        limiter = getattr(logs, kind)
        assert isinstance(limiter, PeerLogLimiter) and limiter.burst == refusal_log.BURST
    for _ in range(3 * refusal_log.BURST):
        logs.refused.admit("a")
    assert logs.refused.admit("a") is None and logs.refused.admit("b") == 0
    assert all(getattr(logs, kind).admit("a") == 0 for kind in kinds if kind != "refused")


def test_our_rekeys_a_peers_answers_leave_to_try_again_are_its_busy_lines() -> None:
    """Review revrekey2 R3: our rekey answered CHILD_SA_NOT_FOUND before the peer can have the Child SA,
    or an answer the peer deleted before it came (DELETED_BY_PEER), is tried again, and the peer may
    answer every one so: the lines take the peer's share of the busy kind (a burst, the rest held), as
    TEMPORARY_FAILURE's.  Before, an established IKE SA's were all written at ERROR."""
    alice = Identity.parse("alice@example.org")
    config = SimpleNamespace(lease_proof="eap-mschapv2", remote=SimpleNamespace(method="eap-mschapv2"))
    service: Any = SimpleNamespace(refusals=refusal_log.RefusalLogs(), ike_up={}, _admit_log=lambda sa: 0)
    sa: Any = SimpleNamespace(local_spi=b"up", peer_id=alice, config=config, name="rw", remote_addr=("192.0.2.1", 4500))
    for reason in ("CHILD_SA_NOT_FOUND", "DELETED_BY_PEER"):
        service.refusals = refusal_log.RefusalLogs()
        ev = NegotiationFailed("rw", reason, "peer refused Child SA net", "net")
        passed = [refusal_log.failure(service, sa, ev) for _ in range(TRIES)]
        assert sum(p is not None for p in passed) == refusal_log.BURST, reason
