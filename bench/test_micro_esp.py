"""Microbenchmarks of the C fast path, each next to a reference on the same
buffers in the same run (pytest-benchmark groups them; compare the rows of a
group).  No thresholds: `make bench` prints the table and the ratios.

Reference: OpenSSL's AES-GCM through the `cryptography` package (AESGCM with
the key set up once, like an SA), on a buffer of the same size."""

from __future__ import annotations

import ipaddress
import os
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tunsec.bench import micro
from tunsec.dataplane.fastpath import Dataplane
from tunsec.dataplane.pipe import Action, Alg, Direction, Endpoint, Lifetime, Policy, SaSpec, Selector

SIZES = [64, 512, 1400, 8192]
A = ipaddress.ip_network("10.1.0.0/24")
B = ipaddress.ip_network("10.2.0.0/24")


def _udp_packet(size: int) -> bytes:
    """An IPv4/UDP packet of `size` bytes from A to B."""
    hdr = bytearray(28)
    hdr[0] = 0x45
    hdr[2:4] = size.to_bytes(2, "big")
    hdr[8], hdr[9] = 64, 17
    hdr[12:16] = bytes([10, 1, 0, 1])
    hdr[16:20] = bytes([10, 2, 0, 1])
    hdr[20:22], hdr[22:24] = (1000).to_bytes(2, "big"), (2000).to_bytes(2, "big")
    hdr[24:26] = (size - 20).to_bytes(2, "big")
    return bytes(hdr) + os.urandom(size - 28)


def _pair(key: bytes) -> tuple[Dataplane, Dataplane]:
    ep_a, ep_b = Endpoint(ipaddress.ip_address("192.0.2.1"), 4500), Endpoint(ipaddress.ip_address("192.0.2.2"), 4500)
    common: dict[str, Any] = dict(spi=0x1001, alg=Alg.AES128GCM16, key=key, esn=False, reqid=1,
                                  soft=Lifetime(), hard=Lifetime())
    tx, rx = Dataplane(), Dataplane()
    sel = Selector.from_networks(A, B)
    tx.add(SaSpec(direction=Direction.OUT, replay_window=0, local=ep_a, remote=ep_b, selectors=(sel,), **common))
    tx.spd_add(Policy(id=1, priority=1, action=Action.PROTECT, reqid=1, selector=sel))
    rx.getspi(0x1001, 0x1001)
    # replay off: the benchmark opens the same packet over and over
    rx.update(SaSpec(direction=Direction.IN, replay_window=0, local=ep_b, remote=ep_a,
                     selectors=(Selector.from_networks(A, B),), **common))
    return tx, rx


@pytest.mark.parametrize("size", SIZES)
def test_seal_tunsec(benchmark: Any, size: int) -> None:
    benchmark.group = f"seal {size}B"
    tx, _ = _pair(os.urandom(20))
    pkt = _udp_packet(size)
    esp, _peer, _drop, _icmp = benchmark(tx.outbound, pkt)
    assert len(esp) >= size + 32


@pytest.mark.parametrize("size", SIZES)
def test_seal_openssl_reference(benchmark: Any, size: int) -> None:
    benchmark.group = f"seal {size}B"
    key = os.urandom(16)
    aead, nonce, pkt = AESGCM(key), os.urandom(12), _udp_packet(size)
    out = benchmark(aead.encrypt, nonce, pkt, b"\0" * 8)
    assert len(out) == size + 16


@pytest.mark.parametrize("size", SIZES)
def test_open_tunsec(benchmark: Any, size: int) -> None:
    benchmark.group = f"open {size}B"
    tx, rx = _pair(os.urandom(20))
    esp, *_ = tx.outbound(_udp_packet(size))
    inner, drop = benchmark(rx.inbound, esp)
    assert len(inner) == size, drop


@pytest.mark.parametrize("size", SIZES)
def test_open_openssl_reference(benchmark: Any, size: int) -> None:
    benchmark.group = f"open {size}B"
    aead, nonce = AESGCM(os.urandom(16)), os.urandom(12)
    sealed = aead.encrypt(nonce, _udp_packet(size), b"\0" * 8)
    out = benchmark(aead.decrypt, nonce, sealed, b"\0" * 8)
    assert len(out) == size


# The same comparison without Python in the loop: 64 packets per C call,
# the batch size of the packet loop.
BATCH = 64


@pytest.mark.parametrize("size", SIZES)
def test_seal_tunsec_c_batch(benchmark: Any, size: int) -> None:
    benchmark.group = f"C batch of {BATCH}: seal {size}B"
    tx, _ = _pair(os.urandom(20))
    assert benchmark(micro.outbound, tx, _udp_packet(size), BATCH) == BATCH


@pytest.mark.parametrize("size", SIZES)
def test_open_tunsec_c_batch(benchmark: Any, size: int) -> None:
    benchmark.group = f"C batch of {BATCH}: open {size}B"
    tx, rx = _pair(os.urandom(20))
    esp, *_ = tx.outbound(_udp_packet(size))
    assert benchmark(micro.inbound, rx, esp, BATCH) == BATCH


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("op", ["seal", "open"])
def test_openssl_raw_c_batch(benchmark: Any, size: int, op: str) -> None:
    # GCM open costs what seal costs (same CTR + GHASH); one reference row per group
    benchmark.group = f"C batch of {BATCH}: {op} {size}B"
    assert benchmark(micro.gcm, os.urandom(16), size, BATCH) == BATCH
