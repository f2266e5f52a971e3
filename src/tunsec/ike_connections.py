"""From the parsed configuration's IKE connections to what the daemon runs."""

from __future__ import annotations

import dataclasses
import ipaddress
import secrets

from tunsec.config import Config
from tunsec.dataplane.pipe import Lifetime
from tunsec.ike.config import RetransmitConfig
from tunsec.ike.endpoint import DosLimits
from tunsec.ike_config import Child, Connection
from tunsec.services.ike import ChildPlan, IkeConnection


def _jitter(rekey: int, rand: int) -> int:
    """strongSwan's rekey limit: rekey minus a random part of rand, so both peers don't rekey at once."""
    if rekey <= 0:
        return 0
    return max(1, rekey - (secrets.randbelow(rand + 1) if rand > 0 else 0))


def child_plan(ch: Child) -> ChildPlan:
    return ChildPlan(
        name=ch.name,
        start_action=ch.start_action,
        close_action=ch.close_action,
        dpd_action=ch.dpd_action,
        replay_window=ch.replay_window,
        # rekeying on time is the engine's (ChildConfig.rekey_time); the dataplane
        # counts bytes and packets and reports the soft limits
        soft=Lifetime(bytes=_jitter(ch.rekey_bytes, ch.rand_bytes),
                      packets=_jitter(ch.rekey_packets, ch.rand_packets)),
        hard=Lifetime(bytes=ch.life_bytes, packets=ch.life_packets, seconds=ch.life_time),
    )


def ike_connection(c: Connection, retransmit: RetransmitConfig | None = None,
                   half_open_timeout: float | None = None) -> IkeConnection:
    ike = c.ike if retransmit is None else dataclasses.replace(c.ike, retransmit=retransmit)
    if half_open_timeout is not None:
        ike = dataclasses.replace(ike, half_open_timeout=half_open_timeout)
    return IkeConnection(ike=ike, children=tuple(child_plan(ch) for ch in c.children), local_port=c.local_port,
                         keyingtries=c.keyingtries)


def connections_from_config(cfg: Config) -> list[IkeConnection]:
    s = cfg.tunsec
    retransmit = RetransmitConfig(s.retransmit_timeout, s.retransmit_base, s.retransmit_tries)
    return [ike_connection(c, retransmit, s.half_open_timeout) for c in cfg.connections]


def dos_limits(cfg: Config) -> DosLimits:
    """The IKE endpoint's limits on unauthenticated IKE_SA_INIT requests (tunsec { })."""
    s = cfg.tunsec
    return DosLimits(cookie_threshold=s.cookie_threshold, half_open_limit=s.half_open_limit)


def ike_endpoints(conns: list[IkeConnection]) -> dict[int, str]:
    """Per outer family, the address IKE and ESP use: the connections' local_addrs, or any."""
    out: dict[int, str] = {}
    for c in conns:
        addr = c.ike.local_addr
        if addr:
            ip = ipaddress.ip_address(addr)
            wildcard = "0.0.0.0" if ip.version == 4 else "::"
            out[ip.version] = str(ip) if out.get(ip.version, str(ip)) == str(ip) else wildcard
            continue
        remote = c.ike.remote_addr
        fams = {ipaddress.ip_address(remote).version} if remote else {4, 6}
        for fam in fams:
            out.setdefault(fam, "0.0.0.0" if fam == 4 else "::")
    return out
