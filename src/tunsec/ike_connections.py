"""From the parsed configuration's IKE connections to what the daemon runs."""

from __future__ import annotations

import ipaddress

from tunsec.config import Config
from tunsec.ikeservice import IkeConnection


def connections_from_config(cfg: Config) -> list[IkeConnection]:
    """The IKE connections of cfg (empty until the config knows `connections`)."""
    return list(getattr(cfg, "connections", ()))


def ike_endpoints(conns: list[IkeConnection]) -> dict[int, str]:
    """Per outer family, the address IKE and ESP use: the connections' local_addrs, or any."""
    out: dict[int, str] = {}
    for c in conns:
        addr = c.ike.local_addr
        fams = {4, 6}
        if addr:
            try:
                ip = ipaddress.ip_address(addr)
            except ValueError:
                ip = None
            if ip is not None:
                if out.get(ip.version, str(ip)) != str(ip):
                    out[ip.version] = "0.0.0.0" if ip.version == 4 else "::"
                else:
                    out[ip.version] = str(ip)
                continue
        remote = c.ike.remote_addr
        with_remote = {ipaddress.ip_address(remote).version} if remote and remote != "%any" else fams
        for fam in with_remote:
            out.setdefault(fam, "0.0.0.0" if fam == 4 else "::")
    return out
