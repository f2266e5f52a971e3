"""The engine accepts what the config produces: two swanctl.conf configs (PSK, certificates) negotiate."""

from __future__ import annotations

from pathlib import Path

import connections_data
from connections_data import (
    PSK_CONF,
    WHEN,
    Pki,
    moon_dir,
    sun_dir,
)

from tunsec.conf.config import Config, load_config, parse_config
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaUp, IkeSaUp
from tunsec.ike.testing import Network
from tunsec.ike.ts import Ts

# --------------------------------------------------------------------------
# The engine accepts what the config produces: two configs negotiate
# --------------------------------------------------------------------------

MOON_IP, SUN_IP = "192.168.0.1", "192.168.0.2"

pki = connections_data.pki   # the module-scoped PKI fixture (a conftest here would shadow tests/conftest)


def negotiate(moon: Config, sun: Config, conn: str, child: str) -> tuple[ChildSaUp, ChildSaUp]:
    net = Network()
    a = net.add(MOON_IP, IkeEndpoint([c.ike for c in moon.connections], wall_clock=lambda: WHEN))
    net.add(SUN_IP, IkeEndpoint([c.ike for c in sun.connections], wall_clock=lambda: WHEN))
    a.initiate(conn, child, net.now)
    net.run(until=net.now + 60)   # the rekey and DPD timers of the config lie hours ahead
    ev_a, ev_b = net.take(MOON_IP), net.take(SUN_IP)
    assert [type(e) for e in ev_a] == [IkeSaUp, ChildSaUp], ev_a
    assert [type(e) for e in ev_b] == [IkeSaUp, ChildSaUp], ev_b
    up_a, up_b = ev_a[1], ev_b[1]
    assert isinstance(up_a, ChildSaUp) and isinstance(up_b, ChildSaUp)
    return up_a, up_b


def test_psk_configs_negotiate_with_the_engine() -> None:
    sun_conf = (
        PSK_CONF.replace("192.168.0.1", "SUN").replace("192.168.0.2", "192.168.0.1").replace("SUN", "192.168.0.2")
        .replace("id = moon.strongswan.org", "id = MOON").replace("id = sun.strongswan.org", "id = moon.strongswan.org")
        .replace("id = MOON", "id = sun.strongswan.org")
        .replace("local_ts = 10.1.0.0/16", "local_ts = 10.2.0.0/16")
        .replace("remote_ts = 10.2.0.0/16", "remote_ts = 10.1.0.0/16")
        .replace("start_action = start", "start_action = none")
    )  # fmt: skip
    up_a, up_b = negotiate(parse_config(PSK_CONF), parse_config(sun_conf), "gw-gw", "net-net")
    assert [str(t) for t in up_a.local_ts] == ["10.1.0.0/16"] and [str(t) for t in up_b.local_ts] == ["10.2.0.0/16"]
    assert up_a.alg == "aes128gcm16"


def test_certificate_configs_negotiate_with_the_engine(tmp_path: Path, pki: Pki) -> None:
    moon = load_config(moon_dir(tmp_path / "moon", pki))
    sun = load_config(sun_dir(tmp_path / "sun", pki))
    up_a, up_b = negotiate(moon, sun, "host-host", "host-host")
    assert up_a.local_ts == (Ts.host(MOON_IP),) and up_b.local_ts == (Ts.host(SUN_IP),)  # dynamic
