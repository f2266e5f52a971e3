"""IKE SA rekey, Child SA rekey and Child SA DELETE crossing each other (two engines, fake clock).

Each test starts one operation on one peer, lets the wire advance ``hops``
deliveries, starts a second operation on the other peer, optionally loses one
datagram, and runs until nothing is left to do (also past the time a replaced
IKE SA lingers). The installed set of each side is modelled only from the
events the daemon acts on (ChildSaUp installs an SA pair, ChildSaDown deletes
it, SpiUnused deletes a larval SA) and must then:

- equal the Child SAs the live IKE SA holds, with nothing half-negotiated left;
- mirror the other side's (my inbound SPI is its outbound one);
- account for every SPI the allocator handed out (installed, down or unused),
  so no SA is left in the dataplane that no one will ever delete.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable

import pytest

from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.constants import ExchangeType
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaDown, ChildSaUp, Event, IkeSaRekeyed, SpiUnused
from tunsec.ike.identity import Identity
from tunsec.ike.message import decode_header
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.sa import IkeSa, State
from tunsec.ike.secret import Secret
from tunsec.ike.testing import Network, Sent

A, B = "192.0.2.1", "192.0.2.2"
PSK = Secret(b"a shared secret of some length")
OPS = ("rekey_ike", "rekey_child", "delete_child")


def cfg(initiator: bool) -> IkeConfig:
    local_ts, remote_ts = ("10.1.0.0/16", "10.2.0.0/16") if initiator else ("10.2.0.0/16", "10.1.0.0/16")
    ids = ("moon.example", "sun.example") if initiator else ("sun.example", "moon.example")
    return IkeConfig(
        "conn",
        LocalAuth("psk", Identity.parse(ids[0])),
        RemoteAuth("psk", Identity.parse(ids[1])),
        parse_proposals("aes128gcm16-prfsha256-curve25519"),
        (child_config("net", local_ts, remote_ts, "aes128gcm16"),),
        psk=PSK,
        local_addr=A if initiator else B,
        remote_addr=B if initiator else None,
    )


@dataclasses.dataclass
class Pair:
    net: Network
    endpoints: dict[str, IkeEndpoint]
    allocated: dict[str, list[int]]

    def live(self, ip: str) -> IkeSa:
        (sa,) = [s for s in self.endpoints[ip].sas if s.state is State.ESTABLISHED]
        return sa


def established() -> Pair:
    allocated: dict[str, list[int]] = {A: [], B: []}
    counter = itertools.count(0x1000)

    def allocator(ip: str) -> Callable[[], int]:
        def allocate() -> int:
            allocated[ip].append(next(counter) + (0x100000 if ip == B else 0))
            return allocated[ip][-1]

        return allocate

    net = Network()
    a = net.add(A, IkeEndpoint([cfg(True)], spi_allocator=allocator(A)))
    b = net.add(B, IkeEndpoint([cfg(False)], spi_allocator=allocator(B)))
    a.initiate("conn", "net", net.now)
    net.run()
    return Pair(net, {A: a, B: b}, allocated)


def start(sa: IkeSa, op: str) -> None:
    if op == "rekey_ike":
        sa.rekey()
    elif sa.children:  # a child operation needs a child: an earlier DELETE may have taken it
        child = sa.children[0].unique_id
        (sa.rekey_child if op == "rekey_child" else sa.delete_child)(child)


def model(events: list[Event]) -> tuple[dict[int, int], set[int]]:
    """Installed {spi_in: spi_out} after the events, and every SPI they released."""
    installed: dict[int, int] = {}
    released: set[int] = set()
    for ev in events:
        if isinstance(ev, ChildSaUp):
            assert ev.spi_in not in installed and ev.spi_in not in released, f"{ev.spi_in:x} installed twice"
            installed[ev.spi_in] = ev.spi_out
        elif isinstance(ev, ChildSaDown):
            assert installed.pop(ev.spi_in, None) == ev.spi_out, f"ChildSaDown for {ev.spi_in:x}, not installed"
            released.add(ev.spi_in)
        elif isinstance(ev, SpiUnused):
            assert ev.spi not in installed, f"SpiUnused for installed {ev.spi:x}"
            released.add(ev.spi)
    return installed, released


def check(pair: Pair, ops: tuple[str, str]) -> None:
    sides = {}
    for ip in (A, B):
        installed, released = model([ev for _, ev in pair.net.events[ip]])
        sa = pair.live(ip)
        assert len([s for s in pair.endpoints[ip].sas if not s.is_closed]) == 1, "a replaced IKE SA is left"
        assert {c.spi_in: c.spi_out for c in sa.children} == installed, "events and engine disagree"
        assert all(c.installed for c in sa._st.children.values()), "a half-negotiated Child SA is left"
        assert set(pair.allocated[ip]) == set(installed) | released, "an allocated SPI was never released"
        sides[ip] = (sa, installed)
    (sa_a, in_a), (sa_b, in_b) = sides[A], sides[B]
    assert (sa_a.spi_i, sa_a.spi_r) == (sa_b.spi_i, sa_b.spi_r)
    assert in_a == {out: spi_in for spi_in, out in in_b.items()}, "the two sides' Child SAs differ"
    if "delete_child" not in ops:
        assert len(in_a) == 1
    elif "rekey_child" not in ops:
        assert not in_a


CROSSINGS = [(x, y) for x in OPS for y in OPS if x != y]


@pytest.mark.parametrize("lose", [None, 1, 2, 3])
@pytest.mark.parametrize("hops", range(5))
@pytest.mark.parametrize("first_side", [A, B], ids=["initiator-first", "responder-first"])
@pytest.mark.parametrize("ops", CROSSINGS, ids=["-vs-".join(c) for c in CROSSINGS])
def test_crossing(ops: tuple[str, str], first_side: str, hops: int, lose: int | None) -> None:
    pair = established()
    net = pair.net
    other = B if first_side == A else A
    start(pair.live(first_side), ops[0])
    for _ in range(hops):
        net.step()
    start(pair.live(other), ops[1])
    if lose is not None:
        seen = itertools.count(1)

        def drop(sent: Sent) -> bool:
            return next(seen) == lose

        net.drop = drop
    net.run()
    check(pair, ops)
    if "rekey_ike" in ops:
        for ip in (A, B):
            assert any(isinstance(ev, IkeSaRekeyed) for _, ev in net.events[ip])


def test_delete_of_a_child_crossing_an_ike_sa_rekey() -> None:
    """B's DELETE of a child and A's rekey of the IKE SA cross on the wire (RFC 7296 §2.25.1/§2.25.2):
    A, rekeying, answers the DELETE as usual; B, deleting a Child SA, answers the rekey with
    TEMPORARY_FAILURE (were the rekey answered, B's DELETE could be answered on an IKE SA that is
    gone by then).  A tries the rekey again a few seconds later, and it succeeds."""
    pair = established()
    net = pair.net
    old_a, old_b = pair.live(A), pair.live(B)
    (child,) = old_b.children
    start = net.now
    old_a.rekey()  # A's rekey request and B's DELETE cross on the wire
    old_b.delete_child(child.unique_id)
    net.step()
    assert old_b.state is State.ESTABLISHED  # B refused the rekey: it keeps its IKE SA
    net.run()
    for ip in (A, B):
        downs = [ev for _, ev in net.events[ip] if isinstance(ev, ChildSaDown)]
        assert len(downs) == 1 and {downs[0].spi_in, downs[0].spi_out} == {child.spi_in, child.spi_out}
        assert not pair.live(ip).children
        assert any(isinstance(ev, IkeSaRekeyed) for _, ev in net.events[ip])
        assert pair.live(ip).spi_i != old_a.spi_i
    rekeys = [s.time for s in net.log if decode_header(s.data).exchange == ExchangeType.CREATE_CHILD_SA]
    assert len(rekeys) == 4 and rekeys[:2] == [start, start] and rekeys[2] >= start + 2  # refused, then again
    exchanges = [decode_header(s.data).exchange for s in net.log]
    assert exchanges.count(ExchangeType.INFORMATIONAL) == 4  # DELETE child and DELETE IKE, each answered


def test_queued_rekey_of_a_child_the_peer_rekeyed_is_dropped() -> None:
    """Our rekey of a child waits behind another exchange while the peer rekeys the same child."""
    pair = established()
    sa_a, sa_b = pair.live(A), pair.live(B)
    sa_a.send_liveness()  # holds A's window of one
    sa_a.rekey_child(sa_a.children[0].unique_id)  # queued behind it
    sa_b.rekey_child(sa_b.children[0].unique_id)
    pair.net.run()
    check(pair, ("rekey_child", "rekey_child"))  # exactly one Child SA, the same on both sides
    exchanges = [decode_header(s.data).exchange for s in pair.net.log]
    assert exchanges.count(ExchangeType.CREATE_CHILD_SA) == 2  # B's rekey and its answer; A's was dropped
