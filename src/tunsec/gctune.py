"""The garbage collector's settings for a long-running tunsec process (control and worker).

Called once start-up is done.  What exists then (modules, the configuration, the services)
lives as long as the process: ``gc.freeze()`` takes it out of every later collection pass.
The generation thresholds go up so that the older generations are walked less often: every
IKE SA a gateway holds is a few dozen objects that survive into the oldest generation, and at
a thousand clients the default thresholds spent about a tenth of the control process's CPU
on collections during a burst of set-ups (bench/scale.py).  Objects without cycles are freed
by reference counting as before; only cyclic garbage waits a little longer.
"""

from __future__ import annotations

import gc

# gen0 every 10000 net allocations (default 700), gen1 every 20 gen0 passes (10), gen2 every
# 10 gen1 passes (10; CPython also waits until a quarter of the old objects are new)
THRESHOLDS = (10_000, 20, 10)


def settle() -> None:
    """Collect start-up's garbage, freeze what is left, raise the thresholds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
