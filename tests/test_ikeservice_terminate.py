"""``tunsec terminate --child NAME [--ike CONN]`` (swanctl --terminate --child): through the
daemon's control command into a real IkeService (the gateway of test_ikeservice_peers, with
the in-process worker), that Child SA goes with an INFORMATIONAL DELETE; its IKE SA stays."""

from __future__ import annotations

import json
from typing import Any

from test_ikeservice_peers import connected, run

from tunsec.conf.config import parse_config
from tunsec.daemon import Daemon
from tunsec.dataplane.pipe import Action
from tunsec.ike.events import ChildSaDown, DownReason, IkeSaDown
from tunsec.ike.sa import State

# the daemon's view of the configuration: both connections call their child "net"
CONF = """connections {
  gw { remote_addrs = %any
       local { auth = psk
               id = gw.example }
       remote { auth = psk }
       children { net { local_ts = 10.1.0.0/16
                        remote_ts = 10.2.0.0/16 } } }
  other { remote_addrs = 192.0.2.9
          local { auth = psk
                  id = gw.example }
          remote { auth = psk
                   id = other.example }
          children { net { local_ts = 10.1.0.0/16
                           remote_ts = 10.9.0.0/16 } } }
}
secrets { ike { secret = 0sZ2F0ZXdheS1zZWNyZXQtMTIzNDU2Nzg5MA== } }
"""


def test_terminate_child_deletes_the_child_and_keeps_the_ike_sa() -> None:
    async def body() -> None:
        gw = await connected(2)
        daemon = Daemon(parse_config(CONF, "swanctl.conf"))
        daemon.ike = gw.service

        async def command(req: dict[str, Any]) -> dict[str, Any]:
            return await daemon._command(json.dumps(req).encode())

        answer = await command({"cmd": "terminate", "child": "net"})
        assert answer == {"ok": False, "error": "child 'net' is in several connections (gw, other): "
                                                 "choose one with --ike"}
        await gw.settle()
        assert len(gw.children_of(0)) == len(gw.children_of(1)) == 1

        answer = await command({"cmd": "terminate", "child": "net", "ike": "gw"})
        assert answer == {"ok": True, "message": "deleting 2 CHILD_SA(s) net of gw"}
        await gw.settle()
        assert gw.children_of(0) == gw.children_of(1) == []
        assert [sa.state for sa in gw.service.endpoint.sas] == [State.ESTABLISHED] * 2
        for i in range(gw.n):
            assert gw.site_sa(i).children == []
            assert any(isinstance(e, ChildSaDown) for e in gw.site_events[i])
            assert not any(isinstance(e, IkeSaDown) for e in gw.site_events[i])
        # the worker keeps no SA but the larval pool, and no PROTECT policy
        assert all(sa.state == "larval" for sa in gw.worker.dp.sas())
        assert not [p for p in gw.worker.dp.policies() if p.action is Action.PROTECT]

        answer = await command({"cmd": "terminate", "child": "net", "ike": "gw"})
        assert answer == {"ok": False, "error": "no CHILD_SA 'net' of connection 'gw' is up"}
        # the IKE SA carries the next one
        gw.site_sa(0).initiate("net")
        await gw.settle()
        assert len(gw.children_of(0)) == 1
    run(body())


def test_events_of_a_call_made_straight_on_an_sa_are_handled_in_the_same_pump(caplog: Any) -> None:
    """The service calls some IkeSa methods directly (delete, delete_child, rekey_child,
    gateway_resolved); what they emit must be handled by the pump that follows the call, not
    be left queued until the next datagram or timer."""
    async def body() -> None:
        gw = await connected(1)
        (sa,) = gw.service.endpoint.sas
        assert sa.state is State.ESTABLISHED and gw.service.ike_up
        caplog.clear()
        with caplog.at_level("INFO", logger="tunsec"):
            sa.drop(DownReason.DELETED)   # emits ChildSaDown and IkeSaDown on the spot
            gw.service._pump()
        assert "gw: IKE SA closed" in caplog.text
        assert not gw.service.ike_up
        assert not gw.service.endpoint.has_events
    run(body())
