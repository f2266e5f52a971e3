"""Reloading the IKE connections (as swanctl --load-conns) and what needs a restart instead."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import TYPE_CHECKING

from tunsec.conf.connections import ike_endpoints
from tunsec.conf.diff import credentials_only, diff_by_name

if TYPE_CHECKING:
    from tunsec.conf.config import Config
    from tunsec.services.ike.service import IkeService


def check_reload(self: IkeService, cfg: Config) -> list[str]:
    """The IKE sockets were bound at start (port 500 needs a privilege given up since)."""
    out = []
    want = ike_endpoints(cfg.connections) if cfg.connections else {}
    for fam, addr in sorted(want.items()):
        have = self.local_addrs.get(fam)
        if have != addr:
            out.append(f"needs a restart: IKE on IPv{fam} address {addr} (tunsec listens on "
                       f"{have or f'no IPv{fam} address'})")
    ports = self.sockets.ports
    for c in cfg.connections:
        if c.local_port not in ports:
            out.append(f"needs a restart: connection {c.name}: IKE on local_port {c.local_port} "
                       f"(tunsec listens on {', '.join(map(str, sorted(ports)))})")
    return out


async def reload(self: IkeService, cfg: Config) -> list[str]:
    """As swanctl --load-conns: IKE SAs of removed and changed connections are deleted (the peer
    is told), the changed and added ones start as configured; a connection that differs only in
    its credentials (PSK, certificates, keys) keeps its SAs and negotiates anew with the new ones."""
    d = diff_by_name(list(self.connections.values()), cfg.connections)
    creds = {new.name for old, new in d.changed if credentials_only(old, new)}
    replaced = [new for _, new in d.changed if new.name not in creds]
    gone = {c.name for c in d.removed} | {c.name for c in replaced}
    now = time.monotonic()
    for sa in self.endpoint.sas:
        if sa.name in gone and not sa.is_closed:
            with contextlib.suppress(Exception):
                sa.delete(now)
    await self._remove_traps(gone)
    for name in gone:
        self.attempts.pop(name, None)
    self.connections = {c.name: c for c in cfg.connections}
    self.endpoint.set_configs([c.ike for c in cfg.connections])
    self.ke_refill.reconfigure(c.ike for c in cfg.connections)   # pooled groups follow the proposals
    self._reload_radius(cfg.radius)
    if self._addr_watch is None:
        self._watch_addresses()   # a MOBIKE client connection may have been added
    self.sockets.close_unused(self.connections.values())
    self._pump()   # the DELETEs go out (the children's SAs leave the worker as they are confirmed)
    for conn in [*d.added, *replaced]:
        for ch in conn.children:
            if ch.start_action == "trap":
                await self.install_traps(only=(conn.name, ch.name))
            elif ch.start_action == "start":
                self.initiate(conn.name, ch.name)
    out = dataclasses.replace(d, changed=tuple((o, n) for o, n in d.changed if n.name not in creds)
                              ).summary("IKE connections")
    if creds:
        out.append(f"IKE connections with new credentials (for new negotiations): {', '.join(sorted(creds))}")
    return out
