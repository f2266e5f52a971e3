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

from test_ikeservice_peers import Gateway, run
from test_ikeservice_updown import event, lines, script, until, with_updown

from tunsec.ike.config import DEFAULT_MAX_IKE_SAS
from tunsec.services.ike.refusal_log import up_key
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


def test_a_peers_share_is_by_its_peer_key_and_a_run_waiting_for_it_holds_no_slot(tmp_path: Path) -> None:
    """Fix of review revpeerdos F1: three IKE SAs of one peer (the service's peer_key, whatever
    identity each shows) and three slots in all: two of the peer's scripts run, its third waits for
    its share without a slot, so another peer's script takes the third slot at once."""
    log, gate = tmp_path / "started.log", tmp_path / "gate"
    path = tmp_path / "updown.sh"
    path.write_text(f'#!/bin/sh\necho "$PLUTO_REQID" >> {log}\nwhile [ ! -e {gate} ]; do sleep 0.01; done\n')
    path.chmod(0o700)
    argv = (str(path),)

    async def body() -> None:
        tasks: set[asyncio.Task[None]] = set()
        scripts = Scripts(lambda coro: tasks.add(asyncio.ensure_future(coro)), parallel=3)
        for key in (1, 2, 3):   # one peer, three identities as shown (the key is what counts)
            assert scripts.submit(key, argv, dataclasses.replace(event(key, f"10.3.0.{key}"), peer_key=7))
        assert scripts.submit(4, argv, dataclasses.replace(event(4, "10.3.1.1"), peer_key=8))
        try:
            await until(lambda: "4" in lines(log))
            assert sorted(lines(log)) == ["1", "2", "4"]   # the peer's third waits for its share
        finally:
            gate.touch()
            await asyncio.wait(tasks)
        assert sorted(lines(log)) == ["1", "2", "3", "4"]

    run(body())


def test_the_service_runs_a_peers_scripts_in_its_identitys_share(tmp_path: Path) -> None:
    """Fix of review revpeerdos F1: the IKE service gives each up (and so its down) the peer's key
    of its IKE SA, as its log lines' (refusal_log.up_key: identity and proof, what
    max_ike_sas_per_identity counts; a name the client chose, as here a group PSK's, by connection and
    source since h/fixloglim)."""
    argv, log, _ = script(tmp_path)

    async def body() -> None:
        gw = Gateway(1, mobike=False)
        await gw.start()
        with_updown(gw, argv)
        gw.connect(0)
        await gw.settle()
        await until(lambda: len(lines(log)) == 1)
        (child,) = gw.children_of(0)
        (record,) = gw.service.ike_up.values()
        told = child.lineage.updown
        (sa,) = gw.service.endpoint.sas
        assert told is not None and told.peer_key == up_key(gw.service, sa, record.ev) is not None

    run(body())
