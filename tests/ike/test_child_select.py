"""Which child config the responder records a Child SA under when several could serve the request:
the best match of the selectors (strongSwan's select_child_cfg), not the first that covers them.
Two engines on a fake clock; B's 'net' child (10.x.0.0/16) is listed before its 'web' one (10.x.9.0/24)."""

from __future__ import annotations

import dataclasses

from test_engine_more import B, cfg, net_of, only

from tunsec.ike.config import child_config
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaUp


def _b_children(b: IkeEndpoint) -> list[str]:
    (sa,) = [sa for sa in b.sas if not sa.is_closed]
    return sorted(c.name for c in sa.children if c.installed)


def test_ike_auth_for_the_narrower_child_is_recorded_under_it() -> None:
    net, a, b = net_of(cfg(True), cfg(False))
    a.initiate("conn", "web", net.now)
    net.run()
    (up,) = only(net.take(B), ChildSaUp)
    assert up.child == "web" and [str(t) for t in up.local_ts] == ["10.2.9.0/24"]
    assert _b_children(b) == ["web"]


def test_create_child_sa_for_the_narrower_child_is_recorded_under_it() -> None:
    net, a, b = net_of(cfg(True), cfg(False))
    a.initiate("conn", "net", net.now)
    net.run()
    (sa,) = a.sas
    sa.initiate("web")
    net.run()
    assert [e.child for e in only(net.take(B), ChildSaUp)] == ["net", "web"]
    assert _b_children(b) == ["net", "web"]


def test_a_request_only_the_wider_child_fits_exactly_goes_to_it_whatever_the_order() -> None:
    """'web' listed first now: a request for the /16 still lands in 'net' (an exact match); one for a
    /24 that only 'net' covers lands in 'net' too (it is the only one that fits)."""
    b_cfg = cfg(False)
    b_cfg = dataclasses.replace(b_cfg, children=tuple(reversed(b_cfg.children)))
    a_cfg = cfg(True)
    other = child_config("other", "10.1.5.0/24", "10.2.5.0/24", "aes128gcm16")
    a_cfg = dataclasses.replace(a_cfg, children=(*a_cfg.children, other))
    net, a, _ = net_of(a_cfg, b_cfg)
    a.initiate("conn", "net", net.now)
    net.run()
    (sa,) = a.sas
    sa.initiate("other")
    net.run()
    ups = only(net.take(B), ChildSaUp)
    assert [(e.child, [str(t) for t in e.local_ts]) for e in ups] == [
        ("net", ["10.2.0.0/16"]), ("net", ["10.2.5.0/24"])]
