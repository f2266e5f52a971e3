"""``python -m tunsec.bench``: the throughput benchmark (see harness.main)."""

import sys

from tunsec.bench.harness import main

sys.exit(main(prog="python -m tunsec.bench"))
