"""Review revperf (s20) F3: while the host's addresses keep changing, the address watch never reports.

AddressWatch (services/addrwatch.py) calls ``changed()`` once ``settle`` seconds (0.1 s) passed
without an address event: every event re-arms the timer.  Events closer together than that
(an address that flaps, a DHCP or SLAAC client in a loop, RAs an on-link host sends with short
lifetimes, containers started one after another) postpone the report for as long as they go on.
Since h/fixclient the watch runs for every configuration and drives the engine's list of the
host's addresses (services/ike/host_addresses.py: REDIRECT targets, DNS servers, peers' moves), so
that list stays what it was before the churn began, however long it lasts (and a MOBIKE client
sends no UPDATE_SA_ADDRESSES meanwhile, as before).

The proof runs the real watch in a network namespace of its own (``unshare --net``) and changes an
address of lo every 50 ms for 2 s: no report comes during those 2 s.  A report at most some bound
after the first event of a burst (a maximum delay next to the settle) would come.
"""

from __future__ import annotations

import textwrap

from test_review_revperf_host_addresses import NEEDS_ROOT, run_in_own_netns

_CHILD = textwrap.dedent("""
    import asyncio, subprocess
    from tunsec.services.addrwatch import AddressWatch

    async def main():
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        loop = asyncio.get_running_loop()
        reports = []
        watch = AddressWatch(lambda: reports.append(loop.time()), settle=0.3)
        watch.start()
        start = loop.time()
        for i in range(40):                   # 2 s of changes, one every 50 ms (< settle)
            subprocess.run(["ip", "addr", "add" if i % 2 == 0 else "del", "10.77.0.1/32", "dev", "lo"], check=True)
            await asyncio.sleep(0.05)
        during = [t - start for t in reports]
        await asyncio.sleep(0.6)
        print("DURING", len(during), "AFTER", len(reports) - len(during))
        watch.close()

    asyncio.run(main())
""")


@NEEDS_ROOT
def test_the_address_watch_reports_while_changes_go_on() -> None:
    out = run_in_own_netns(_CHILD)
    words = out.split()
    during, after = int(words[1]), int(words[3])
    assert after >= 1, out   # the watch works: it reports once the changes stop
    assert during >= 1, f"2 s of address changes, no report until they stopped: {out}"
