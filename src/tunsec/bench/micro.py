"""The C benchmark entry points (csrc/bench.c): per-packet work looped in C, so
Python's call overhead does not hide the cost being measured (bench/test_micro_*.py).

They live in their own extension, tunsec.bench._cbench, built from the same
csrc/ sources and flags as the production module tunsec.dataplane._fastpath
but never loaded by the worker.  A Dataplane made by _fastpath is handed over by
address: both modules compile the same struct layouts.
"""

from __future__ import annotations

from typing import Any

from tunsec.bench._cbench import ffi, lib
from tunsec.dataplane.fastpath import Dataplane, DataplaneError


def _check(rc: int) -> int:
    if rc < 0:
        raise DataplaneError("bench", rc)
    return rc


def _dp(dp: Dataplane) -> Any:
    return ffi.cast("ts_dp *", dp.address)


def outbound(dp: Dataplane, packet: bytes, count: int) -> int:
    """Seal packet count times in one C call; packets sealed."""
    return _check(lib.ts_bench_outbound(_dp(dp), packet, len(packet), count))


def inbound(dp: Dataplane, udp_payload: bytes, count: int) -> int:
    """Open the same ESP packet count times in one C call (needs replay_window 0); packets opened."""
    return _check(lib.ts_bench_inbound(_dp(dp), udp_payload, len(udp_payload), count))


SPD_LOOKUPS = ("scan", "flow-cache", "index")


def spd_lookup(dp: Dataplane, packet: bytes, count: int, how: str) -> int:
    """Look packet's flow up in the SPD count times: scanning the ordered list, through a flow
    cache (hits after the first), or through the index alone (what each cache miss costs); hits."""
    return _check(lib.ts_bench_spd_lookup(_dp(dp), packet, len(packet), count, SPD_LOOKUPS.index(how)))


def sad_lookup(dp: Dataplane, spis: list[int], count: int) -> int:
    """count rounds of inbound SAD lookups of spis; hits."""
    arr = ffi.new("uint32_t[]", spis)
    return _check(lib.ts_bench_sad_lookup(_dp(dp), arr, len(spis), count))


def segment(read: bytes, count: int) -> int:
    """Segment one TUN read (virtio header + super-packet) count times in C; segments made."""
    return _check(lib.ts_bench_segment(read, len(read), count))


def gro(packets: list[bytes], count: int) -> int:
    """Coalesce packets count times in C; TUN writes made."""
    lens = ffi.new("uint32_t[]", [len(p) for p in packets])
    return _check(lib.ts_bench_gro(b"".join(packets), lens, len(packets), count))


def gcm(key: bytes, size: int, count: int) -> int:
    """OpenSSL's raw AES-GCM, keyed once, sealing a size-byte buffer count times in C."""
    buf = ffi.new("uint8_t[]", size + 16)
    return _check(lib.ts_bench_gcm(key, len(key), buf, size, count))
