"""Tun.block when the kernel refuses the prohibit route too: the TUN's own route to the network stays
listed, so a reload that removes the tunnel removes it (review U: it was unlisted first and outlived the
tunnel, and tunsec on a TUN it did not create).  A stand-in for pyroute2's IPRoute holds tunsec's table
(dataplane/routetable.py; the refusal cannot be had from a real kernel on demand)."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
from typing import Any, ClassVar

import pytest
from pyroute2.netlink.exceptions import NetlinkError

from tunsec import reroute
from tunsec.dataplane import tun as tunmod

NET = ipaddress.ip_network("10.9.0.0/16")
IDX = 7


class Route(dict[str, Any]):
    def __init__(self, table: dict[Any, str], dst: Any) -> None:
        super().__init__(dst_len=dst.prefixlen, type=table[dst], proto=tunmod.RTPROT_TUNSEC, table=tunmod.TABLE)
        self.oif = IDX if table[dst] == "tun" else None
        self.dst = dst

    def get_attr(self, name: str, default: Any = None) -> Any:
        attrs = {"RTA_DST": str(self.dst.network_address), "RTA_OIF": self.oif, "RTA_TABLE": tunmod.TABLE}
        return attrs.get(name, default)


class RefusingProhibit:
    """tunsec's table: TUN routes are taken, prohibit routes refused (ENOMEM); its rule is added."""

    table: ClassVar[dict[Any, str]] = {}

    def __enter__(self) -> RefusingProhibit:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def link_lookup(self, ifname: str) -> list[int]:
        return [IDX]

    def get_rules(self, family: int) -> list[Any]:
        return []

    def rule(self, cmd: str, **kw: Any) -> None:
        return None

    def route(self, cmd: str, **kw: Any) -> list[Route] | None:
        if cmd == "dump":
            return [Route(self.table, d) for d, kind in self.table.items()
                    if kw.get("oif") in (None, IDX) or kind != "tun"]
        dst = ipaddress.ip_network(kw["dst"])
        if cmd == "replace":
            if kw.get("type") == "prohibit":
                raise NetlinkError(errno.ENOMEM, "refused")
            self.table[dst] = "tun"
        elif cmd == "del":
            self.table.pop(dst, None)
        return None


def test_a_refused_block_leaves_the_route_listed_and_a_reload_removing_the_tunnel_removes_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    RefusingProhibit.table = {}
    monkeypatch.setattr(tunmod, "_iproute", RefusingProhibit)
    t = tunmod.Tun(name="tsx0", created=False, device=None)
    t.add_route(NET, None)
    with pytest.raises(OSError):
        t.block(NET, "set_route_source refused")
    assert NET in [r[0] for r in t.routes]          # still ours, and in the kernel
    assert not t.unrouted[NET].blocked
    asyncio.run(reroute._unroute(t, []))           # a reload that removes the tunnel
    assert NET not in RefusingProhibit.table and NET not in [r[0] for r in t.routes]
