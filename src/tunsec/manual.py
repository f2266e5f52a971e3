"""Manual keying (RFC 4301 §4.5): fixed SPIs and keys from the config,
installed through the same pipe messages IKE uses (GETSPI pins the inbound
SPI, UPDATE keys it, ADD installs the outbound SA)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from tunsec.config import Esp, ManualTunnel
from tunsec.dataplane.pipe import Alg, Direction, Endpoint, Lifetime, Policy, SaSpec
from tunsec.policy.ids import Band, IdSpace, priority
from tunsec.policy.spd import protect_policies, tunnel_selectors

ALGS = {Esp.AES128GCM16: Alg.AES128GCM16, Esp.AES256GCM16: Alg.AES256GCM16}


@dataclass(frozen=True)
class ManualPlan:
    """What one manual tunnel puts into the worker."""

    tunnel: ManualTunnel
    reqid: int
    inbound: SaSpec
    outbound: SaSpec
    policies: tuple[Policy, ...]

    def with_seq_start(self, seq: int) -> ManualPlan:
        """The same plan with the outbound sequence resumed at seq (worker restart)."""
        o = self.outbound
        out = SaSpec(
            spi=o.spi, direction=o.direction, alg=o.alg, key=o.key, esn=o.esn,
            replay_window=o.replay_window, reqid=o.reqid, local=o.local, remote=o.remote,
            soft=o.soft, hard=o.hard, selectors=o.selectors, seq_start=seq,
        )
        return ManualPlan(self.tunnel, self.reqid, self.inbound, out, self.policies)


def plan(t: ManualTunnel, index: int, ids: IdSpace) -> ManualPlan:
    """Reqid and policy ids come from ids; index (0-based, config order) orders the tunnels'
    policies within the manual band."""
    sels = tunnel_selectors(t.name, t.local_ts, t.remote_ts)
    reqid = ids.reqid()
    checked = protect_policies(sels, reqid, first_id=0, priority=priority(Band.MANUAL, index))
    policies = [dataclasses.replace(p, id=ids.policy_id()) for p in checked]
    local = Endpoint(t.local_addr, t.local_port)
    remote = Endpoint(t.remote_addr, t.remote_port)
    soft = Lifetime(bytes=t.rekey_bytes, packets=t.rekey_packets, seconds=t.rekey_time)
    hard = Lifetime(bytes=t.life_bytes, packets=t.life_packets, seconds=t.life_time)
    alg = ALGS[t.esp]
    inbound = SaSpec(
        spi=t.spi_in, direction=Direction.IN, alg=alg, key=t.key_in.reveal(), esn=t.esn,
        replay_window=t.replay_window, reqid=reqid, local=local, remote=remote,
        soft=soft, hard=hard, selectors=sels.inbound,
    )
    outbound = SaSpec(
        spi=t.spi_out, direction=Direction.OUT, alg=alg, key=t.key_out.reveal(), esn=t.esn,
        replay_window=0, reqid=reqid, local=local, remote=remote,
        soft=soft, hard=hard, selectors=sels.outbound,
    )
    return ManualPlan(t, reqid, inbound, outbound, tuple(policies))
