"""accounting_requires_vip (strongSwan's, default no), read from the config, through the IKE
service's glue (radius_edge) against an accounting server on loopback (real UDP, a port the
kernel picks): an IKE SA that got no virtual IP gets no Start (and so no Stop), one that got
one does; with the key off both do."""
from __future__ import annotations

import asyncio
import ipaddress
import types
from dataclasses import dataclass
from typing import Any

import pytest
from test_radius_accounting import AcctServer, Worker, serve, until
from test_radius_messages import SECRET

from tunsec.conf.config import parse_config
from tunsec.dataplane.pipe import Endpoint
from tunsec.ike.events import DownReason, IkeSaUp
from tunsec.ike.identity import Identity
from tunsec.services.ike import radius_edge


@dataclass(frozen=True)
class FakeSa:
    """What the glue reads of an IKE SA (hashable: the service keys its handles by it)."""

    local_spi: bytes
    is_closed: bool = False


def up(user: str, vip: str | None) -> IkeSaUp:
    vips = (ipaddress.ip_address(vip),) if vip else ()
    return IkeSaUp("rw", b"i" * 8, b"r" * 8, Identity.parse("gw"), Identity.parse(user), ("198.51.100.7", 4500),
                   4500, "", peer_vips=vips)


@pytest.mark.parametrize("requires_vip", ["yes", "no"])
def test_only_ike_sas_with_a_virtual_ip_are_accounted_when_required(requires_vip: str) -> None:
    async def main() -> AcctServer:
        server, port = await serve("answer")
        radius = parse_config(f'radius {{\n servers {{ r0 {{ address = 127.0.0.1\n secret = "{SECRET.decode()}"\n'
                              f' acct_port = {port} }} }}\n accounting = yes\n'
                              f' accounting_requires_vip = {requires_vip}\n}}\n', "tunsec.conf").radius
        assert radius is not None
        sas = {b"A" * 8: ("with@example.org", "10.3.0.1"), b"B" * 8: ("without@example.org", None)}
        handles = {spi: n for n, spi in enumerate(sas, 1)}
        conn = types.SimpleNamespace(ike=types.SimpleNamespace(remote=types.SimpleNamespace(method="eap-radius")))
        worker = Worker()
        svc: Any = types.SimpleNamespace(
            accounting=None, acct_retiring=set(), session_limits={}, local_addrs={4: "192.0.2.1"},
            closing=False, connections={"rw": conn},
            _acct_dump=worker.dump, _acct_children=worker.children, _ike_handles={},
            _ike_handle=lambda sa: handles[sa.local_spi],
            _endpoint=lambda version, port: Endpoint(ipaddress.ip_address("0.0.0.0"), port))
        radius_edge._acct_configure(svc, radius)
        radius_edge._acct_open(svc)
        fakes = {spi: FakeSa(spi) for spi in sas}
        for spi, (user, vip) in sas.items():
            svc._ike_handles[fakes[spi]] = handles[spi]
            radius_edge._acct_start(svc, fakes[spi], up(user, vip))
        for spi in sas:
            radius_edge._acct_stop(svc, fakes[spi], DownReason.DELETED_BY_PEER)
        await until(lambda: len(server.of("Stop")) == (1 if requires_vip == "yes" else 2))
        await asyncio.sleep(0.1)   # nothing more comes
        svc.accounting.close()
        server.transport.close()
        return server

    server = asyncio.run(main())
    started = sorted(r["User-Name"] for r in server.of("Start"))
    stopped = sorted(r["User-Name"] for r in server.of("Stop"))
    expected = ["with@example.org"] if requires_vip == "yes" else ["with@example.org", "without@example.org"]
    assert started == stopped == expected
