#!/usr/bin/env python3
"""Throughput benchmark: tunsec vs plain veth, strongSwan kernel-libipsec,
wireguard-go and kernel XFRM, in two network namespaces (needs root).

    python bench/run.py [--runs 3] [--seconds 5] [--systems veth tunsec ...]
                        [--json out.json] [--png out.png]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run from a source checkout without installing.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from tunsec.bench.harness import main

if __name__ == "__main__":
    sys.exit(main())
