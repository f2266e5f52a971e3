"""cffi builds of the C fast path (csrc/) against the system libcrypto.

API mode, out of line; setup.py compiles both:

- ``ffibuilder`` -> ``tunsec.dataplane._fastpath``, the production module: the
  fast path, cdef = csrc/tunsec_dp.h.
- ``benchbuilder`` -> ``tunsec.bench._cbench``, the benchmark entry points
  (csrc/bench.c, cdef = csrc/tunsec_bench.h) over their own copy of the same
  sources, so they never ship inside the module the worker loads.

A cdef is the header itself, minus preprocessor lines cffi cannot read, so the
two can never drift apart (and Python reads the C enums from it).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cffi import FFI

ROOT = Path(__file__).resolve().parents[3]
CSRC = ROOT / "csrc"
HEADER = CSRC / "tunsec_dp.h"
BENCH_HEADER = CSRC / "tunsec_bench.h"
SOURCES = ["dp.c", "esp.c", "replay.c", "sad.c", "spd.c", "icmp.c", "events.c", "loop.c", "offload.c"]
SOURCES += ["hold.c", "cmsg.c", "ikespi.c", "spdrange.c", "sandbox.c", "ownesp.c", "icmp_limit.c", "addrwatch.c"]
SOURCES += ["srcroute.c"]
BENCH_SOURCES = ["bench.c"]

CFLAGS = ["-std=c11", "-D_GNU_SOURCE", "-O2", "-Wall", "-Wextra", "-Werror"]


def _cdef(header: Path) -> str:
    text = header.read_text()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    keep = []
    for line in text.splitlines():
        s = line.strip()
        if s.startswith(("#ifndef", "#endif", "#include", "#define TUNSEC_DP_H", "#define TUNSEC_BENCH_H")):
            continue
        keep.append(line)
    return "\n".join(keep)


def _extra_cflags() -> list[str]:
    # TUNSEC_SANITIZE=1 builds the extension under ASan/UBSan for the CI run that needs it
    if os.environ.get("TUNSEC_SANITIZE"):
        return ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-O1", "-g"]
    return []


def _builder(module: str, include: str, cdef: str, sources: list[str]) -> FFI:
    b = FFI()
    b.cdef(cdef)
    b.set_source(
        module,
        f'#include "{include}"',
        sources=[str((CSRC / s).relative_to(ROOT)) for s in sources],
        include_dirs=[str(CSRC.relative_to(ROOT))],
        libraries=["crypto", "pthread"],
        extra_compile_args=CFLAGS + _extra_cflags(),
        extra_link_args=_extra_cflags(),
    )
    return b


ffibuilder = _builder("tunsec.dataplane._fastpath", HEADER.name, _cdef(HEADER), SOURCES)
# ts_dp stays opaque here: the bench module takes _fastpath's contexts by address
benchbuilder = _builder("tunsec.bench._cbench", BENCH_HEADER.name,
                        "typedef struct ts_dp ts_dp;\n" + _cdef(BENCH_HEADER), SOURCES + BENCH_SOURCES)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
    benchbuilder.compile(verbose=True)
