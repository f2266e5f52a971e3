"""A manual tunnel's networks are claimed: no IKE peer's Child SA may hold them (services/manual_claims.py,
review revreload F2).

The claims (policy/claims.py) are the daemon's, shared by the manual and the IKE service: each
manual tunnel holds its remote_ts toward its local_ts from the service's construction until a
reload's configuration no longer names it, installed or not.  So on a gateway of road warriors a
client proposing 0.0.0.0/0 is narrowed around a manual tunnel's network, and a site proposing it is
refused; a reload that replaces a manual tunnel and fails to install the new version leaves the
network to nobody; one that removes the tunnel (or moves it to another network) frees it; and a
reload adding a manual tunnel over an IKE peer's established Child SA is refused, naming both.

The gateways are real IkeServices and ManualServices over the worker's logic and the C fast path
in-process (test_ikeservice_ts_claims.TsGateway; the proof's MixedGateway: the daemon's reload)."""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_ikeservice_peers import _now, ipv4_udp, run, site_ip
from test_ikeservice_ts_claims import Client, TsGateway, refusals, sent_as
from test_manual_network_reload_no_ike_peer import KEY, LEGACY, ROTATED, MixedGateway, hub, manual
from test_reload_ike import SECRET

from tunsec.conf.config import load_config, parse_config
from tunsec.daemon import Daemon
from tunsec.dataplane import pipe
from tunsec.dataplane.fastpath import Drop
from tunsec.dataplane.pipe import Endpoint, Errno
from tunsec.ike.ts import Ts
from tunsec.policy.ids import BAND_WIDTH, Band
from tunsec.runtime import resolved
from tunsec.services.manual import ManualService
from tunsec.statedir import init_state_dir

TO_LEGACY = Endpoint(ipaddress.ip_address(LEGACY), 4500)


def config(tmp: Path, spokes: str = "", tunnels: str = "") -> str:
    """The gateway's file: the state directory, hub connections (test_manual_network_reload_no_ike_peer.hub) and
    manual tunnels (its manual(): legacy, 10.2.2.0/24 toward 10.1.0.0/24)."""
    return (f"tunsec {{ control_socket = /nonexistent/tunsec.sock\n state_dir = {tmp}/state }}\n"
            + (f"connections {{\n{spokes}}}\n" if spokes else "")
            + (f"manual {{\n{tunnels}}}\n" if tunnels else "")
            + f"secrets {{ ike {{ secret = {SECRET} }} }}\n")


def write(tmp: Path, text: str) -> Path:
    path = tmp / "tunsec.conf"
    path.write_text(text)
    return path


@dataclass
class ManualTsGateway(TsGateway):
    """TsGateway with a manual tunnel (legacy: 10.2.2.0/24 toward 10.1.0.0/24, to LEGACY) in the same
    worker and ids, its claims in the IKE service's, as the daemon shares them."""

    tmp: Path = Path()

    async def start(self) -> None:
        await super().start()
        init_state_dir(self.tmp / "state")
        cfg = resolved(load_config(write(self.tmp, config(self.tmp, tunnels=manual(KEY)))))
        self.manual = ManualService(cfg.manual, self.service.ids, cfg.tunsec.state_dir,
                                    lambda: self.worker, self.service.ts_claims)  # type: ignore[arg-type,return-value]
        self.manual.prepare()
        await self.manual.start()


async def manual_gateway(tmp: Path, remote_ts: str, pools: bool, *clients: Client) -> ManualTsGateway:
    gw = ManualTsGateway(len(clients), mobike=False, clients=clients, remote_ts=remote_ts, pools=pools, tmp=tmp)
    await gw.start()
    for i in range(len(clients)):
        gw.connect(i)
        await gw.settle()
    return gw


def leaves_for(gw: TsGateway, dst: str, src: str = "10.1.0.5") -> Endpoint | None:
    """Where a packet from the gateway's side to ``dst`` is sealed for (None: dropped)."""
    _esp, to, drop, _ = gw.worker.dp.outbound(ipv4_udp(src, dst))
    return to if drop is Drop.NONE else None


# ----------------------------------------------------------------------------- negotiation


def test_a_road_warrior_proposing_everything_is_narrowed_around_a_manual_tunnels_network(tmp_path: Path) -> None:
    """remote_ts = 0.0.0.0/0 on a pool connection: a client proposing 0.0.0.0/0 gets it without the pool
    and without the manual tunnel's 10.2.2.0/24; it cannot send as a host of that network, whose
    traffic goes to the manual peer, and the rest of 10.2.0.0/16 is the client's."""
    async def body() -> None:
        gw = await manual_gateway(tmp_path, "0.0.0.0/0", True, Client("c.example", "0.0.0.0/0"))
        c = gw.child_of(0)
        assert c is not None and not refusals(gw, 0)
        assert c.remote_ts == (Ts.parse("0.0.0.0-10.2.1.255"), Ts.parse("10.2.3.0-10.2.255.255"),
                               Ts.parse("10.3.1.0-255.255.255.255")), c.remote_ts
        assert sent_as(gw, 0, "10.2.2.7") is Drop.POLICY
        assert sent_as(gw, 0, "10.2.9.9", seq=2) is Drop.NONE
        assert leaves_for(gw, "10.2.2.7") == TO_LEGACY
        assert leaves_for(gw, "10.2.9.9") == Endpoint(ipaddress.ip_address(site_ip(0)), 4500)
    run(body())


def test_a_site_proposing_a_manual_tunnels_network_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """No pools: a site proposing 10.2.0.0/16 (over the manual tunnel's 10.2.2.0/24) is refused, and the
    log names the manual tunnel; a site proposing a network beside it is accepted."""
    caplog.set_level(logging.INFO, logger="tunsec")

    async def body() -> None:
        gw = await manual_gateway(tmp_path, "10.2.0.0/16", False, Client("site0.example", "10.2.0.0/16"),
                                  Client("site1.example", "10.2.3.0/24"))
        assert gw.child_of(0) is None
        assert [e.reason for e in refusals(gw, 0)] == ["TS_UNACCEPTABLE"]
        assert gw.child_of(1) is not None and not refusals(gw, 1)
        assert leaves_for(gw, "10.2.2.7") == TO_LEGACY
    run(body())
    (line,) = [r.getMessage() for r in caplog.records if "TS_UNACCEPTABLE" in r.getMessage()]
    assert "site0.example" in line and "of manual tunnel legacy (its remote 10.2.2.0/24 local 10.1.0.0/24)" in line, \
        line


def test_the_daemon_gives_its_ike_service_the_manual_tunnels_claims(tmp_path: Path) -> None:
    """Claimed as the daemon is built, before any service starts (the IKE service answers no one yet)."""
    path = write(tmp_path, config(tmp_path, hub(1), manual(KEY)))
    daemon = Daemon(resolved(load_config(path)))
    assert daemon.ike is not None
    # (the named hub connection's configured 10.2.0.0/16 holds it too: services/ike/configured_claims.py)
    ((claim, held, _),) = [(c, h, f) for c, h, f in daemon.ike.ts_claims.containing(ipaddress.ip_address("10.2.2.7"))
                           if not c.configured]
    assert claim.conn == "manual tunnel legacy" and held == [Ts.parse("10.2.2.0/24")]
    assert [str(t) for t in claim.local] == ["10.1.0.0/24"]


@pytest.mark.parametrize(("remote_ts", "local_ts", "warned"), [
    ("10.2.2.0/24", "10.1.0.0/16", "lies inside"),   # all of it the manual tunnel's: never up toward 10.1.0.0/24
    ("10.2.2.8/29, 10.2.2.64/26", "10.1.0.0/24", "lies inside"),
    # a hub's: what it starts is proposed without the tunnel's network, a spoke answering or asking
    # for it refused (h/fixclaims2; not warned about before)
    ("10.2.0.0/16", "10.1.0.0/16", "overlaps"),
    ("10.2.2.0/24", "10.9.0.0/16", ""),              # toward other local hosts: the SPD tells them apart
    ("10.2.2.0/24", "dynamic", ""),                  # what it negotiates is not known at load
])
def test_a_child_whose_remote_ts_lies_inside_a_manual_tunnels_is_warned_about_at_load(
        tmp_path: Path, remote_ts: str, local_ts: str, warned: str) -> None:
    spoke = hub(1).replace("local_ts = 10.1.0.0/16", f"local_ts = {local_ts}") \
        .replace("remote_ts = 10.2.0.0/16", f"remote_ts = {remote_ts}")
    warnings = parse_config(config(tmp_path, spoke, manual(KEY)), "tunsec.conf").warnings
    mine = [w for w in warnings if "manual tunnel" in w.message]
    assert [w.key for w in mine] == ["connections.spoke1.children.net.remote_ts"] * bool(warned), warnings
    if warned:
        assert mine[0].message.startswith(f"{remote_ts} {warned} manual tunnel legacy's remote_ts 10.2.2.0/24 "
                                          "toward local_ts that meet its 10.1.0.0/24"), mine[0].message
        assert mine[0].line > 0


# ----------------------------------------------------------------------------- reloads


def refuse_manual_spdadds(gw: MixedGateway) -> None:
    """From now on the worker refuses the manual tunnels' policies (as a full SPD would: ENOSPC)."""
    handle = gw.worker.worker.handle_datagram

    def refusing(data: bytes) -> list[bytes]:
        msg = pipe.decode(data)
        if isinstance(msg, pipe.SpdAdd) and msg.policy.priority // BAND_WIDTH == Band.MANUAL:
            return [pipe.encode(pipe.Reply(msg.req_id, msg.TYPE, Errno.ENOSPC))]
        return handle(data)  # type: ignore[no-any-return]

    gw.worker.worker.handle_datagram = refusing  # type: ignore[method-assign]


async def mixed(tmp: Path, text: str, n: int = 3) -> MixedGateway:
    init_state_dir(tmp / "state")
    gw = MixedGateway(n)
    gw.path = write(tmp, text)
    await gw.start()
    return gw


def to_site(i: int) -> Endpoint:
    return Endpoint(ipaddress.ip_address(site_ip(i)), 4500)


def test_a_manual_tunnel_whose_new_version_failed_to_install_keeps_its_network(tmp_path: Path) -> None:
    """A key rotation the worker refuses: the old version's policies are out, the new one's not in;
    a spoke connecting after the reload and asking for the network is refused all the same (the
    traffic is dropped, not sent to it); once a reload installs the tunnel, it carries it again."""
    async def body() -> None:
        gw = await mixed(tmp_path, config(tmp_path, hub(1), manual(KEY)))
        refuse_manual_spdadds(gw)
        answer = await gw.reload(config(tmp_path, hub(1), manual(ROTATED)))
        assert answer["ok"] is False and "their traffic is dropped" in answer["error"], answer
        gw.connect(1)   # site 1 asks for 10.2.2.0/24
        await gw.settle()
        assert gw.children_of(1) == []
        _esp, dst, drop = gw.send_to_site(1)
        assert drop is not Drop.NONE and dst != to_site(1), dst
    run(body())


def test_a_reload_removing_or_moving_a_manual_tunnel_frees_its_old_network_and_claims_the_new(
        tmp_path: Path) -> None:
    """The manual tunnel moves from 10.2.2.0/24 to 10.2.3.0/24: site 1 (10.2.2.0/24), refused before,
    gets its Child SA; site 2 (10.2.3.0/24) is refused.  Removed: site 2 gets it too."""
    async def body() -> None:
        gw = await mixed(tmp_path, config(tmp_path, hub(1) + hub(2), manual(KEY)))
        gw.connect(1)
        await gw.settle()
        assert gw.children_of(1) == []   # 10.2.2.0/24 is the manual tunnel's
        moved = manual(ROTATED).replace("10.2.2.0/24", "10.2.3.0/24")
        answer = await gw.reload(config(tmp_path, hub(1) + hub(2), moved))
        assert answer["ok"] is True, answer
        gw.connect(1)
        gw.connect(2)
        await gw.settle()
        assert gw.children_of(1) != [] and gw.children_of(2) == []
        assert gw.send_to_site(1)[1] == to_site(1)
        assert gw.send_to_site(2)[1] == TO_LEGACY
        answer = await gw.reload(config(tmp_path, hub(1) + hub(2)))
        assert answer["ok"] is True, answer
        gw.connect(2)
        await gw.settle()
        assert gw.children_of(2) != []
        assert gw.send_to_site(2)[1] == to_site(2)
    run(body())


def test_a_reload_adding_a_manual_tunnel_over_an_ike_peers_child_sa_is_refused(tmp_path: Path) -> None:
    """Site 1 holds 10.2.2.0/24 (a spoke of hub 10.2.0.0/16); a reload adding the manual tunnel legacy
    for that network is refused, naming both, and nothing changes: site 1 keeps its traffic."""
    async def body() -> None:
        gw = await mixed(tmp_path, config(tmp_path, hub(1)))
        gw.connect(1)
        await gw.settle()
        assert gw.send_to_site(1)[1] == to_site(1)
        answer = await gw.reload(config(tmp_path, hub(1), manual(KEY)))
        assert answer["ok"] is False, answer
        error = answer["error"]
        assert "reload refused, nothing changed" in error and "manual tunnel legacy" in error, error
        assert "site1.example" in error and "connection spoke1" in error and "10.2.2.0/24" in error, error
        assert gw.daemon.manual.plans == []
        _esp, dst, drop = gw.send_to_site(1)
        assert drop is Drop.NONE and dst == to_site(1)
        # once site 1's Child SA is gone, the same reload goes in
        gw.site_sa(1).delete(_now())
        await gw.settle()
        answer = await gw.reload(config(tmp_path, hub(1), manual(KEY)))
        assert answer["ok"] is True, answer
        assert gw.send_to_site(1)[1] == TO_LEGACY
    run(body())
