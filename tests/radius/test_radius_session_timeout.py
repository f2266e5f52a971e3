"""An Access-Accept's Session-Timeout (RFC 2865 §5.27) limits the IKE SA eap-radius authenticated:
the gateway deletes it when the time runs out (the client is told), its accounting Stop says
Session-Timeout (5), and an IKE rekey before then does not start the time again.

The gateway of test_reload_ike (a real IkeService read from a config file, the worker's logic
in-process, an EAP-MSCHAPv2 client as an IKE engine wired to it in memory) with ``auth =
eap-radius``, against a RADIUS server on loopback (real UDP, ports the kernel picks) that runs
EAP-MSCHAPv2 with the engine's own authenticator (standing in for FreeRADIUS) and an accounting
server. The service's timers run on the event loop's clock, which here stands still unless the
test moves it (FrozenLoop): the limit fires exactly when it is due, however loaded the machine."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pyrad import packet as rp
from test_ikeservice_peers import GW, Gateway
from test_radius_accounting import AcctServer
from test_radius_messages import SECRET, mppe_encrypt, reply, vsa
from test_reload_ike_eap import USERS, client, write_credentials

from tunsec.conf.config import load_config
from tunsec.ike.eap.mschapv2 import EapAuthenticator
from tunsec.ike.events import DownReason, IkeSaDown
from tunsec.ike.sa import State
from tunsec.radius.messages import ACCESS_ACCEPT, ACCESS_CHALLENGE, ACCESS_REJECT, DICTIONARY, split_eap
from tunsec.runtime import resolved
from tunsec.services.ike import IkeService
from tunsec.services.ike.radius_edge import MIN_SESSION_TIMEOUT

T = TypeVar("T")

TIMEOUT = 60


class FrozenLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock moves only when the test moves it (``now``)."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0

    def time(self) -> float:
        return self.now


def run_frozen(main: Callable[[FrozenLoop], Awaitable[T]], hang: float = 120.0) -> T:
    """``main`` on a FrozenLoop; cancelled after ``hang`` seconds of real time (a wait for a timer
    that is never due would otherwise never end)."""
    loop = FrozenLoop()

    async def guarded() -> T:
        task = asyncio.current_task()
        assert task is not None
        watchdog = threading.Timer(hang, loop.call_soon_threadsafe, (task.cancel,))
        watchdog.start()
        try:
            return await main(loop)
        finally:
            watchdog.cancel()

    with asyncio.Runner(loop_factory=lambda: loop) as runner:
        return runner.run(guarded())


class MschapRadius(asyncio.DatagramProtocol):
    """Access-Requests: EAP-MSCHAPv2 for USERS, an Access-Accept with the MPPE keys and ``timeout``."""

    def __init__(self, timeout: int) -> None:
        self.timeout = timeout
        self.conversations: dict[bytes, EapAuthenticator] = {}
        self.states = itertools.count(1)
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        req = rp.AuthPacket(packet=data, secret=SECRET, dict=DICTIONARY)
        eap = b"".join(req.get(79, []))
        state = (req.get(24) or [b""])[0]
        server = self.conversations.pop(state, None)
        if server is None:   # the client's EAP-Identity response: MSCHAPv2 for that user
            server = EapAuthenticator(lambda u: USERS.get(u.decode()), req.get(1)[0])
            self._challenge(server, server.start(), data, addr)
            return
        out, result = server.process(eap)
        if result is None:
            self._challenge(server, out, data, addr)
        elif not result.ok:
            self.transport.sendto(reply(ACCESS_REJECT, data, [(79, out)]), addr)
        else:
            msk, auth = result.msk[:32], data[4:20]
            attrs = [*((79, p) for p in split_eap(out)),
                     (26, vsa(311, 17, mppe_encrypt(msk[:16], SECRET, auth, b"\x80\x01"))),
                     (26, vsa(311, 16, mppe_encrypt(msk[16:], SECRET, auth, b"\x80\x02"))),
                     (27, self.timeout.to_bytes(4, "big"))]
            self.transport.sendto(reply(ACCESS_ACCEPT, data, attrs), addr)

    def _challenge(self, server: EapAuthenticator, out: bytes, data: bytes, addr: Any) -> None:
        state = b"s%d" % next(self.states)
        self.conversations[state] = server
        self.transport.sendto(reply(ACCESS_CHALLENGE, data, [*((79, p) for p in split_eap(out)), (24, state)]),
                              addr)


def conf(auth_port: int, acct_port: int) -> str:
    return ("tunsec { control_socket = /nonexistent/tunsec.sock }\n"
            "connections {\n  rw { local_addrs = " + GW + "\n remote_addrs = %any\n"
            "  local { auth = pubkey\n id = gw.example\n certs = gw.pem }\n"
            "  remote { auth = eap-radius\n eap_id = %any }\n"
            "  children { net { local_ts = 10.1.0.0/16\n remote_ts = 10.2.0.0/16\n"
            "  esp_proposals = aes128gcm16 } } }\n}\n"
            "radius {\n servers { r0 { address = 127.0.0.1\n secret = \"" + SECRET.decode() + "\"\n"
            f" auth_port = {auth_port}\n acct_port = {acct_port} }} }}\n"
            " retransmit_timeout = 5\n accounting = yes\n}\n")


class RadiusGateway(Gateway):
    path: Path

    async def start(self) -> None:
        await super().start()
        cfg = resolved(load_config(self.path))
        old = self.service
        self.service = IkeService(cfg.connections, lambda: self.worker, {4: GW}, old.ids,  # type: ignore[arg-type,return-value]
                                  radius=cfg.radius)
        await self.service.start()
        self.service.sockets.by_key = old.sockets.by_key
        self.sites = [client(0, USERS["u0"])]


async def udp(loop: asyncio.AbstractEventLoop, proto: Any) -> int:
    transport, _ = await loop.create_datagram_endpoint(lambda: proto, local_addr=("127.0.0.1", 0))
    port: int = transport.get_extra_info("sockname")[1]
    return port


def downs(gw: Gateway) -> list[DownReason]:
    return [e.reason for e in gw.site_events[0] if isinstance(e, IkeSaDown)]


@pytest.mark.parametrize(("sent", "rekey", "lasts"), [(TIMEOUT, False, TIMEOUT), (TIMEOUT, True, TIMEOUT),
                                                      (1, False, MIN_SESSION_TIMEOUT)])
def test_the_ike_sa_is_deleted_when_its_session_timeout_runs_out_and_a_rekey_does_not_reset_it(
        tmp_path: Path, sent: int, rekey: bool, lasts: int) -> None:
    """``sent``: the Accept's Session-Timeout; ``lasts``: how long the IKE SA lasts (at least
    MIN_SESSION_TIMEOUT); ``rekey``: the client rekeys the IKE SA halfway."""
    async def main(loop: FrozenLoop) -> AcctServer:
        radius, acct = MschapRadius(sent), AcctServer("answer")
        auth_port, acct_port = await udp(loop, radius), await udp(loop, acct)
        write_credentials(tmp_path)
        gw = RadiusGateway(1)
        gw.path = tmp_path / "swanctl.conf"
        gw.path.write_text(conf(auth_port, acct_port))
        await gw.start()
        armed = loop.now
        gw.connect(0)
        await gw.settle()
        first = gw.site_sa(0)
        assert first.state is State.ESTABLISHED
        if rekey:
            loop.now = armed + lasts / 2
            first.rekey()
            await gw.settle()
            assert gw.site_sa(0) is not first   # a new IKE SA, the same session
        loop.now = armed + lasts - 0.5
        await gw.settle()
        assert downs(gw) == [] and gw.site_sa(0).state is State.ESTABLISHED
        loop.now = armed + lasts
        await gw.settle()
        assert downs(gw) == [DownReason.DELETED_BY_PEER]   # the gateway deleted it, and told the client
        assert not gw.service.session_limits   # nothing left behind
        for _ in range(200):   # the Stop goes out through the loop; it answers at once
            if acct.of("Stop"):
                break
            await asyncio.sleep(0)
            await gw.settle()
        gw.service.sockets.by_key = {}   # the fake IKE socket: nothing to close
        gw.service.close()
        radius.transport.close()
        acct.transport.close()
        return acct

    acct = run_frozen(main)
    (start,), (stop,) = acct.of("Start"), acct.of("Stop")
    assert start["User-Name"] == stop["User-Name"] == "u0"
    assert stop["Acct-Terminate-Cause"] == 5   # Session-Timeout
