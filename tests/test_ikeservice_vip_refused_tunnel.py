"""A virtual IP inside another connection's tunnel ends the connection as other refused ones do (review
revclient F1, through the IKE service).

The pair of test_ikeservice_vip_refused (two real IkeServices wired in memory): A also has a site-to-site
connection whose remote_ts (10.3.0.0/24) holds the address the gateway leases it.  On that TUN the
address would be local, and A's traffic to that host behind the site tunnel delivered to A itself.  The
engine refuses it (exchanges/ike_config.py, address_role.py); the service deletes the IKE SA with one
ERROR line naming the address, the gateway and the other connection, counts it (tunsec status's
vip_refused, the metric tunsec_ike_sa_vip_refused) and never adds the address to the TUN.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import pytest
from test_ikeservice_rekey import RecordingWorker, Wire
from test_ikeservice_vip_refused import LEASE, VipPair, run

from tunsec.conf.connections import Action, Child, Connection
from tunsec.ike.config import child_config
from tunsec.policy.ids import IdSpace
from tunsec.services.ike import IkeService


@dataclasses.dataclass
class SitePair(VipPair):
    """VipPair, A with a second connection ``site`` (not up) to 10.3.0.0/24 behind another gateway."""

    async def start(self, close_action: Action = "none") -> None:
        for side in ("a", "b"):
            worker = self.workers[side] = RecordingWorker(side, self)
            conns = [self.connection(side, close_action)]
            if side == "a":
                cfg = dataclasses.replace(self.ike_config("a"), name="site", remote_addr="203.0.113.9",
                                          children=(child_config("lan", "10.1.0.0/16", "10.3.0.0/24",
                                                                 "aes128gcm16"),))
                conns.append(Connection("site", cfg, (Child("lan", cfg.children[0]),)))
            svc = self.svc[side] = IkeService(conns, lambda w=worker: w,  # type: ignore[misc]
                                              {4: self.ip(side)}, IdSpace(), pools=[self.pool] if side == "b" else ())
            await svc.start()
            svc.sockets.by_key = {(4, self.ip(side), 500): Wire(side, self)}  # type: ignore[dict-item]


def test_a_virtual_ip_inside_another_connections_remote_ts_ends_the_connection(
        caplog: pytest.LogCaptureFixture) -> None:
    pair = SitePair(keyingtries=1)
    with caplog.at_level(logging.INFO, logger="tunsec"):
        asked = asyncio.run(run(pair, {}, rounds=5))
    assert pair.ike_sa_inits() == 1 and asked == [2.0]   # keyingtries = 1: not tried again
    assert pair.up("a") == 0 and pair.up("b") == 0
    assert ("add", LEASE) not in pair.svc["a"].tun.calls
    assert pair.svc["a"].events.vip_refused == {"tun": 1}
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    why = f"assigned virtual IP {LEASE} (inside remote_ts 10.3.0.0/24 of connection site: as ours it would " \
          "take that tunnel's traffic to it)"
    assert [e for e in errors if why in e and "FAILED_CP_REQUIRED" in e], errors   # the Child SA's, with why
    assert [e for e in errors if f"no usable virtual IP from gateway {pair.ip('b')}" in e
            and "not initiating it again" in e], errors                          # vip_refused.py's
