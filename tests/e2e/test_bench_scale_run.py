"""bench/scale.py's runs, at a tiny N, against both gateways (tests/benchrun.py says why benches are run
in tests): every client gets a distinct virtual IP and its ping answered, and the gateway and the
clients' charon are scheduled apart from the benchmark and from each other (scale.run_one says why).

About 10 s a gateway: two namespaces, a gateway and a client charon with 4 connections."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from tunsec.bench import scale
from tunsec.bench.netns import TwoHosts
from tunsec.bench.scale_clients import RoadWarriors
from tunsec.bench.scale_gateways import CharonGateway, Gateway, TunsecGateway

N = 4


def scheduling_group(pid: int) -> tuple[int, str]:
    """The session and, where the kernel schedules ``pid`` by autogroup, its autogroup.

    The file is absent without autogroup support, and empty when the task sits in a cpu cgroup of
    its own (as in CI's container): the kernel then schedules by that cgroup and the session alone
    tells the groups apart."""
    path = Path(f"/proc/{pid}/autogroup")
    fields = path.read_text().split() if path.exists() else []
    return os.getsid(pid), fields[0] if fields else ""


@pytest.mark.parametrize("kind", ["tunsec", "strongswan"])
def test_every_client_is_up_with_gateway_and_clients_scheduled_apart(kind: str) -> None:
    if (reason := scale.precheck()) is not None:
        pytest.fail(f"the scale benchmark cannot run here: {reason}")
    groups: dict[str, tuple[int, str]] = {}

    class Clients(RoadWarriors):
        def load(self) -> None:       # both are running now: where are they scheduled?
            assert self.proc is not None
            groups["clients"] = scheduling_group(self.proc.pid)
            groups["gateway"] = scheduling_group(gateway.pids()[0])
            super().load()

    with TwoHosts(ipv6=False, prefix="sc") as topo:
        psk = secrets.token_hex(16)
        gateway: Gateway = TunsecGateway(topo, psk, N) if kind == "tunsec" else CharonGateway(topo, psk, N)
        res = scale.run_clients(topo, gateway, Clients(topo, psk, N), 60.0)
    assert res.reason == ""
    assert (res.established, res.pinged, res.distinct_vips) == (N, N, N)
    # (not the CPU time: at N = 4 charon may use less than one clock tick, 10 ms, and read 0)
    assert res.t_established is not None and res.rss_after > 0
    mine = scheduling_group(os.getpid())
    assert len({mine, groups["clients"], groups["gateway"]}) == 3, groups
