"""Review revworker F1: a worker taken over bans an innocent address, on the control process's own port 500.

The worker reads every IKE datagram on port 4500 and hands it up with the source address it claims
(pipe IKE event: ADDR_REMOTE); the control process's answers to such a source leave through the worker
again (SEND_IKE).  So a worker taken over is a complete IKE initiator "at" any address it names: it
sees the responder's SPI and key exchange of its own IKE_SA_INIT and can finish an IKE_AUTH with a
wrong PSK.  ike/auth_ban.py counts that failure against the address the worker named (its docstring:
"a spoofer who cannot read the victim's traffic cannot fail an authentication in its name"; the
worker reads the answers), and after ``auth_failures`` of them the address's IKE_SA_INIT requests
are dropped -- on port 500 too, which the control process reads from its own socket and the worker
never sees.  Each failure is also an AUTHENTICATION_FAILED line naming that address in the form the
shipped fail2ban filter matches (fail2ban, as root, then blocks UDP 500 and 4500 from it at the
firewall for an hour): the worker's own stderr has AUTHENTICATION_FAILED defused
(stderr_relay.py) precisely so that it cannot do this, and here the control process writes the
line for it.  Both outlive the worker (a restart does not lift a ban, nor fail2ban's).

The gateway is a real IkeService over the in-process worker (test_ikeservice_peers.Gateway), the
attacker a real IKE engine whose every datagram goes up as a pipe IKE event claiming the victim's
address, and which gets what the gateway sends there through SEND_IKE; the victim is a real IKE
engine with the right PSK that then connects to port 500.  The log goes through tunsec.logs as
`tunsec up` configures it and is read with fail2ban's own fail2ban-regex and the shipped filter.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import ipaddress
import time
from pathlib import Path
from typing import TypeVar

from f2b import fail2ban_regex
from test_ikeservice_peers import GW, Gateway, psk_ike, run, site_ip, site_net

from tunsec import logs
from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Endpoint
from tunsec.ike.config import IkeConfig, RemoteAuth
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import AuthFailed, IkeSaUp
from tunsec.ike.identity import Identity
from tunsec.ike.secret import Secret

T = TypeVar("T")
WRONG = Secret(b"not the shared secret at all")


async def through_worker(gw: Gateway, cfg: IkeConfig, claimed: str, wanted: type[T]) -> T:
    """One IKE_SA_INIT + IKE_AUTH of ``cfg``, every datagram handed up as the worker would hand up one
    from ``claimed`` port 4500, the answers to ``claimed`` taken from the worker's SEND_IKEs: the
    first event of type ``wanted`` the initiator sees."""
    peer = IkeEndpoint([cfg])
    peer.initiate(cfg.name, "net", time.monotonic())
    src = Endpoint(ipaddress.ip_address(claimed), 4500)
    for _ in range(50):
        for d in peer.datagrams_to_send(time.monotonic()):
            gw.service.receive_natt(pipe.Ike(data=d.data, remote=src))
        for _ in range(5):
            await asyncio.sleep(0)
        if gw.service._tasks or gw.service.sockets.natt_sends:
            await asyncio.wait([*gw.service._tasks, *gw.service.sockets.natt_sends])
        for s, dst, data in [w for w in gw.wire if w[1][0] == claimed]:
            gw.wire.remove((s, dst, data))
            peer.receive(data, s, time.monotonic(), (claimed, 4500))
        while (ev := peer.next_event()) is not None:
            if isinstance(ev[1], wanted):
                return ev[1]
    raise AssertionError(f"the exchange through the worker never gave {wanted.__name__}")


async def _forge_failure(gw: Gateway, victim: str) -> None:
    """One IKE_SA_INIT + IKE_AUTH with a wrong PSK, as the worker would hand it up from ``victim``."""
    failed = await through_worker(gw, dataclasses.replace(site_cfg(0), psk=WRONG), victim, AuthFailed)
    assert failed.by_peer   # the gateway refused the (wrong) PSK: counted as the victim's failure


def site_cfg(i: int) -> IkeConfig:
    """Site i's IKE configuration as test_ikeservice_peers.Gateway gives it (the victim's, right PSK)."""
    cfg = psk_ike(f"site{i}", f"site{i}.example", RemoteAuth("psk", Identity.parse("gw.example")), site_ip(i), GW,
                  site_net(i), "10.1.0.0/16")
    return dataclasses.replace(cfg, force_encap=True)


async def _victim_connects(gw: Gateway, tmp_path: Path, out: io.StringIO) -> tuple[bool, list[str]]:
    """The victim (site 0, right PSK) connects as usual: IKE_SA_INIT to port 500, which the control
    process reads from its own socket (the worker never sees it, nor its answer).  Whether its IKE SA
    came up, and the addresses fail2ban's shipped filter matches in the log so far."""
    gw.wire.clear()
    gw.connect(0)
    await gw.settle()
    log = tmp_path / "tunsec.log"
    log.write_text(out.getvalue())
    return any(isinstance(e, IkeSaUp) for e in gw.site_events[0]), fail2ban_regex(log)


def test_a_worker_taken_over_cannot_ban_an_innocent_address_from_port_500(tmp_path: Path, root_logger: None) -> None:
    """Fails on main: after auth_failures (10) forged failures the victim's port-500 IKE_SA_INIT is
    dropped (banned) and the log holds 11 lines fail2ban's filter takes for the victim's failures."""
    out = io.StringIO()
    logs.configure("info", fmt="text", stream=out)

    async def go() -> None:
        gw = Gateway(1)
        await gw.start()
        victim = site_ip(0)
        for _ in range(gw.service.auth_ban.settings.max):   # auth_failures (default 10)
            await _forge_failure(gw, victim)
        up, matched = await _victim_connects(gw, tmp_path, out)
        assert up and victim not in matched, (
            f"victim's IKE SA up: {up} (IKE_SA_INITs dropped as banned: {gw.service.endpoint.stats.auth_banned}); "
            f"bans in force: {[b.source for b in gw.service.auth_ban.bans(time.monotonic())]}; "
            f"fail2ban's filter matched the victim's address {matched.count(victim)} times")

    run(go())


def test_guard_the_victim_connects_when_nothing_was_forged(tmp_path: Path, root_logger: None) -> None:
    """The harness's own check (passes on main): without the forged failures the victim comes up and
    the log names it nowhere fail2ban would match."""
    out = io.StringIO()
    logs.configure("info", fmt="text", stream=out)

    async def go() -> None:
        gw = Gateway(1)
        await gw.start()
        up, matched = await _victim_connects(gw, tmp_path, out)
        assert up and not matched

    run(go())
