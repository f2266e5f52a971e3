"""The engine's lines a peer can repeat are limited per peer (ike/peer_logs.py, h/fixloglim).

Each kind was one LogLimiter for the whole process (5 a minute): one peer's repeats spent it, and
another peer's line of the kind was then held (h/fixpeerdos2's item of What remains).  Here one
peer (X: moon.example at A, its gateway connection b-from-a) repeats a kind well past its burst,
then another (Y: mars.example at C, b-from-c) causes the kind once: Y's line must pass.  Then the
ceiling: 21 peers within their own bursts pass CEILING lines of a kind, no more, and what it held
is counted in its next line.  Engines wired together on the fake network; the sites the fake network
cannot reach cheaply (an unanswered MOBIKE check, a narrowed TSi, a CREATE_CHILD_SA refused for now)
are called with the gateway's real IKE SA states."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import pytest
from test_engine import A, B, initiator_cfg, psk_config, responder_cfg
from test_engine_mobike import V6, _move, _say
from test_engine_peer_abuse import _deletes, _established
from test_engine_vips import client_cfg, connect, gateway, pools

from tunsec.ike.config import child_config
from tunsec.ike.constants import NotifyType
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.exchanges import child, create_child_sa, mobike
from tunsec.ike.exchanges.base import find_notify, notify
from tunsec.ike.identity import Identity
from tunsec.ike.peer_logs import BURST, CEILING
from tunsec.ike.sa import IkeSa
from tunsec.ike.state import IkeSaState, nat_hash
from tunsec.ike.testing import Network
from tunsec.ike.ts import Ts
from tunsec.policy.claims import Peer, TsClaims

C, C2, V6C = "192.0.2.33", "192.0.2.34", "2001:db8::33"   # Y's address, where it moves, its IPv6 one
A2 = "192.0.2.11"                                          # where X moves
SPOOFED = ("203.0.113.9", 4500)
REPEATS = 3 * BURST   # X's repeats of a kind: well past its burst
X_NAME, Y_NAME = "b-from-a", "b-from-c"   # the gateway's connections of X and Y (its lines name them)


def _y_cfgs(mobike: bool) -> tuple[object, object]:
    ours = child_config("net", "10.3.0.0/16", "10.2.0.0/16", "aes128gcm16")
    theirs = child_config("net", "10.2.0.0/16", "10.3.0.0/16", "aes128gcm16")
    return (dataclasses.replace(psk_config("c-to-b", "mars.example", "sun.example", C, B, (ours,)), mobike=mobike),
            dataclasses.replace(psk_config(Y_NAME, "sun.example", "mars.example", B, None, (theirs,)), mobike=mobike))


def _network(mobike: bool = True) -> tuple[Network, IkeEndpoint, IkeEndpoint, IkeEndpoint]:
    """A gateway B with two named peers, X (moon.example at A) and Y (mars.example at C)."""
    net = Network()
    y_cfg, gw_y_cfg = _y_cfgs(mobike)
    x = net.add(A, IkeEndpoint([initiator_cfg(mobike=mobike)]))
    y = net.add(C, IkeEndpoint([y_cfg]))   # type: ignore[list-item]
    gw = net.add(B, IkeEndpoint([responder_cfg(mobike=mobike), gw_y_cfg]))   # type: ignore[list-item]
    return net, x, y, gw


def _up(mobike: bool = True) -> tuple[Network, IkeEndpoint, IkeSa, IkeSa]:
    net, x, y, gw = _network(mobike)
    x.initiate("a-to-b", "net", net.now)
    y.initiate("c-to-b", "net", net.now)
    net.run()
    net.take(A), net.take(C), net.take(B)
    (xs,), (ys,) = x.sas, y.sas
    assert {sa.name for sa in gw.sas} == {X_NAME, Y_NAME}
    return net, gw, xs, ys


def _info(caplog: pytest.LogCaptureFixture, name: str, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO
            and r.getMessage().startswith((f"{name}:", f"{name} child")) and text in r.getMessage()]


# ------------------------------------------------------------------ MOBIKE, through the wire


def _refused(net: Network, sa: IkeSa, home: str, v6: str, times: int) -> None:
    _move(net, home, v6)   # to another family than its Child SAs: refused (UNACCEPTABLE_ADDRESSES)
    for _ in range(times):
        answer = _say(net, sa, [notify(NotifyType.UPDATE_SA_ADDRESSES)])
        assert find_notify(answer, NotifyType.UNACCEPTABLE_ADDRESSES) is not None


def _nat_flips(net: Network, sa: IkeSa, home: str, _: str, times: int) -> None:
    st = sa._st
    right = nat_hash(st.spi_i, st.spi_r, (home, 4500))
    for i in range(times):   # its NAT detection changes each time (from "behind a NAT", as encap is forced)
        _say(net, sa, [notify(NotifyType.NAT_DETECTION_SOURCE_IP, b"\1" * 20 if i % 2 else right)])


def _moves(net: Network, sa: IkeSa, home: str, away: str, times: int) -> None:
    here = home
    for i in range(times):   # back and forth: "moved" and "confirmed" lines each time
        there = away if i % 2 == 0 else home
        _move(net, here, there)
        here = there
        assert sa.update_addresses((there, 4500))
        net.run(until=net.now + 1)


KINDS: dict[str, tuple[Callable[[Network, IkeSa, str, str, int], None], str]] = {
    "refused": (_refused, "MOBIKE: refusing to move"),
    "nat": (_nat_flips, "MOBIKE: NAT detection"),
    "moves": (_moves, "MOBIKE: peer moved"),
}


@pytest.mark.parametrize("kind", KINDS)
def test_one_peers_mobike_repeats_do_not_hold_back_another_peers_line(
        kind: str, caplog: pytest.LogCaptureFixture) -> None:
    """X repeats a kind of MOBIKE line (refused moves, NAT detection flips, moves) 15 times, then Y
    causes it once: Y's line is at INFO.  On main X's first five spent mobike.REFUSED_LOG (NAT_LOG,
    MOVE_LOG) for every peer: Y's line was held (at DEBUG, for moves and NAT)."""
    act, text = KINDS[kind]
    net, _, xs, ys = _up()
    caplog.set_level(logging.INFO, "tunsec.ike")
    act(net, xs, A, V6 if kind == "refused" else A2, REPEATS)
    assert len(_info(caplog, X_NAME, text)) <= BURST   # X's own share still holds it
    act(net, ys, C, V6C if kind == "refused" else C2, 1)
    assert _info(caplog, Y_NAME, text), f"Y's line held: {_info(caplog, X_NAME, text)[-1:]}"


# ------------------------------------------------------------------ before authentication, IKE rekeys


def test_one_sources_foreign_ike_auths_do_not_hold_back_another_sources_line(caplog: pytest.LogCaptureFixture) -> None:
    """X's first IKE_AUTH comes 15 times from another IP (a copy sent from SPOOFED), then Y's once:
    Y's line (naming its IKE_SA_INIT's address) is logged.  On main sa_responder._ELSEWHERE_LOG was
    spent by X's copies."""
    net, x, y, gw = _network(mobike=False)
    x.initiate("a-to-b", "net", net.now)
    y.initiate("c-to-b", "net", net.now)
    net.step()
    net.step()
    auth = [s for s in net.collect() if s.dst[0] == B]
    caplog.set_level(logging.INFO, "tunsec.ike")
    for source, times in ((A, REPEATS), (C, 1)):
        for _ in range(times):
            for s in (s for s in auth if s.src[0] == source):
                net.deliver(dataclasses.replace(s, src=SPOOFED))
    lines = [r.getMessage() for r in caplog.records if "first IKE_AUTH from another IP" in r.getMessage()]
    assert len([line for line in lines if f"IKE_SA_INIT from {A}" in line]) <= BURST
    assert [line for line in lines if f"IKE_SA_INIT from {C}" in line], lines[-1:]
    assert gw.stats.preauth_elsewhere > REPEATS


def test_one_peers_refused_ike_rekeys_do_not_hold_back_another_peers_line(caplog: pytest.LogCaptureFixture) -> None:
    """X rekeys its IKE SA over and over and never lets a DELETE through: past MAX_UNDELETED each
    rekey is refused (TEMPORARY_FAILURE), well past its burst; then Y does the same a few times:
    its refusal is logged.  On main sa_successor._REFUSED_LOG was X's alone by then."""
    net, x, y, gw = _network(mobike=False)
    x.initiate("a-to-b", "net", net.now)
    y.initiate("c-to-b", "net", net.now)
    net.run()
    net.drop = lambda sent: _deletes(sent) and sent.src[0] in (A, C)
    caplog.set_level(logging.INFO, "tunsec.ike")
    for endpoint, times in ((x, REPEATS), (y, 4)):
        for _ in range(times):
            _established(endpoint).rekey()
            while net.step():   # no timers: the retries and the lingering stay where they are
                pass
        if endpoint is x:
            assert gw.stats.ike_rekeys_refused > BURST
    assert len(_info(caplog, X_NAME, "IKE SA rekey refused")) <= BURST
    assert _info(caplog, Y_NAME, "IKE SA rekey refused")


# ------------------------------------------------------------------ a road warrior's dynamic inside the pool


def test_made_up_names_of_one_source_share_its_no_lease_lines_and_leave_another_sources_one(
        caplog: pytest.LogCaptureFixture) -> None:
    """A group-PSK gateway: a client at 10.3.0.7 (inside the pool, asking for no virtual IP) connects
    8 times, each under another made-up name: its Child SAs are refused, its lines share its source's
    burst.  Then a client at 10.3.0.8: its line is logged.  On main child._NO_LEASE_LOG was spent."""
    net, pool = Network(), pools(v4="10.3.0.0/24")
    gateway(net, pool)
    caplog.set_level(logging.WARNING, "tunsec.ike")
    names = [dataclasses.replace(client_cfg(f"c{i}.example", "10.3.0.7", ()), name=f"home{i}") for i in range(8)]
    first = net.add("10.3.0.7", IkeEndpoint(names))
    for cfg in names:
        first.initiate(cfg.name, "net", net.now)
        net.run(until=net.now + 5)
    lines = [r.getMessage() for r in caplog.records if "has no virtual IP" in r.getMessage()]
    assert len(lines) == BURST and len({line.split()[2] for line in lines}) == BURST   # names, one share
    other = net.add("10.3.0.8", IkeEndpoint([client_cfg("d.example", "10.3.0.8", ())]))
    other.initiate("home", "net", net.now)
    net.run(until=net.now + 5)
    assert any("peer d.example has no virtual IP and its address 10.3.0.8" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------ sites called with the gateway's real states


def _unanswered_check(st: IkeSaState) -> None:
    st.esp_hold = st.remote_addr   # a MOBIKE check under way whose new address never answers
    assert mobike.go_back(st)


def _narrowed(st: IkeSaState) -> None:
    """A road warrior's TSi 10.50.0.0/16 meets another peer's 10.50.0.0/24: narrowed to the rest."""
    claims = TsClaims()
    claims.add(99, "other", Peer(Identity.parse("z.example"), "psk z"), (Ts.parse("10.50.0.0/24"),),
               (Ts.parse("10.2.0.0/16"),))
    st.ts_claims, st.config = claims, dataclasses.replace(st.config, pools=("v4",))
    tsi, tsr = (Ts.parse("10.50.0.0/16"),), (Ts.parse("10.2.0.0/16"),)
    left = child._not_others(st, st.config.children[0], tsi, tsi, tsr)
    assert isinstance(left, tuple) and Ts.parse("10.50.0.0/24") not in left


def _for_now(st: IkeSaState) -> None:
    create_child_sa._for_now(st, "a test's reason")


SITES: dict[str, tuple[Callable[[IkeSaState], None], str]] = {
    "unanswered check": (_unanswered_check, "never answered our request"),
    "narrowed": (_narrowed, "narrowed to"),
    "for now": (_for_now, "refusing the peer's CREATE_CHILD_SA for now"),
}


def _gateway_states(gw: IkeEndpoint) -> tuple[IkeSaState, IkeSaState]:
    (x,), (y,) = ([sa._st for sa in gw.sas if sa.name == name] for name in (X_NAME, Y_NAME))
    return x, y


@pytest.mark.parametrize("site", SITES)
def test_one_peers_repeats_at_a_site_do_not_hold_back_another_peers_line(
        site: str, caplog: pytest.LogCaptureFixture) -> None:
    """The same for the lines of an unanswered MOBIKE check (mobike._FAILED_LOG on main), a
    narrowed TSi (child._narrow_log: per peer on main, but without a ceiling) and a CREATE_CHILD_SA
    refused for now (create_child_sa._REFUSED_LOG: per peer on main already)."""
    call, text = SITES[site]
    _, gw, _, _ = _up(mobike=False)
    x, y = _gateway_states(gw)
    caplog.set_level(logging.INFO, "tunsec.ike")
    for _ in range(REPEATS):
        call(x)
    assert len(_info(caplog, X_NAME, text)) <= BURST
    call(y)
    assert _info(caplog, Y_NAME, text)


# ------------------------------------------------------------------ the ceiling over all peers


@pytest.mark.parametrize("site", ["unanswered check", "narrowed"])
def test_many_peers_within_their_shares_pass_no_more_than_the_ceiling(
        site: str, caplog: pytest.LogCaptureFixture) -> None:
    """21 clients of a group PSK, each from its own address, each causing a kind BURST times (within
    its own share): CEILING lines pass, and the next the ceiling admits (a minute later) counts the
    BURST it held.  On main an unanswered check's lines had one limiter for the process (BURST lines
    in all), a narrowed TSi's a limiter per peer without a ceiling (21 x BURST)."""
    call, text = SITES[site]
    net, pool = Network(), pools(v4="10.3.0.0/24")
    gw = gateway(net, pool)
    clock = [0.0]
    gw.peer_logs.clock = lambda: clock[0]
    peers = CEILING // BURST + 1
    for i in range(peers):
        connect(net, f"c{i}.example", f"192.0.2.{100 + i}")
    states = [sa._st for sa in gw.sas]
    assert len(states) == peers and len({gw.peer_logs.peer_of(st) for st in states}) == peers
    caplog.set_level(logging.INFO, "tunsec.ike")

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO and text in r.getMessage()]

    for st in states:
        for _ in range(BURST):
            call(st)
    assert len(lines()) == CEILING
    clock[0] += 60.0
    call(states[0])
    assert len(lines()) == CEILING + 1 and lines()[-1].endswith(f"({BURST} more like it suppressed)")


def test_named_peers_are_two_and_keep_their_identitys_share() -> None:
    """The fixture's X and Y are two peers, each its identity with its proof (peer_logs.peer_of)."""
    _, gw, _, _ = _up(mobike=False)
    x, y = _gateway_states(gw)
    assert gw.peer_logs.peer_of(x) == (Identity.parse("moon.example"), x.config.lease_proof)
    assert gw.peer_logs.peer_of(y) == (Identity.parse("mars.example"), y.config.lease_proof)
