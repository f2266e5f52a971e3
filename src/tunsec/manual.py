"""Manual keying (RFC 4301 §4.5): fixed SPIs and keys from the config,
installed through the same pipe messages IKE uses (GETSPI pins the inbound
SPI, UPDATE keys it, ADD installs the outbound SA)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from tunsec.conf.manual import Esp, ManualTunnel
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

    def with_reservations(self, inbound: tuple[int, int, int], outbound: tuple[int, int, int]) -> ManualPlan:
        """The same plan with each SA's (seq_start, seq_limit, seq_notify) from its persisted state."""
        def apply(sa: SaSpec, r: tuple[int, int, int]) -> SaSpec:
            return dataclasses.replace(sa, seq_start=r[0], seq_limit=r[1], seq_notify=r[2])

        return dataclasses.replace(self, inbound=apply(self.inbound, inbound), outbound=apply(self.outbound, outbound))


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
