"""Microbenchmarks of the fast path's tables and offloads, each next to its
reference in the same run: SAD lookups with 10,000 SAs (vs 1 SA), SPD lookups
with 1,000 host policies through the flow cache and through the index, and with 1,000 range
policies (a hub's subnet per spoke) through the index (each vs scanning the list), TSO
segmentation and GRO coalescing of a 64 KiB burst (vs sealing the same bytes
with OpenSSL, the work they sit next to)."""

from __future__ import annotations

import ipaddress
import os
import struct
from typing import Any

import pytest

from tunsec.bench import micro
from tunsec.dataplane.fastpath import Dataplane, vnet_segment
from tunsec.dataplane.pipe import Action, Alg, Direction, Endpoint, Lifetime, Policy, SaSpec, Selector

ROUNDS = 100


def _dp_with_sas(n: int) -> tuple[Dataplane, list[int]]:
    dp = Dataplane()
    ep = Endpoint(ipaddress.ip_address("192.0.2.2"), 4500)
    spis = []
    for _ in range(n):
        spi = dp.getspi()
        dp.update(SaSpec(spi=spi, direction=Direction.IN, alg=Alg.AES128GCM16, key=os.urandom(20), esn=False,
                         replay_window=64, reqid=1, local=ep, remote=ep, soft=Lifetime(), hard=Lifetime(),
                         selectors=()))
        spis.append(spi)
    return dp, spis


@pytest.mark.parametrize("n_sas", [1, 10_000])
def test_sad_lookup(benchmark: Any, n_sas: int) -> None:
    benchmark.group = "SAD: 1000 inbound lookups"
    dp, spis = _dp_with_sas(n_sas)
    probe = (spis * (1000 // len(spis) + 1))[:1000]
    assert benchmark(micro.sad_lookup, dp, probe, 1) == 1000


def _packet(dst_last: int, third: int = 0) -> bytes:
    hdr = bytearray(40)
    hdr[0], hdr[2:4], hdr[8], hdr[9] = 0x45, (40).to_bytes(2, "big"), 64, 6
    dst = bytes([10, 2, dst_last >> 8, dst_last & 0xFF]) if not third else bytes([10, third >> 8, third & 0xFF, 7])
    hdr[12:16], hdr[16:20] = bytes([10, 1, 0, 1]), dst
    return bytes(hdr)


def _dp_with_policies(n: int) -> Dataplane:
    dp = Dataplane()
    src = ipaddress.ip_network("10.1.0.0/24")
    for i in range(n):
        dst = ipaddress.ip_network(f"10.2.{i >> 8}.{i & 0xFF}/32")
        dp.spd_add(Policy(id=i + 1, priority=i, action=Action.PROTECT, reqid=1,
                          selector=Selector.from_networks(src, dst)))
    return dp


def _dp_with_range_policies(n: int) -> Dataplane:
    # a hub: one /24 per spoke (10.0.0.0/24 .. 10.3.231.0/24 at 1,000), the hub's subnet as source
    dp = Dataplane()
    src = ipaddress.ip_network("10.1.0.0/24")
    for i in range(n):
        dst = ipaddress.ip_network(f"10.{i >> 8}.{i & 0xFF}.0/24")
        dp.spd_add(Policy(id=i + 1, priority=i, action=Action.PROTECT, reqid=1,
                          selector=Selector.from_networks(src, dst)))
    return dp


@pytest.mark.parametrize("how", ["scan", "index"])
def test_spd_lookup_1000_range_policies(benchmark: Any, how: str) -> None:
    # what a flow-cache miss costs when the policies are subnets, not hosts: the ratio of the two
    # cases is the range index's gain
    benchmark.group = "SPD: 1000 range policies, last one matches, x100"
    dp = _dp_with_range_policies(1000)
    pkt = _packet(0, third=999)
    assert benchmark(micro.spd_lookup, dp, pkt, ROUNDS, how) == ROUNDS


@pytest.mark.parametrize("how", micro.SPD_LOOKUPS)
def test_spd_lookup_1000_policies(benchmark: Any, how: str) -> None:
    # "index" is what a flow-cache miss costs (packets with new or random ports), "scan" what it cost
    # before the index
    benchmark.group = "SPD: 1000 policies, last one matches, x100"
    dp = _dp_with_policies(1000)
    pkt = _packet(999)
    assert benchmark(micro.spd_lookup, dp, pkt, ROUNDS, how) == ROUNDS


def _tso_read(payload_len: int, mss: int) -> bytes:
    from scapy.layers.inet import IP, TCP

    pkt = bytes(IP(src="10.1.0.1", dst="10.2.0.1") / TCP(sport=1, dport=2, flags="A") / os.urandom(payload_len))
    return struct.pack("<BBHHHH", 1, 1, 40, mss, 20, 16) + pkt


def test_gso_segmentation_64k(benchmark: Any) -> None:
    benchmark.group = "64 KiB burst"
    read = _tso_read(1388 * 47, 1388)
    assert benchmark(micro.segment, read, 1) == 47


def test_gro_coalescing_64k(benchmark: Any) -> None:
    benchmark.group = "64 KiB burst"
    segs = vnet_segment(_tso_read(1388 * 47, 1388))
    assert segs is not None
    assert benchmark(micro.gro, segs, 1) == 1


def test_openssl_seal_same_bytes_reference(benchmark: Any) -> None:
    benchmark.group = "64 KiB burst"
    # what ESP does to the same burst: 47 packets of 1428 bytes through AES-GCM
    assert benchmark(micro.gcm, os.urandom(16), 1428, 47) == 47
