"""Review revradius F1: accounting's User-Name is the user's log-line form, not its name.

radius_edge._acct_start hands accounting ``str(ev.remote_id)``: Identity.__str__ is the form of a
log line, which for an EAP identity that is not ASCII ("jörg", "josé", "Müller") is its type and
hex ("2:#6ac3b67267").  The Access-Request said User-Name "jörg" (the bytes the client gave), the
Start and Stop of the same session say "2:#6ac3b67267": the server's accounting (usage per user,
Simultaneous-Use, sqlcounter quotas) never sees that user, and a DAC that copies the accounting
record's User-Name into a Disconnect-Request sends that made-up name back.  radius_edge._names then
matches it by ``str(named) == u``, so an account whose name *is* that text (an ASCII name anyone
may register where users pick their names) is the same user to a Disconnect-Request: the DAC
ending "2:#6ac3b67267"'s session also ends jörg's.

Through the IKE service's glue (radius_edge) against an accounting server on loopback (real UDP,
a port the kernel picks), as tests/radius/test_radius_accounting_vip.py."""
from __future__ import annotations

import asyncio
import ipaddress
import types
from typing import Any

from test_radius_accounting import AcctServer, Worker, serve, until
from test_radius_accounting_vip import FakeSa, up
from test_radius_messages import SECRET

from tunsec.conf.config import parse_config
from tunsec.dataplane.pipe import Endpoint
from tunsec.ike.events import Accepted, DownReason
from tunsec.ike.identity import Identity
from tunsec.services.ike import radius_edge

JORG = "jörg"


def _accounted(user: str) -> AcctServer:
    """The Start and Stop of one eap-radius IKE SA of ``user``, as the accounting server got them."""
    async def main() -> AcctServer:
        server, port = await serve("answer")
        radius = parse_config(f'radius {{\n servers {{ r0 {{ address = 127.0.0.1\n secret = "{SECRET.decode()}"\n'
                              f' acct_port = {port} }} }}\n accounting = yes\n}}\n', "tunsec.conf").radius
        assert radius is not None
        conn = types.SimpleNamespace(ike=types.SimpleNamespace(remote=types.SimpleNamespace(method="eap-radius")))
        worker = Worker()
        svc: Any = types.SimpleNamespace(
            accounting=None, acct_retiring=set(), acct_accepted={}, session_limits={}, local_addrs={4: "192.0.2.1"},
            closing=False, radius=types.SimpleNamespace(take_accepted=lambda key: Accepted()),
            connections={"rw": conn}, _acct_dump=worker.dump, _acct_children=worker.children, _ike_handles={},
            _ike_handle=lambda sa: 1,
            _endpoint=lambda version, port: Endpoint(ipaddress.ip_address("0.0.0.0"), port))
        radius_edge._acct_configure(svc, radius)
        radius_edge._acct_open(svc)
        sa: Any = FakeSa(b"A" * 8)   # what the glue reads of an IKE SA
        svc._ike_handles[sa] = 1
        radius_edge._acct_start(svc, sa, up(user, "10.3.0.1"))
        radius_edge._acct_stop(svc, sa, DownReason.DELETED_BY_PEER)
        await until(lambda: len(server.of("Stop")) == 1)
        svc.accounting.close()
        server.transport.close()
        return server

    return asyncio.run(main())


def test_accounting_names_a_user_whose_name_is_not_ascii_by_that_name() -> None:
    server = _accounted(JORG)
    # main: both say '2:#6ac3b67267' (Identity.__str__'s hex form), a user the server never authenticated
    assert [r["User-Name"] for r in (*server.of("Start"), *server.of("Stop"))] == [JORG, JORG]


def test_a_disconnect_for_the_user_named_like_jorgs_log_form_leaves_jorg_connected() -> None:
    jorg = Identity.of_user(JORG.encode())
    assert radius_edge._names(jorg, [JORG])   # his own name closes his session
    # main: True; an ASCII account literally named '2:#6ac3b67267' is not jörg
    assert not radius_edge._names(jorg, [str(jorg)])
