"""A network stays in the record of this instance's prohibit routes (blockrecord.py) for as long as its
prohibit route may be in the kernel (review V, low): three failure paths took it out of the record while
the route stayed, so a kill -9 later left a block no start would remove.  A stand-in for pyroute2's IPRoute
holds tunsec's table (and takes its rule: dataplane/routetable.py) and refuses what a test says (such
refusals cannot be had from a real kernel on demand); the record is a real one in a private directory."""

from __future__ import annotations

import errno
import ipaddress
import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pyroute2.netlink.exceptions import NetlinkError

from tunsec.dataplane import blockwatch
from tunsec.dataplane import tun as tunmod
from tunsec.dataplane.blockrecord import BlockRecord, block_mark

NET, NET2 = ipaddress.ip_network("10.9.0.0/16"), ipaddress.ip_network("10.8.0.0/16")
VIP = "10.1.0.5"
IDX = 7


class Msg(dict[str, Any]):
    def __init__(self, attrs: dict[str, Any]) -> None:
        super().__init__()
        self.attrs = attrs

    def get_attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)


class Table:
    """tunsec's table as (dst, kind) -> present; refuse: the (command, kind) calls that fail, in turn."""

    routes: ClassVar[set[tuple[Any, str]]] = set()
    addrs: ClassVar[list[str]] = []
    refuse: ClassVar[list[tuple[str, str]]] = []
    calls: ClassVar[list[tuple[str, str]]] = []

    def __enter__(self) -> Table:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def link_lookup(self, ifname: str) -> list[int]:
        return [IDX]

    def get_rules(self, family: int) -> list[Msg]:
        return []

    def rule(self, cmd: str, **kw: Any) -> None:
        return None

    def get_addr(self, index: int | None = None, **kw: Any) -> list[Msg]:
        return [Msg({"IFA_ADDRESS": a}) for a in self.addrs]

    def addr(self, cmd: str, **kw: Any) -> None:
        self.addrs.remove(kw["address"])

    def route(self, cmd: str, **kw: Any) -> None:
        kind = "prohibit" if kw.get("type") == "prohibit" else "tun"
        dst = ipaddress.ip_network(kw["dst"])
        self.calls.append((cmd, kind))
        if (cmd, kind) in self.refuse:
            self.refuse.remove((cmd, kind))
            raise NetlinkError(errno.ENOMEM, "refused")
        # the kernel's NLM_F_EXCL: a route of that network at that metric (a guard's, the least preferred
        # metric, is never the TUN route's nor a block's here)
        if cmd == "add" and kw.get("priority") != tunmod._GUARD_PRIORITY and any(d == dst for d, _k in self.routes):
            raise NetlinkError(errno.EEXIST, "exists")
        if cmd in ("replace", "add"):
            self.routes.add((dst, kind))
        elif cmd == "del":
            self.routes.discard((dst, kind))


@pytest.fixture
def tun(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tunmod.Tun:
    Table.routes, Table.addrs, Table.refuse, Table.calls = set(), [VIP], [], []
    monkeypatch.setattr(tunmod, "_iproute", Table)
    tmp_path.chmod(0o700)
    t = tunmod.Tun(name="tsx0", created=False, device=None)
    t.record = BlockRecord.open(str(tmp_path), "tsx0", None)
    return t


def ours() -> set[tuple[Any, int | None]]:
    """blockwatch.tunsec_prohibits of Table: its prohibit routes are all the TUN's, with its mark."""
    return {(d, block_mark("tsx0")) for d, k in Table.routes if k == "prohibit"}


def recorded(t: tunmod.Tun) -> list[str]:
    assert t.record is not None
    path = Path(t.record.where)
    return list(json.loads(path.read_text())["networks"]) if path.exists() else []


def test_a_blocked_network_blocked_again_whose_replace_fails_stays_blocked_and_recorded(tun: tunmod.Tun) -> None:
    tun.block(NET, "route refused")
    Table.refuse = [("replace", "prohibit")]
    with pytest.raises(OSError):
        tun.block(NET, "route refused again")
    assert (NET, "prohibit") in Table.routes   # the first block's route: still there
    assert tun.unrouted[NET].blocked and recorded(tun) == [str(NET)]


def test_a_guard_refused_part_way_takes_the_guards_already_in_back_out(tun: tunmod.Tun,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    tun.routes = [(NET2, VIP), (NET, VIP)]   # both lost with the address: guarded
    Table.routes = {(NET2, "tun"), (NET, "tun")}
    Table.calls = []

    class SecondRefused(Table):
        def route(self, cmd: str, **kw: Any) -> None:
            if cmd == "add" and kw.get("type") == "prohibit" and ("add", "prohibit") in self.calls:
                self.calls.append(("add", "prohibit"))
                raise NetlinkError(errno.ENOMEM, "refused")
            super().route(cmd, **kw)

    monkeypatch.setattr(tunmod, "_iproute", SecondRefused)
    with pytest.raises(OSError):
        tun.remove_address(VIP)
    assert VIP in Table.addrs                                      # the address stays, so do its routes
    assert {k for _d, k in Table.routes} == {"tun"}                # no guard left behind
    assert recorded(tun) == []


def test_a_guard_whose_delete_fails_stays_recorded(tun: tunmod.Tun) -> None:
    tun.routes = [(NET, VIP)]
    Table.routes = {(NET, "tun")}
    Table.refuse = [("del", "prohibit")]
    tun.remove_address(VIP)
    assert (NET, "prohibit") in Table.routes and (NET, "tun") in Table.routes
    assert not tun.unrouted and recorded(tun) == [str(NET)]   # blocks nothing, yet the next start removes it


def test_the_keeper_puts_back_a_removed_block_but_never_over_the_tun_route(tun: tunmod.Tun,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """blockwatch.Keeper: a blocked network whose prohibit route is gone gets it back; one routed through the
    TUN again (add_route replaced the prohibit route, unblock not yet run) is left alone: putting the block
    back would replace the TUN route; one it cannot put back is said NOT blocked and tried again."""
    monkeypatch.setattr(blockwatch, "_iproute", Table)
    monkeypatch.setattr(blockwatch, "tunsec_prohibits", ours)
    tun.block(NET, "route refused")
    tun.block(NET2, "route refused")
    keeper = blockwatch.Keeper(tun)
    Table.routes.clear()                       # someone else removed both
    tun.routes.append((NET2, None))            # and NET2's TUN route is in (add_route's replace)
    Table.routes.add((NET2, "tun"))
    keeper.check()
    assert Table.routes == {(NET, "prohibit"), (NET2, "tun")} and tun.unrouted[NET].blocked
    Table.routes.discard((NET, "prohibit"))
    Table.refuse = [("add", "prohibit")]
    keeper.check()
    assert not tun.unrouted[NET].blocked and "cannot be put back" in tun.unrouted[NET].why
    keeper.check()                             # tried again
    assert (NET, "prohibit") in Table.routes and tun.unrouted[NET].blocked and str(NET) in recorded(tun)


def test_the_keeper_leaves_a_route_someone_else_put_in_the_blocks_place(tun: tunmod.Tun,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Review X: the block put back with replace took over a route another program (another VPN, root, a
    second tunsec) had put there, and unblocking later left the network with no route at all (in clear).
    Put back with add: that route stays, NET is said NOT blocked, and once that route goes the block is back."""
    monkeypatch.setattr(blockwatch, "_iproute", Table)
    monkeypatch.setattr(blockwatch, "tunsec_prohibits", ours)
    tun.block(NET, "route refused")
    keeper = blockwatch.Keeper(tun)
    Table.routes = {(NET, "tun")}              # someone else's route replaced the block
    keeper.check()
    keeper.check()
    assert Table.routes == {(NET, "tun")}      # theirs, untouched
    assert not tun.unrouted[NET].blocked and "taken by a route not this instance's" in tun.unrouted[NET].why
    tun.unblock(NET)                           # our unblock deletes only our prohibit route
    assert Table.routes == {(NET, "tun")}
    tun.block(NET, "route refused")            # blocked again, and their route goes: ours is put back
    Table.routes.clear()
    keeper.check()
    assert Table.routes == {(NET, "prohibit")} and tun.unrouted[NET].blocked
