"""Review revworker2 F2: an IKE SA opened through the worker vouches for IPv6 prefixes in the port-500 ban.

h/fixworker (review revworker F1) keeps what comes through the worker (port 4500, source address as the
worker claims it) out of the main AuthBan: such an IKE SA's failures count in a ban of its own
(worker_path.py).  Its success does not: IkeService._event's IkeSaUp calls the MAIN ban's succeeded()
for every responder IKE SA, through the worker or not, and succeeded() vouches for the source's wider
IPv6 prefixes (/56, /48) for VOUCHED_SECONDS (a day): meanwhile their parts' failures ban only the
/64 itself, never the prefix (review revban2 F1).  A worker taken over, with any one credential that
authenticates (its owner's own road-warrior account), so names any /48 it likes as "someone's shared
one", and an attacker rotating over that /48's /64s brute-forces port 500 -- the control process's own
socket, the kernel's view of the source -- without the /48 ever being banned (16 x auth_failures
failures of its /64s), for a day, renewed each day.

The gateway is a real IkeService over the in-process worker (test_ikeservice_peers.Gateway); the
taken-over worker is a real IKE engine with the right PSK whose every datagram goes up as a pipe IKE
event claiming an address of the attacker's /48, and which gets what the gateway sends there through
SEND_IKE (as tests/test_worker_forged_auth_ban.py).  The brute force on port 500 is the main ban's
failed() per failure, as IkeService counts each one seen on its own sockets.
"""

from __future__ import annotations

import time

from test_ikeservice_peers import Gateway, run
from test_worker_forged_auth_ban import site_cfg, through_worker

from tunsec.ike.auth_ban import AuthBan
from tunsec.ike.events import IkeSaUp

PREFIX = "2001:db8:77::"    # the attacker's /48
CLAIMED = "2001:db8:77:1::1"   # the address the worker claims for its one successful IKE SA


async def _forge_success(gw: Gateway, claimed: str) -> None:
    """One IKE_SA_INIT + IKE_AUTH with the right PSK, as the worker hands it up from ``claimed``."""
    await through_worker(gw, site_cfg(0), claimed, IkeSaUp)


def _rotating_brute_force(gw: Gateway, ban: AuthBan | None = None) -> list[str]:
    """Failed authentications seen on port 500 from addresses in PREFIX's /48, each in a /64 and a /56
    of its own (each stays under its threshold), 16 x auth_failures and more in all; the bans after."""
    ban, now = gw.service.auth_ban if ban is None else ban, time.monotonic()
    per64 = ban.settings.max - 1
    for i in range(2 * 16 * ban.settings.max // per64 + 1):
        for _ in range(per64):
            ban.failed(f"2001:db8:77:{(i + 1) << 8:x}::5", now)
    return [b.source for b in ban.bans(now)]


def test_a_success_through_the_worker_does_not_vouch_for_a_prefix_in_the_port_500_ban() -> None:
    """Fails on main: after the worker claimed one authenticated IKE SA from the /48, the port-500 brute
    force rotating over its /64s bans nothing (the /48 vouched for a day); without it the /48 is banned."""
    async def go() -> None:
        gw = Gateway(1)
        await gw.start()
        await _forge_success(gw, CLAIMED)
        bans = _rotating_brute_force(gw)
        assert any(b.startswith(PREFIX) and b.endswith("/48") for b in bans), \
            f"no /48 ban for the rotating brute force on port 500 (bans: {bans}); vouched: " \
            f"{list(gw.service.auth_ban._vouched)}"

    run(go())


def test_a_success_through_the_worker_vouches_for_its_prefix_on_the_worker_path() -> None:
    """Fails on main, the other side of the same line: the worker-path ban's succeeded() is never
    called, so a carrier's /48 whose clients start on port 4500 (remote_port = 4500) is never vouched
    for there (review revban2 F1's protection): after a client of it authenticated through the worker,
    one attacker rotating over the /48's /64s through the worker still gets the whole /48 banned on
    that path, the client who just authenticated included."""
    async def go() -> None:
        gw = Gateway(1)
        await gw.start()
        await _forge_success(gw, CLAIMED)   # here a genuine client of the carrier's, through 4500
        path = gw.service.worker_path.counting()
        bans = _rotating_brute_force(gw, path)
        assert not any(b.endswith("/48") or b.endswith("/56") for b in bans), \
            f"the carrier's wider prefix banned on the worker path after its client authenticated there: {bans}"
        assert path.refuses(_init_request(), CLAIMED, time.monotonic()) is False

    run(go())


def _init_request() -> bytes:
    """An IKE_SA_INIT request's header (what AuthBan.refuses looks at)."""
    return bytes(16) + bytes([0x21, 0x20, 34, 0x08]) + bytes(8)


def test_guard_the_rotating_brute_force_bans_the_48() -> None:
    """The harness's own check (passes on main): with nothing claimed through the worker, the same
    brute force on port 500 bans the /48."""
    async def go() -> None:
        gw = Gateway(1)
        await gw.start()
        bans = _rotating_brute_force(gw)
        assert any(b.startswith(PREFIX) and b.endswith("/48") for b in bans), bans

    run(go())
