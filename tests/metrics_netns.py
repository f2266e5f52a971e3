"""The real metrics endpoint in a network namespace of its own, lo's MTU Ethernet's (on loopback's
64 KiB the kernel's buffers grow to take a whole body): for tests of what the endpoint does with
clients that read slowly or never (tests/test_metrics_endpoint_close.py,
tests/test_review_revmetrics_slow_reader.py).  The parent runs a script with run(); the script,
in the namespace, starts the endpoint on SERVER:PORT with serve() and prints its result as JSON."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from typing import Any

from tunsec import metrics

SERVER, CLIENT, PORT = "192.0.2.1", "192.0.2.2", 9101
_SETUP = (f"ip link set lo up && ip link set lo mtu 1500 && ip addr add {SERVER}/32 dev lo && "
          f"ip addr add {CLIENT}/32 dev lo && exec \"$@\"")


def run(script: str) -> Any:
    """script's JSON line, run in a new network namespace with tests/ and src/ on its path (root)."""
    here = os.path.dirname(os.path.abspath(__file__))
    src = os.path.dirname(os.path.dirname(os.path.abspath(metrics.__file__)))
    code = f"import sys\nsys.path[:0] = {[here, src]!r}\n{script}"
    out = subprocess.run(["unshare", "--net", "sh", "-c", _SETUP, "sh", sys.executable, "-c", code],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


async def serve(clients: int) -> metrics.MetricsServer:
    """The endpoint on SERVER:PORT, its document the status of a gateway of that many clients."""
    import status_state

    from tunsec.conf.tunsec_section import ListenAddress
    from tunsec.dataplane import pipe
    from tunsec.status import status_document_sliced

    gw = status_state.gateway(clients)
    d = status_state.daemon(gw)

    async def dump() -> pipe.Reply:
        return gw.dump()

    async def document(reply: pipe.Reply) -> dict[str, Any]:
        return await status_document_sliced(d, reply, scrape=True)

    src = metrics.Source(dump=dump, document=document, events=lambda: None, worker_restarts=lambda: 0,
                         worker_pid=lambda: None)
    return await metrics.start(ListenAddress(ipaddress.ip_address(SERVER), PORT), src)
