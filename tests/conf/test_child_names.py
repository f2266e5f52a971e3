"""Child names repeat across connections (as in strongSwan's examples, where every child is ``net``):
``tunsec initiate --child net`` goes through the daemon's control command and needs ``--ike`` then."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

from tunsec.conf.config import parse_config
from tunsec.daemon import Daemon


def connection(name: str, peer: str, net: str) -> str:
    return f"""
  {name} {{
    local_addrs = 192.0.2.1
    remote_addrs = {peer}
    local {{ auth = psk
            id = gw.example }}
    remote {{ auth = psk
             id = {name}.example }}
    children {{ net {{ local_ts = 10.0.0.0/16
                     remote_ts = {net} }} }}
  }}"""


CONF = (
    "connections {" + connection("site-a", "192.0.2.2", "10.1.0.0/16")
    + connection("site-b", "192.0.2.3", "10.2.0.0/16") + "\n}\n"
    + "secrets { ike { secret = 0sZ2F0ZXdheS1zZWNyZXQtMTIzNDU2Nzg5MA== } }\n"
)


class Recorder:
    """The daemon's port 500 socket: where IKE_SA_INIT went."""

    family = socket.AF_INET    # a wildcard socket: the answer's source goes as IP_PKTINFO

    def __init__(self) -> None:
        self.sent: list[str] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> int:
        self.sent.append(addr[0])
        return len(data)

    def sendmsg(self, buffers: list[bytes], ancdata: object, flags: int, addr: tuple[str, int]) -> int:
        return self.sendto(b"".join(buffers), addr)


def command(request: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    daemon = Daemon(parse_config(CONF, "swanctl.conf"))
    assert daemon.ike is not None
    recorder = Recorder()
    daemon.ike.sockets.by_key = {(4, "0.0.0.0", 500): recorder}  # type: ignore[dict-item]

    async def run() -> dict[str, Any]:
        try:
            return await daemon._command(json.dumps(request).encode())
        finally:
            if daemon.ike is not None and daemon.ike._timer is not None:
                daemon.ike._timer.cancel()

    return asyncio.run(run()), recorder.sent


def test_ambiguous_child_names_the_candidates_and_sends_nothing() -> None:
    answer, sent = command({"cmd": "initiate", "child": "net"})
    assert answer == {"ok": False, "error": "child 'net' is in several connections (site-a, site-b): "
                                             "choose one with --ike"}
    assert sent == []


def test_ike_picks_the_connection_and_its_peer() -> None:
    answer, sent = command({"cmd": "initiate", "child": "net", "ike": "site-b"})
    assert answer == {"ok": True, "message": "initiating site-b child net"}
    assert sent == ["192.0.2.3"]
    answer, sent = command({"cmd": "initiate", "child": "web", "ike": "site-a"})
    assert answer == {"ok": False, "error": "connection site-a has no child 'web' (its children: net)"}
    assert sent == []
