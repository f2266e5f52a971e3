"""Review revlate8 F2: addresses the kernel only changed, more than 16 read in one turn, tell the worker
"any address".

h/fixwatch moved the worker's address watch into the control process (services/addr_feed.py): one
ADDR_ADDED per event-loop turn names up to 16 addresses, and a turn that read more names none -- any --
so that every SA whose source address the kernel refused tries it again with its next message.  The
worker's own watch read one datagram at a time (the kernel multicasts each notice alone), so its "more
than 16" never came from the kernel; the feed sums every datagram of a turn (up to 64).  And it counts
every RTM_NEWADDR that is not tentative, though its docstring says "Only an address added counts: not
one changed (the kernel sends RTM_NEWADDR for `ip addr change` and each SLAAC renewal, which anyone on
the link may cause)": a router advertisement renewing 17 SLAAC addresses (16 prefixes and their
temporary addresses, on a client's Wi-Fi, say) is one "any" per advertisement, and each costs every SA
whose source stays gone one more refused send (review revnatt F2, which made the worker's watch count
an SA's own address alone).

Real netlink in a network namespace of the test's own: 17 IPv6 addresses added on lo while the feed
watches (each told by name), then their lifetimes changed in one batch (`ip -6 address change`, what an
RA does to SLAAC addresses): no address was added, and the worker must not be told "any", nor any
address again."""

from __future__ import annotations

import json

from test_review_revperf_host_addresses import NEEDS_ROOT, run_in_own_netns

_CHANGED = """
import asyncio, json, subprocess
from tunsec.services.addr_feed import AddressFeed

class Worker:
    told = []
    def notify(self, msg):
        self.told.append([str(a) for a in msg.addrs] or ["any"])
        return True

ADDRS = [f"2001:db8:8::{n:x}" for n in range(1, 18)]

def batch(verb, life):
    lines = "".join(f"address {verb} {a}/64 dev lo nodad {life}\\n" for a in ADDRS)
    subprocess.run(["ip", "-6", "-batch", "-"], input=lines, text=True, check=True)

async def main():
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    worker = Worker()
    feed = AddressFeed(lambda: worker)
    feed.start()
    # watched from before the adds: the kernel sends an IPv6 address's RTM_NEWADDR from its DAD work,
    # queued, even with nodad, so a watch opened after `ip` returned may still read some of them
    batch("add", "valid_lft 1000 preferred_lft 500")
    for _ in range(500):
        if len({a for told in worker.told for a in told}) >= len(ADDRS):
            break
        await asyncio.sleep(0.01)
    before = list(worker.told)
    batch("change", "valid_lft 2000 preferred_lft 1500")   # the loop waits: one turn reads them all
    for _ in range(100):
        await asyncio.sleep(0.01)
    print(json.dumps({"before": before, "after": worker.told[len(before):]}))
    feed.close()

asyncio.run(main())
"""


ADDED = [f"2001:db8:8::{n:x}" for n in range(1, 18)]


@NEEDS_ROOT
def test_addresses_only_renewed_do_not_tell_the_worker_any_address() -> None:
    out = json.loads(run_in_own_netns(_CHANGED).splitlines()[-1])
    assert sorted({a for told in out["before"] for a in told}) == sorted(ADDED), out   # each add told by name
    assert ["any"] not in out["after"], (
        f"17 addresses whose lifetimes changed (none added) told the worker any address, so every SA whose "
        f"source is gone pays one more refused send: {out}")
    assert out["after"] == [], f"addresses only renewed were told as added: {out}"
