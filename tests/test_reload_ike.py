"""``tunsec reload`` with IKE connections, through the daemon's control command into a real
IkeService (the gateway of test_ikeservice_peers: the worker's logic and C fast path in-process,
the peers IKE engines wired to it in memory).

A reload applies the difference as swanctl --load-all: a removed connection's IKE SA is deleted
(the peer gets the DELETE, the worker loses its SAs and policies), an added one starts, a changed
one is replaced, an untouched one keeps its SAs and carries traffic throughout; a broken file or a
change that needs a restart changes nothing."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from test_ikeservice_peers import GW, PSK, Gateway, assert_reaches_only_its_site, run, site_ip

from tunsec.conf.config import load_config
from tunsec.daemon import Daemon
from tunsec.dataplane.fastpath import Drop
from tunsec.ike.events import DownReason, IkeSaDown
from tunsec.ike.sa import State
from tunsec.runtime import resolved
from tunsec.services.ike import IkeService

SECRET = "0s" + base64.b64encode(PSK.reveal()).decode()


def conn(name: str, site: int, start: str = "none", extra: str = "") -> str:
    return f"""  {name} {{ local_addrs = {GW}
       remote_addrs = {site_ip(site)}
       {extra}
       local {{ auth = psk
               id = gw.example }}
       remote {{ auth = psk
                id = site{site}.example }}
       children {{ net {{ local_ts = 10.1.0.0/16
                        remote_ts = 10.2.{site + 1}.0/24
                        esp_proposals = aes128gcm16
                        start_action = {start} }} }} }}
"""


def conf(*conns: str, secret: str = SECRET, tunsec: str = "") -> str:
    return (f"tunsec {{ control_socket = /nonexistent/tunsec.sock\n{tunsec} }}\n"
            "connections {\n" + "".join(conns) + "}\n"
            f"secrets {{ ike {{ secret = {secret} }} }}\n")


class ConfiguredGateway(Gateway):
    """The gateway with the daemon's connections (read from a file) instead of the one `%any`."""

    path: Path
    daemon: Daemon

    async def start(self) -> None:
        await super().start()
        cfg = resolved(load_config(self.path))
        old = self.service
        self.service = IkeService(cfg.connections, lambda: self.worker, {4: GW}, old.ids)  # type: ignore[arg-type,return-value]
        await self.service.start()
        self.service.sockets.by_key = old.sockets.by_key
        self.daemon = Daemon(cfg)
        self.daemon.ike = self.service
        self.daemon.services = [self.daemon.manual, self.service]
        self.daemon.sockets.binds = {4: (GW, 4500)}

    async def reload(self, text: str) -> dict[str, Any]:
        self.path.write_text(text)
        answer = await self.daemon._command(json.dumps({"cmd": "reload"}).encode())
        await self.settle()
        return answer


def down_events(gw: Gateway, i: int) -> list[IkeSaDown]:
    return [e for e in gw.site_events[i] if isinstance(e, IkeSaDown)]


def test_reload_removes_adds_replaces_and_leaves_the_rest_alone(tmp_path: Path) -> None:
    async def body() -> None:
        gw = ConfiguredGateway(3)
        gw.path = tmp_path / "tunsec.conf"
        gw.path.write_text(conf(conn("keep", 0), conn("gone", 1)))
        await gw.start()
        gw.connect(0)
        gw.connect(1)
        await gw.settle()
        assert_reaches_only_its_site(gw, 0)
        assert_reaches_only_its_site(gw, 1)
        keep_sa, keep_children = gw.site_sa(0), [(c.spi_in, c.spi_out) for c in gw.children_of(0)]

        # remove gone, add new (start_action = start: it initiates to site 2), keep untouched
        answer = await gw.reload(conf(conn("keep", 0), conn("new", 2, "start")))
        assert answer == {"ok": True, "message": "IKE connections added: new\nIKE connections removed: gone"}
        assert [e.reason for e in down_events(gw, 1)] == [DownReason.DELETED_BY_PEER]   # site 1 was told
        assert gw.children_of(1) == []
        assert gw.send_to_site(1)[2] is not Drop.NONE    # no policy, no SA for site 1's network left
        assert_reaches_only_its_site(gw, 2)              # new is up
        assert down_events(gw, 0) == [] and gw.site_sa(0) is keep_sa and keep_sa.state is State.ESTABLISHED
        assert [(c.spi_in, c.spi_out) for c in gw.children_of(0)] == keep_children
        assert_reaches_only_its_site(gw, 0)
        assert set(gw.daemon.cfg.connections[i].name for i in range(2)) == {"keep", "new"}

        # a broken file: refused with file and line, nothing changes
        answer = await gw.reload(conf(conn("keep", 0), conn("new", 2, "start")) + "bogus {\n")
        assert answer["ok"] is False
        assert f"{gw.path}:" in answer["error"] and "nothing changed" in answer["error"]
        # a tunsec { } change needs a restart: refused as a whole (the connection change with it too)
        answer = await gw.reload(conf(conn("keep", 0), tunsec="workers = 3"))
        assert answer == {"ok": False, "error": f"{gw.path}: reload refused, nothing changed:\n"
                                                 "needs a restart: workers (tunsec { } settings cannot change "
                                                 "while tunsec runs)"}
        # IKE on another port would need a new socket (port 500 was bound with a privilege since given up)
        answer = await gw.reload(conf(conn("keep", 0, extra="local_port = 5000"), conn("new", 2, "start")))
        assert answer["ok"] is False and "needs a restart: connection keep: IKE on local_port 5000" in answer["error"]
        assert len(down_events(gw, 2)) == 0 and gw.children_of(2) and [c.spi_in for c in gw.children_of(0)] == [
            k[0] for k in keep_children]

        # a changed connection is replaced: its IKE SA deleted, a new one negotiated; keep still untouched
        old_site2 = gw.site_sa(2)
        answer = await gw.reload(conf(conn("keep", 0), conn("new", 2, "start", extra="rekey_time = 2h")))
        assert answer == {"ok": True, "message": "IKE connections replaced: new"}
        assert [e.reason for e in down_events(gw, 2)] == [DownReason.DELETED_BY_PEER]
        assert gw.site_sa(2) is not old_site2
        assert_reaches_only_its_site(gw, 2)
        assert len(gw.children_of(2)) == 1
        # only the PSK changes: the SAs stay, new negotiations use the new one
        answer = await gw.reload(conf(conn("keep", 0), conn("new", 2, "start", extra="rekey_time = 2h"),
                                      secret="0s" + base64.b64encode(b"another secret, long enough").decode()))
        assert answer == {"ok": True, "message": "IKE connections with new credentials (for new negotiations): "
                                                 "keep, new"}
        assert gw.service.connections["keep"].ike.psk != PSK
        assert down_events(gw, 0) == [] and gw.site_sa(0) is keep_sa
        assert [(c.spi_in, c.spi_out) for c in gw.children_of(0)] == keep_children
        # the same file again: no changes
        same = gw.path.read_text()
        answer = await gw.reload(same)
        assert answer == {"ok": True, "message": "no changes"}
        # address pools are leased from what the IKE service was built with: a new one needs a restart
        answer = await gw.reload(same + "pools { rw { addrs = 10.3.0.0/24 } }\n")
        assert answer["ok"] is False and "needs a restart: pools" in answer["error"], answer
        assert down_events(gw, 0) == [] and gw.site_sa(0) is keep_sa
    run(body())


def test_removed_connection_takes_its_trap_policies(tmp_path: Path) -> None:
    async def body() -> None:
        gw = ConfiguredGateway(2)
        gw.path = tmp_path / "tunsec.conf"
        gw.path.write_text(conf(conn("keep", 0), conn("trapped", 1, "trap")))
        await gw.start()
        assert set(gw.service.trap_policies.values()) == {("trapped", "net")}
        before = {p.id for p in gw.worker.dp.policies()}
        answer = await gw.reload(conf(conn("keep", 0, "trap")))
        assert answer["ok"], answer
        assert set(gw.service.trap_policies.values()) == {("keep", "net")}
        after = {p.id for p in gw.worker.dp.policies()}
        assert not before & after and len(after) == len(before)
        assert ("trapped", "net") not in gw.service.trap_reqids

    run(body())
