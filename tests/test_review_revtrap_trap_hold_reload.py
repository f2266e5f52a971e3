"""Review revtrap F4: a reload that fixes a trap connection's credentials leaves its hold-down.

The trap's initiation fails because the two sides' PSKs differ (AUTHENTICATION_FAILED); the
administrator corrects the PSK and reloads.  A change of credentials only keeps the connection (its
SAs, reload.py ``creds``: "negotiates anew with the new ones"), so it is not in the ``gone`` set whose
holds traps._forget_traps drops (trap_hold.TrapHolds.forget): the hold of the failures with the old key
stays, up to HOLD_MAX (165 s) after eight of them, and the LAN's packets start nothing with the new
key until it ends.  A replaced connection starts afresh (trap_hold.py's docstring); one whose key was
the cause of every failure should too (``tunsec initiate`` is the only way around meanwhile).

The pair of test_ikeservice_traps.py (two real IkeServices, in-process workers with the real C fast
path), B with another PSK; the hold-down's clock faked (never moves).
"""

from __future__ import annotations

import asyncio
import dataclasses

from test_ikeservice_trap_hold import Clock
from test_ikeservice_traps import TrapPair
from test_review_revlan_trap_refused import ike_sa_init_requests

from tunsec.conf.config import Config
from tunsec.ike.config import IkeConfig
from tunsec.ike.secret import Secret

KEY = ("tun", "net")


class OtherKeyPair(TrapPair):
    """B's PSK differs from A's: A's IKE_AUTH fails (AUTHENTICATION_FAILED)."""

    def ike_config(self, side: str) -> IkeConfig:
        cfg = super().ike_config(side)
        other = Secret(b"B's other key, long enough to be accepted")
        return dataclasses.replace(cfg, psk=other) if side == "b" else cfg


def test_a_reload_that_changes_a_trap_connections_psk_ends_its_hold_down() -> None:
    async def body() -> None:
        pair = OtherKeyPair()
        await pair.start()
        await pair.configure("a", "trap")
        svc = pair.svc["a"]
        (pid,) = svc.trap_policies
        clock = Clock()
        svc.trap_holds.clock = clock
        svc.acquire(pid)                       # fails: the PSKs differ
        await pair.settle()
        svc.acquire(pid)                       # held down
        await pair.settle()
        assert svc.events.acquires_held[KEY] == 1 and ike_sa_init_requests(pair) == 1
        conn = svc.connections["tun"]
        b_key = pair.svc["b"].connections["tun"].ike.psk
        fixed = dataclasses.replace(conn, ike=dataclasses.replace(conn.ike, psk=b_key))   # only the key changes
        await svc.reload(Config(path="a.conf", connections=(fixed,)))
        await pair.settle()
        (pid,) = svc.trap_policies
        svc.acquire(pid)                       # the first packet after the fix
        await pair.settle()
        assert ike_sa_init_requests(pair) == 2, \
            f"the new key is not tried: held ({svc.events.acquires_held[KEY]}) by the old key's failure"
        assert svc.child_index.has(*KEY)

    asyncio.run(body())
