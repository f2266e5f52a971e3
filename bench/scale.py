#!/usr/bin/env python3
"""Scale benchmark: N strongSwan road-warrior clients (one charon, N identities, a virtual IP
each) against a tunsec gateway and a strongSwan gateway, in network namespaces (needs root).

    python3 bench/scale.py --clients 100 1000 [--gateways tunsec strongswan] [--json out.json]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run from a source checkout without installing.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from tunsec.bench.scale import main

if __name__ == "__main__":
    sys.exit(main())
