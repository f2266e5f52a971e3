"""Review revworker F2: the IKE service acts on EXPIREs for limits it never installed.

The IKE service installs a Child SA's soft limits in bytes and packets only, and only when the child
has ``rekey_bytes`` / ``rekey_packets`` (conf/children.py soft_limits: seconds are the engine's own
timer); by default it has neither, so the worker holds no soft limit at all and a soft EXPIRE cannot
be true.  installs.expired takes any soft EXPIRE as "rekey now" (a CREATE_CHILD_SA with the peer, a
key exchange on each side, an install, an INFO line) and any hard one as "delete the Child SA" (a
DELETE to the peer), whatever its reason.  A worker taken over so makes the control process renegotiate
every Child SA of every peer without pause: each rekey's new outbound SA is in the worker, which
names it in the next forged EXPIRE.  ManualService refuses the same lies for its SAs
(_impossible_expiry: a limit not configured); the IKE service has no such check.

A real IkeService over the in-process worker (the C fast path's SAD), a real IKE engine as the peer
(test_ikeservice_peers.connected); the forged EXPIREs go through IkeService.on_event as the pipe
reader hands them over.
"""

from __future__ import annotations

import ipaddress

from test_ikeservice_peers import connected, run, site_ip

from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Direction, Endpoint, ExpireReason
from tunsec.ike.events import ChildSaUp

ROUNDS = 10


def test_soft_expires_for_a_byte_limit_never_installed_rekey_nothing() -> None:
    """Fails on main: ten forged soft EXPIREs (reason BYTES; the child has no rekey_bytes, and the
    worker was given soft limits of 0) are ten rekeys with the peer, one after the other."""
    async def body() -> None:
        gw = await connected(1)
        (child,) = gw.children_of(0)
        spec = gw.service.connections["gw"].child("net")
        assert (spec.rekey_bytes, spec.rekey_packets, spec.soft_limits()) == (0, 0, (0, 0, 0))
        peer = Endpoint(ipaddress.ip_address(site_ip(0)), 4500)
        ups_before = sum(isinstance(e, ChildSaUp) for e in gw.site_events[0])
        for _ in range(ROUNDS):
            (newest,) = [c for c in gw.children_of(0) if c.handle == max(c.handle for c in gw.children_of(0))]
            gw.service.on_event(pipe.Expire(spi=newest.spi_out, direction=Direction.OUT, hard=False,
                                            reason=ExpireReason.BYTES, remote=peer))
            await gw.settle()
        rekeys = sum(isinstance(e, ChildSaUp) for e in gw.site_events[0]) - ups_before
        (after,) = gw.children_of(0)
        assert rekeys == 0 and after.handle == child.handle, \
            f"{rekeys} rekeys with the peer for {ROUNDS} soft EXPIREs of a limit the worker was never given"

    run(body())


def test_a_hard_expire_for_a_packet_limit_never_installed_deletes_nothing() -> None:
    """Fails on main: a forged hard EXPIRE (reason PACKETS; life_packets is 0) deletes the Child SA with
    the peer (a DELETE goes out; the worker still holds the SA, as it removes an SA before a true one)."""
    async def body() -> None:
        gw = await connected(1)
        (child,) = gw.children_of(0)
        assert gw.service.connections["gw"].child("net").hard_limits()[1] == 0   # life_packets
        peer = Endpoint(ipaddress.ip_address(site_ip(0)), 4500)
        gw.service.on_event(pipe.Expire(spi=child.spi_out, direction=Direction.OUT, hard=True,
                                        reason=ExpireReason.PACKETS, remote=peer))
        await gw.settle()
        assert [c.handle for c in gw.children_of(0)] == [child.handle], "the Child SA was deleted"

    run(body())
