"""Review revperf (s20) F2: an address the host gets while the service starts is never listed.

IkeService.start dumps the host's addresses (host_addresses.refresh) and only then starts the address
watch (_watch_addresses).  An address added after the dump read the kernel's list and before the
watch's netlink socket is bound makes no event the watch sees: endpoint.host_addresses lacks it
until some later change (on a quiet host: for good), and a REDIRECT to it (or a peer's move there)
is followed as to a stranger's (the very case of e2e/test_redirect_own_host_later.py, at start).

The proof runs two real IkeServices (test_ikeservice_rekey.Pair: the worker logic in process) in a
network namespace of their own (``unshare --net``: nothing of the host's is touched).  The dump is
the real one; right after it has read the addresses, an address is added to lo with ``ip``, as
another process (NetworkManager, a DHCP client, an administrator) would during the start.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

_CHILD = textwrap.dedent("""
    import asyncio, ipaddress, subprocess
    from test_ikeservice_rekey import Pair
    from tunsec.services.ike import service as service_mod
    from tunsec.services.ike import host_addresses

    LATE = ipaddress.ip_address("10.77.0.1")
    added = []

    def racing_dump():
        found = host_addresses.dump()          # the kernel's list, read
        if not added:                         # then an address comes (once), before the watch exists
            subprocess.run(["ip", "addr", "add", f"{LATE}/32", "dev", "lo"], check=True)
            added.append(LATE)
        return found

    real = service_mod.HostAddresses
    service_mod.HostAddresses = lambda endpoint: real(endpoint, source=racing_dump)

    async def main():
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        pair = Pair()
        await pair.start()
        for _ in range(30):                   # the watch's settle is 0.1 s; 3 s is plenty
            await asyncio.sleep(0.1)
            if LATE in pair.svc["a"].endpoint.host_addresses:
                break
        print("LISTED" if LATE in pair.svc["a"].endpoint.host_addresses else "MISSING",
              sorted(map(str, pair.svc["a"].endpoint.host_addresses)))
        for svc in pair.svc.values():
            svc.host_addresses.close()   # (the process ends: the rest goes with it)

    asyncio.run(main())
""")


NEEDS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="needs a network namespace of its own (root)")


def run_in_own_netns(code: str) -> str:
    """``code`` run by Python in a network namespace of its own (``unshare --net``); its stdout."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")]))
    done = subprocess.run(["unshare", "--net", sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@NEEDS_ROOT
def test_an_address_added_while_the_service_starts_is_listed() -> None:
    out = run_in_own_netns(_CHILD)
    assert "LISTED" in out, f"the address added during the start is not in host_addresses: {out}"
