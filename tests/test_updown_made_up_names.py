"""updown's per-peer slots of names a client makes up (h/fixloglim; h/fixlog's item "updown's per-peer
slots ..., not changed").

updown.Scripts runs at most PER_PEER scripts of one peer at once, the peer being the service's key of
the IKE SA (ChildEvent.peer_key).  That key was trusted.peer_of: each name a group PSK's holder makes
up (and each IKE SA of an unproven eap-radius name) was a peer of its own, with a share of its own.
It is now refusal_log.up_key, the key of the log limits: such names share their source's.

A real IkeService and real scripts (/bin/sh); a hanging script waits for a file the test creates,
never for a time to pass.
"""

from __future__ import annotations

from pathlib import Path

from test_ikeservice_peers import Gateway, run, site_ip
from test_ikeservice_updown import lines, until, with_updown

from tunsec.updown import PER_PEER, peer_of_event

NAT = "198.51.100.200"


def _script(tmp_path: Path) -> tuple[tuple[str, ...], Path, Path]:
    """(argv, log, gate): a script that writes "start PEER_ID" as it starts; the group PSK's sites
    behind the NAT (all but site3) then wait for the gate."""
    log, gate = tmp_path / "updown.log", tmp_path / "gate"
    path = tmp_path / "updown.sh"
    path.write_text(f'#!/bin/sh\necho "start $PLUTO_PEER_ID" >> {log}\n'
                    f'if [ "$PLUTO_PEER_ID" != site3.example ]; then while [ ! -e {gate} ]; do sleep 0.01; done; fi\n'
                    f'echo "done $PLUTO_PEER_ID" >> {log}\n')
    path.chmod(0o700)
    return (str(path),), log, gate


def test_made_up_names_from_one_source_share_one_peers_updown_slots(tmp_path: Path) -> None:
    """Three clients of the gateway's group PSK behind one NAT, each naming itself as it likes
    (site0-2.example), their scripts hanging: PER_PEER (2) of them run, the third waits for the
    source's share; a fourth client from its own address runs at once.  On main each name had its
    own share: all three ran."""
    argv, log, gate = _script(tmp_path)
    assert PER_PEER == 2

    async def body() -> None:
        gw = Gateway(4, mobike=False)
        await gw.start()
        with_updown(gw, argv)
        for i in range(3):
            gw.nat[i] = (NAT, 40000 + i)
        try:
            for i in range(4):
                gw.connect(i)
            await gw.settle(wait_tasks=False)
            await until(lambda: "done site3.example" in lines(log))
            await until(lambda: len([line for line in lines(log) if line.startswith("start")]) >= 1 + PER_PEER)
            behind = [line for line in lines(log) if line.startswith("start") and line != "start site3.example"]
            assert len(behind) == PER_PEER, behind
            told = {ev.peer_id: peer_of_event(ev) for c in gw.service.children.values()
                    if (ev := c.lineage.updown) is not None}
            assert len(told) == 4 and len({told[f"site{i}.example"] for i in range(3)}) == 1
            assert told["site3.example"] == ("gw", site_ip(3)) != told["site0.example"] == ("gw", NAT)
        finally:
            gate.touch()   # the hanging scripts end, a failed assertion's too
        await until(lambda: len([line for line in lines(log) if line.startswith("done")]) == 4)

    run(body())
