"""The load's named-overlap warning (conf/named_overlap.py) looked up in sorted intervals finds what a
pass over every pair finds (review revtrap remark: that pass took 4.9 s at 2,000 x 1,000).

Random configurations: named connections (remote_ts subnets of 10.0.0.0/8, some with ports, some
``dynamic``; a few local sides) and %any connections (fixed remote_ts, some with a pool); the warned
keys are compared with a reference that tries every pair (for a pool: a named selector that lies
within it).  Guard of the index (passes before the
change for the fixed remote_ts, which is all the old pass compared).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import random

import pytest
from test_ikeservice_peers import GW, psk_ike

from tunsec.conf.connections import Connection
from tunsec.conf.named_claims import configured_selectors, pool_spans
from tunsec.conf.named_overlap import named_overlap_warnings
from tunsec.ike.config import RemoteAuth
from tunsec.ike.identity import Identity
from tunsec.policy.claims import locals_meet
from tunsec.policy.pools import PoolConfig
from tunsec.policy.selector import Ts

LOCALS = ["10.200.0.0/16", "10.201.0.0/16", "10.200.5.0/24", "dynamic"]
POOLS = [PoolConfig.parse_addrs("p0", "10.3.0.0/16"), PoolConfig.parse_addrs("p1", "10.77.128.0/20")]


def subnet(rng: random.Random) -> str:
    prefix = rng.choice([8, 12, 16, 20, 24, 28, 32])
    addr = ipaddress.ip_address(f"10.{rng.randrange(100)}.{rng.randrange(256)}.{rng.randrange(256)}")
    text = str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))
    return text + "[tcp/80]" if rng.random() < 0.1 else text


def configuration(rng: random.Random) -> list[Connection]:
    out = []
    for i in range(rng.randrange(1, 40)):
        remote = "dynamic" if rng.random() < 0.1 else ",".join(subnet(rng) for _ in range(rng.randrange(1, 3)))
        ike = psk_ike(f"n{i}", "gw.example", RemoteAuth("psk", Identity.parse(f"s{i}.example")), GW,
                      f"10.{rng.randrange(100)}.0.{i + 1}", rng.choice(LOCALS[:3]), remote)
        out.append(Connection(ike.name, ike))
    for j in range(rng.randrange(1, 40)):
        ike = psk_ike(f"a{j}", "gw.example", RemoteAuth("psk"), GW, None, rng.choice(LOCALS), subnet(rng))
        if rng.random() < 0.3:
            ike = dataclasses.replace(ike, pools=(rng.choice(POOLS).name,))
        out.append(Connection(ike.name, ike))
    return out


def hits(asked: list[Ts], local: tuple[Ts, ...], named: list[tuple[Ts, tuple[Ts, ...]]], inside: bool = False) -> bool:
    return any((t.contains(n) if inside else t.intersect(n) is not None) and locals_meet(local, nl)
               for t in asked for n, nl in named)


def every_pair(connections: list[Connection]) -> set[str]:
    """The keys a pass over every (%any child, named selector) pair warns (a pool: a named selector
    within it)."""
    named = [(t, local) for c in connections if c.ike.names_its_peer for _, remote, local in configured_selectors(c)
             for t in remote]
    spans = pool_spans(POOLS)
    out = set()
    for c in connections:
        if c.ike.names_its_peer:
            continue
        for child in c.children:
            local = child.config.local_ts
            if hits([t for t in child.config.remote_ts if not t.dynamic], local, named):
                out.add(f"connections.{c.name}.children.{child.name}.remote_ts")
            if hits([t for name in c.ike.pools for t in spans[name]], local, named, inside=True):
                out.add(f"connections.{c.name}.pools")
    return out


@pytest.mark.parametrize("seed", range(30))
def test_the_sorted_lookup_warns_what_every_pair_warns(seed: int) -> None:
    connections = configuration(random.Random(seed))
    warned = {w.key for w in named_overlap_warnings(connections, POOLS)}
    assert warned == every_pair(connections)
