"""Review revreload F2: the selector claims (policy/claims.py) know IKE peers only, not manual
tunnels.  An IKE peer whose connection lets it choose within a wide remote_ts (a hub's spokes)
gets a Child SA for a manual tunnel's remote network; while the manual tunnel's policy is in, its
band (Band.MANUAL, before IKE_CHILD) hides the overlap outbound, but a reload that replaces the
manual tunnel (a key rotation) takes its policy out first, and if the new version is not
installed (the worker refuses it) the reload answers "their traffic is dropped until a reload
installs or removes them" while the site's traffic is in fact encrypted to the IKE peer.

The gateway of test_reload_ike (a real IkeService, the worker's logic and C fast path in-process,
the daemon's reload command) with a real ManualService beside it in the same id space."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from test_ikeservice_peers import GW, run, site_ip
from test_reload_ike import SECRET, ConfiguredGateway
from test_reload_manual import derived

from tunsec.conf.config import load_config
from tunsec.daemon import Sockets
from tunsec.dataplane import pipe
from tunsec.dataplane.fastpath import Drop
from tunsec.dataplane.pipe import Endpoint, Errno
from tunsec.policy.ids import BAND_WIDTH, Band
from tunsec.runtime import resolved
from tunsec.services.manual import ManualService
from tunsec.statedir import init_state_dir

KEY = "0x0102030405060708090a0b0c0d0e0f1011121314"
ROTATED = "0xa1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4"
LEGACY = "192.0.2.50"   # the manual tunnel's peer


def hub(site: int) -> str:
    """A spoke's connection: its peer named, remote_ts wide (each spoke chooses its part)."""
    return f"""  spoke{site} {{ local_addrs = {GW}
       remote_addrs = {site_ip(site)}
       local {{ auth = psk
               id = gw.example }}
       remote {{ auth = psk
                id = site{site}.example }}
       children {{ net {{ local_ts = 10.1.0.0/16
                        remote_ts = 10.2.0.0/16
                        esp_proposals = aes128gcm16 }} }} }}
"""


def manual(key: str) -> str:
    """A manual tunnel to a legacy site whose network is 10.2.2.0/24 (site 1's LAN as it says)."""
    return f"""  legacy {{ local_addr = {GW}
    remote_addr = {LEGACY}
    local_ts = 10.1.0.0/24
    remote_ts = 10.2.2.0/24
    spi_in = 0xc0010001
    key_in = {derived(key, 1, "in")}
    spi_out = 0xc0020001
    key_out = {derived(key, 1, "out")} }}
"""


def conf(tmp: Path, key: str) -> str:
    return (f"tunsec {{ control_socket = /nonexistent/tunsec.sock\n state_dir = {tmp}/state }}\n"
            "connections {\n" + hub(1) + "}\n"
            "manual {\n" + manual(key) + "}\n"
            f"secrets {{ ike {{ secret = {SECRET} }} }}\n")


class MixedGateway(ConfiguredGateway):
    """ConfiguredGateway whose daemon's manual tunnels share the IKE service's worker and ids."""

    async def start(self) -> None:
        await super().start()
        cfg = resolved(load_config(self.path))
        self.daemon.worker = self.worker  # type: ignore[assignment]
        self.daemon.manual = ManualService(cfg.manual, self.service.ids, cfg.tunsec.state_dir,
                                           lambda: self.worker,  # type: ignore[arg-type,return-value]
                                           self.service.ts_claims)   # one claims, as the daemon's
        self.daemon.services = [self.daemon.manual, self.service]
        self.daemon.sockets.binds = {**Sockets.binds_for(self.daemon.manual.esp_endpoints()), 4: (GW, 4500)}
        self.daemon.manual.prepare()
        await self.daemon.manual.start()


def test_a_manual_tunnel_not_reinstalled_by_a_reload_sends_its_traffic_to_no_ike_peer(tmp_path: Path) -> None:
    async def body() -> None:
        init_state_dir(tmp_path / "state")
        gw = MixedGateway(2)
        gw.path = tmp_path / "tunsec.conf"
        gw.path.write_text(conf(tmp_path, KEY))
        await gw.start()
        gw.connect(1)   # site 1 asks for 10.2.2.0/24, the manual tunnel's remote network
        await gw.settle()
        _esp, dst, drop = gw.send_to_site(1)
        assert drop is Drop.NONE and dst == Endpoint(ipaddress.ip_address(LEGACY), 4500), dst   # the manual band first

        # the key rotation's new version is refused by the worker (as a full SPD would: ENOSPC)
        handle = gw.worker.worker.handle_datagram

        def refuse_manual(data: bytes) -> list[bytes]:
            msg = pipe.decode(data)
            if isinstance(msg, pipe.SpdAdd) and msg.policy.priority // BAND_WIDTH == Band.MANUAL:
                return [pipe.encode(pipe.Reply(msg.req_id, msg.TYPE, Errno.ENOSPC))]
            return handle(data)  # type: ignore[no-any-return]

        gw.worker.worker.handle_datagram = refuse_manual  # type: ignore[method-assign]
        answer = await gw.reload(conf(tmp_path, ROTATED))
        assert answer["ok"] is False and "their traffic is dropped" in answer["error"], answer
        _esp, dst, drop = gw.send_to_site(1)
        assert dst != Endpoint(ipaddress.ip_address(site_ip(1)), 4500), \
            "the manual tunnel's traffic went to IKE peer site1 instead of being dropped"
        assert drop is not Drop.NONE

    run(body())
