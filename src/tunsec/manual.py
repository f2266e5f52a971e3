"""Manual keying (RFC 4301 §4.5): fixed SPIs and keys from the config,
installed through the same pipe messages IKE uses (GETSPI pins the inbound
SPI, UPDATE keys it, ADD installs the outbound SA)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from tunsec.config import Esp, ManualTunnel
from tunsec.dataplane.pipe import Alg, Direction, Endpoint, Lifetime, Policy, SaSpec
from tunsec.policy.spd import inbound_selectors, outbound_selectors, pairs, protect_policies

ALGS = {Esp.AES128GCM16: Alg.AES128GCM16, Esp.AES256GCM16: Alg.AES256GCM16}


@dataclass(frozen=True)
class ManualPlan:
    """What one manual tunnel puts into the worker."""

    tunnel: ManualTunnel
    reqid: int
    inbound: SaSpec
    outbound: SaSpec
    policies: tuple[Policy, ...]

    def with_reservations(self, inbound: tuple[int, int, int], outbound: tuple[int, int, int]) -> ManualPlan:
        """The same plan with each SA's (seq_start, seq_limit, seq_notify) from its persisted state."""
        def apply(sa: SaSpec, r: tuple[int, int, int]) -> SaSpec:
            return dataclasses.replace(sa, seq_start=r[0], seq_limit=r[1], seq_notify=r[2])

        return dataclasses.replace(self, inbound=apply(self.inbound, inbound), outbound=apply(self.outbound, outbound))


def plan(t: ManualTunnel, index: int) -> ManualPlan:
    """index (0-based) keeps reqids, policy ids and priorities apart per tunnel."""
    reqid = index + 1
    ps = pairs(t.local_ts, t.remote_ts)
    policies = protect_policies(t.name, ps, reqid, first_id=reqid * 100, priority=1000 + index)
    local = Endpoint(t.local_addr, t.local_port)
    remote = Endpoint(t.remote_addr, t.remote_port)
    soft = Lifetime(bytes=t.rekey_bytes, packets=t.rekey_packets, seconds=t.rekey_time)
    hard = Lifetime(bytes=t.life_bytes, packets=t.life_packets, seconds=t.life_time)
    alg = ALGS[t.esp]
    inbound = SaSpec(
        spi=t.spi_in, direction=Direction.IN, alg=alg, key=t.key_in.reveal(), esn=t.esn,
        replay_window=t.replay_window, reqid=reqid, local=local, remote=remote,
        soft=soft, hard=hard, selectors=inbound_selectors(ps),
    )
    outbound = SaSpec(
        spi=t.spi_out, direction=Direction.OUT, alg=alg, key=t.key_out.reveal(), esn=t.esn,
        replay_window=0, reqid=reqid, local=local, remote=remote,
        soft=soft, hard=hard, selectors=outbound_selectors(ps),
    )
    return ManualPlan(t, reqid, inbound, outbound, tuple(policies))
