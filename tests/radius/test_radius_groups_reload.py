"""A reload that changes only where an Access-Accept's groups come from (``radius.class_group``,
``filter_id``) keeps the RADIUS relay, and so the EAP conversations in flight, and the next
Accept is read with the new settings; one that changes a server or a timer keeps it too, its
client reconfigured (the requests under way finish: test_radius_reload_under_way)."""
from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

from tunsec.ike.secret import Secret
from tunsec.radius.settings import RadiusServer, RadiusSettings

SETTINGS = RadiusSettings((RadiusServer("fr", ipaddress.ip_address("127.0.0.1"), Secret(b"radius")),))


def service(radius: RadiusSettings) -> Any:
    from tunsec.services.ike.service import IkeService
    return IkeService([], lambda: None, {4: "192.0.2.1"}, radius=radius)  # type: ignore[arg-type]


def test_a_reload_of_the_group_settings_keeps_the_relay() -> None:
    svc = service(SETTINGS)
    relay = svc.radius
    groups = dataclasses.replace(SETTINGS, class_group=True, filter_id=True)
    svc._reload_radius(groups)
    assert svc.radius is relay and relay.settings == groups
    timers = dataclasses.replace(groups, retransmit_tries=1)
    svc._reload_radius(timers)
    assert svc.radius is relay and relay.settings == relay.client.settings == timers
    svc.close()
