"""The fast path's SipHash-2-4 for the control process: the tags in our IKE SPIs (tunsec/ike/spi_tag.py).

The pure-Python SipHash cost ~115k instructions per IKE SA more than this cffi call (callgrind,
bench/ike_burst.py), ~3% of the control process's instructions per road-warrior client.  The IKE
service takes ``siphash24()`` for its IkeSpiTag, so ike/ stays free of the compiled module (and
importable without it); spi_tag.py's own SipHash is the reference the tests hold this one to, and
what a tree without the built module falls back to (the worker cannot run there anyway)."""

from __future__ import annotations

from typing import Any

from tunsec.ike.spi_tag import SipHash, siphash24_bytes

_lib: Any = None
try:
    from tunsec.dataplane import _fastpath
    _lib = _fastpath.lib
except ImportError:   # not built: the reference SipHash does the same, slower
    pass


def compiled(key: bytes, data: bytes) -> int:
    """SipHash-2-4 of data under key (16 bytes: two little-endian words), in C (csrc/ikespi.c).

    The key goes to C as a bare pointer, which reads 16 bytes whatever it points to: anything but 16
    bytes is refused here rather than read past its end (data goes with its length)."""
    if type(key) is not bytes or len(key) != 16 or type(data) is not bytes:
        what = f"{len(key)}-byte key" if type(key) is bytes else f"{type(key).__name__} key"
        raise ValueError(f"SipHash takes a 16-byte key and bytes: a {what} and {type(data).__name__} given")
    h: int = _lib.ts_siphash24_bytes(key, data, len(data))
    return h


def siphash24() -> SipHash:
    """The compiled SipHash if the fast path's module loads, else spi_tag.py's."""
    return siphash24_bytes if _lib is None else compiled
