"""An address the virtual-IP service still holds on the TUN keeps CAP_NET_ADMIN (review AF F2:
netadmin.BlocksHold asked ``others`` (Daemon._virtual_ips), which looked at the configuration only, so
a reload removing the last connection with ``vips`` and lifting the last block gave the capability up
while that connection's IKE SA was still being deleted with its virtual IP on the TUN; its removal
then got EPERM and the address stayed)."""

from __future__ import annotations

import ipaddress
import threading
import types

from test_ikeservice_terminate import CONF

from tunsec import netadmin
from tunsec.conf.config import parse_config
from tunsec.daemon import Daemon
from tunsec.dataplane.blockwatch import Keeper
from tunsec.services.ike.vips import VirtualIps


def test_a_virtual_ip_still_on_the_tun_keeps_net_admin() -> None:
    daemon = Daemon(parse_config(CONF, "swanctl.conf"))
    assert not any(c.ike.vips for c in daemon.cfg.connections)   # the reload removed the vips connection
    # ... whose IKE SA still holds its address on the TUN (deleted, not gone yet)
    vips = VirtualIps(lambda: None, lambda name: None, lambda coro: coro.close())
    vips._applied.add(ipaddress.ip_address("10.9.0.2"))
    daemon.ike = types.SimpleNamespace(vips=vips)  # type: ignore[assignment]
    tun = types.SimpleNamespace(_lock=threading.Lock(), unrouted={}, routes=[], created=True)
    hold = netadmin.BlocksHold(Keeper(tun), daemon._virtual_ips)  # type: ignore[arg-type]
    assert not hold.unneeded(), "CAP_NET_ADMIN would be given up with a virtual IP still on the TUN"
