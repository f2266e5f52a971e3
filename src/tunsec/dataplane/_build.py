"""cffi build of the C fast path (csrc/) against the system libcrypto.

API mode, out of line: setuptools compiles it as ``tunsec.dataplane._fastpath``
(see setup.py).  The cdef is the public header itself, minus preprocessor
lines cffi cannot read, so the two can never drift apart.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cffi import FFI

ROOT = Path(__file__).resolve().parents[3]
CSRC = ROOT / "csrc"
HEADER = CSRC / "tunsec_dp.h"
SOURCES = ["dp.c", "esp.c", "replay.c", "sad.c", "spd.c", "icmp.c", "events.c", "loop.c", "offload.c", "bench.c"]
SOURCES += ["hold.c"]

CFLAGS = ["-std=c11", "-D_GNU_SOURCE", "-O2", "-Wall", "-Wextra", "-Werror"]


def _cdef() -> str:
    text = HEADER.read_text()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    keep = []
    for line in text.splitlines():
        s = line.strip()
        if s.startswith(("#ifndef", "#endif", "#include", "#define TUNSEC_DP_H")):
            continue
        keep.append(line)
    return "\n".join(keep)


def _extra_cflags() -> list[str]:
    # TUNSEC_SANITIZE=1 builds the extension under ASan/UBSan for the CI run that needs it
    if os.environ.get("TUNSEC_SANITIZE"):
        return ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-O1", "-g"]
    return []


ffibuilder = FFI()
ffibuilder.cdef(_cdef())
ffibuilder.set_source(
    "tunsec.dataplane._fastpath",
    '#include "tunsec_dp.h"',
    sources=[str((CSRC / s).relative_to(ROOT)) for s in SOURCES],
    include_dirs=[str(CSRC.relative_to(ROOT))],
    libraries=["crypto", "pthread"],
    extra_compile_args=CFLAGS + _extra_cflags(),
    extra_link_args=_extra_cflags(),
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
