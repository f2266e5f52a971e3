"""Review revupdown2 F2: during the stop (now up to 35 s long: h/fixupdown's drain of the
down-clients) the IKE service still answers IKE_SA_INIT and IKE_AUTH: a peer that connects, or
reconnects at once after the stop's DELETE (strongSwan's `close_action = start`, a road warrior's
client reconnecting), gets an IKE SA and a Child SA installed that the stop never deletes (its
DELETE round ran at its start) and which the process's exit leaves standing at the peer until its
DPD.  In the stop's first seconds (the wait for the DELETE answers, before the drain closes the
scripts' queue) its up-client even runs, and no down-client follows it.

Real scripts (/bin/sh) and a real IkeService with the fast path in process (test_ikeservice_peers's
Gateway).  Site 0's down-client waits for a gate (a file), so the stop is in its drain while site 1
connects; nothing waits for a time to pass.
"""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

from test_ikeservice_peers import Gateway, run
from test_ikeservice_updown import lines, with_updown


def _script(tmp_path: Path) -> tuple[tuple[str, ...], Path, Path]:
    """(argv, log, gate): logs "VERB PEER_ID"; site 0's down-client waits for the gate first."""
    log, gate = tmp_path / "updown.log", tmp_path / "gate"
    path = tmp_path / "updown.sh"
    path.write_text(f'#!/bin/sh\necho "$PLUTO_VERB $PLUTO_PEER_ID" >> {log}\n'
                    f'case "$PLUTO_VERB $PLUTO_PEER_ID" in "down-client site0.example")\n'
                    f'  while [ ! -e {gate} ]; do sleep 0.01; done;;\nesac\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return (str(path),), log, gate


def test_a_peer_connecting_during_the_stops_drain_gets_no_sa_the_stop_leaves_standing(tmp_path: Path) -> None:
    """Site 0 is up; tunsec stops; its down-client runs (and waits).  Meanwhile site 1 connects.
    When the stop has returned, the gateway must hold no IKE SA that is not closed (refused, or
    deleted as the others were), and every up-client that ran must have had its down-client.  On
    main site 1's IKE SA is established and stays so, and its up-client ran (the scripts' queue is
    closed only when the drain begins, after the 3 s wait for the DELETE answers, which site 1's
    half-open SA prolongs) with no down-client."""
    argv, log, gate = _script(tmp_path)

    async def body() -> tuple[list[str], list[str]]:
        gw = Gateway(2, mobike=False)
        await gw.start()
        with_updown(gw, argv)
        gw.connect(0)
        await gw.settle()
        assert lines(log) == ["up-client site0.example"]
        stop = asyncio.ensure_future(gw.service.shutdown())
        for _ in range(3000):   # until the stop is in its drain: site 0's down-client runs (bounded guard)
            await gw.settle(wait_tasks=False)
            if "down-client site0.example" in lines(log):
                break
            await asyncio.sleep(0.01)
        gw.connect(1)   # a peer (re)connecting while the stop waits for the down-clients
        for _ in range(20):
            await gw.settle(wait_tasks=False)
        gate.touch()
        while not stop.done():
            await gw.settle(wait_tasks=False)
            await asyncio.sleep(0.05)
        await stop
        left = [t for t in gw.service._tasks if not t.done()]
        for t in left:
            t.cancel()
        if left:
            await asyncio.wait(left)
        standing = [f"{sa.state.value} {sa.peer_id}" for sa in gw.service.endpoint.sas if not sa.is_closed]
        return standing, lines(log)

    try:
        standing, ran = run(body())
    finally:
        gate.touch()
    ups = sorted(line.split()[1] for line in ran if line.startswith("up-client"))
    downs = sorted(line.split()[1] for line in ran if line.startswith("down-client"))
    unpaired = [peer for peer in ups if peer not in downs]
    assert (standing, unpaired) == ([], []), f"SAs left standing, ups without their down; scripts: {ran}"
