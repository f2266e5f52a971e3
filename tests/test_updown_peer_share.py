"""Review revpeerdos F1 (proof): one identity's IKE SAs take every updown slot of the gateway.

updown.Scripts runs each IKE SA's events one at a time and IKE SAs side by side, at most
PARALLEL (8) scripts at once, service-wide; its docstring promises that "a client whose script
hangs holds up its own events only (until UPDOWN_TIMEOUT), never another client's".  The slots
are shared by IKE SA, not by peer: one identity may hold max_ike_sas_per_identity IKE SAs
(default 8, as many as PARALLEL), so one client whose scripts hang (or take long: the peer
chooses how often it creates and deletes Child SAs) holds every slot, and every other client's
up-client (its firewall rules, its routes) waits behind it, up to UPDOWN_TIMEOUT per round.

Real scripts (/bin/sh); the hang waits for a file the test creates, never for a time to pass.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from test_ikeservice_peers import run
from test_ikeservice_updown import event, lines, script, until

from tunsec.ike.config import DEFAULT_MAX_IKE_SAS
from tunsec.updown import PARALLEL, Scripts


def test_one_identitys_ike_sas_leave_another_clients_up_client_a_slot(tmp_path: Path) -> None:
    """Mallory holds the default max_ike_sas_per_identity IKE SAs, each with a Child SA whose
    up-client hangs (until the gate opens); Alice's up-client must still run meanwhile.  On main
    Alice's waits for a free slot, i.e. for Mallory's scripts to end (UPDOWN_TIMEOUT each)."""
    argv, log, gate = script(tmp_path, hang_if='[ "$PLUTO_PEER_ID" = mallory ]')
    assert DEFAULT_MAX_IKE_SAS >= PARALLEL   # the defaults let one identity fill every slot

    async def body() -> None:
        tasks: set[asyncio.Task[None]] = set()
        scripts = Scripts(lambda coro: tasks.add(asyncio.ensure_future(coro)))
        for key in range(1, DEFAULT_MAX_IKE_SAS + 1):   # one IKE SA each, one identity
            assert scripts.submit(key, argv, dataclasses.replace(event(key, f"10.3.0.{key}"), peer_id="mallory"))
        alice = DEFAULT_MAX_IKE_SAS + 1
        assert scripts.submit(alice, argv, dataclasses.replace(event(alice, "10.3.1.1"), peer_id="alice"))
        try:
            await until(lambda: any(line.startswith("up-client alice") for line in lines(log)))
            assert lines(log) == [f"up-client alice {alice} 10.3.1.1/32"]   # Mallory's still hang
        finally:
            gate.touch()   # a failure must not leave the loop waiting for the scripts
            await asyncio.wait(tasks)
        assert sorted(line.split()[1] for line in lines(log)) == ["alice"] + ["mallory"] * DEFAULT_MAX_IKE_SAS

    run(body())
