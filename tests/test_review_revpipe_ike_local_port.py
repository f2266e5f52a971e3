"""Review revpipe F3: the worker picks the port the control process answers its IKE from.

An IKE event's ADDR_LOCAL carries "the address the packet arrived on ... with the socket's port"
(docs/pipe.md): the worker's own port-4500 sockets, always NATT_PORT for IKE (IkeService.esp_endpoints).
IkeService.receive_natt passes the port the worker names to the engine as the port the request came in
on, and the engine's answer leaves from that port (endpoint._send_stateless, the IKE SA's local
address): IkeSockets.send takes the control process's own socket of that port, or, for a port it has
none of, logs a WARNING for every datagram ("no IPv4 IKE socket on port N to send to ADDRESS"), not
rate-limited (its _send_log limiter is used on the SEND_IKE path only).  So a worker taken over:

- writes a line in tunsec's own voice (logger tunsec.ike, process tunsec: not its stderr's 1000 lines in
  10 s, not marked as the worker's) for every IKE_SA_INIT it hands up, answered or COOKIEd, as fast as
  the pipe takes them: the flood review revworker F3 bounded for unowned events (under systemd,
  journald's rate limit then drops tunsec's own lines, the AUTHENTICATION_FAILED ones fail2ban reads
  among them);
- makes the control process's port-500 socket answer (IKE_SA_INIT responses, COOKIEs) to any address
  it names, a socket it otherwise never reaches; the IKE SA opened so keeps port 500 as its own.

The harness of test_ikeservice_peers.py (a real IkeService; its port-500 socket a recorder); the
IKE_SA_INIT is a real initiator's, handed in as the worker's event through the pipe's encoding, from
rotating forged sources (what the worker may claim), naming local port 12345 or 500.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging

import pytest
from test_ikeservice_peers import GW, Gateway, _now, run

from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Endpoint
from tunsec.loglimit import LogLimiter

EVENTS = 200


def _event(init: bytes, i: int, local_port: int) -> pipe.Ike:
    source = Endpoint(ipaddress.ip_address(f"198.51.{100 + i // 250}.{i % 250 + 1}"), 4500)
    ike = pipe.decode(pipe.encode(pipe.Ike(data=init, remote=source,
                                           local=Endpoint(ipaddress.ip_address(GW), local_port))))
    assert isinstance(ike, pipe.Ike)
    return ike


def test_ike_through_the_worker_naming_another_local_port_writes_no_line_per_datagram(
        caplog: pytest.LogCaptureFixture) -> None:
    """Fails on main: 200 IKE_SA_INITs the worker says came in on port 12345 give 200 WARNING lines."""
    async def go() -> None:
        gw = Gateway(1)
        await gw.start()
        gw.connect(0)
        init = gw.sites[0].datagrams_to_send(_now())[0].data
        gw.wire.clear()
        with caplog.at_level(logging.WARNING, logger="tunsec"):
            for i in range(EVENTS):
                gw.service.receive_natt(_event(init, i, 12345))
            for _ in range(5):
                await asyncio.sleep(0)

    run(go())
    lines = [r for r in caplog.records if "IKE socket on port 12345" in r.getMessage()]
    assert len(lines) <= LogLimiter.burst, f"{len(lines)} lines for {EVENTS} datagrams of the worker's"


def test_ike_through_the_worker_is_never_answered_from_the_control_processs_own_socket() -> None:
    """Fails on main: IKE_SA_INITs the worker says came in on port 500 are answered from the control
    process's port-500 socket, to whatever sources the worker named."""
    async def go() -> list[tuple[tuple[str, int], tuple[str, int], bytes]]:
        gw = Gateway(1)
        await gw.start()
        gw.connect(0)
        init = gw.sites[0].datagrams_to_send(_now())[0].data
        gw.wire.clear()
        for i in range(EVENTS):
            gw.service.receive_natt(_event(init, i, 500))
        for _ in range(5):
            await asyncio.sleep(0)
        return list(gw.wire)

    wire = run(go())
    own = [(src, dst) for src, dst, _ in wire if src == (GW, 500)]
    assert not own, f"{len(own)} answers left the control process's port-500 socket, e.g. to {own[0][1]}"
