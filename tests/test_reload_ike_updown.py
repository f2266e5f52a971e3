"""``tunsec reload`` and the Child SAs it outlives: a Child SA keeps the settings it came up with
(updown script, lifetimes, replay window), so a reload that removes its connection or renames its
child still runs the script's ``down`` for the ``up`` it ran, and an answer to one of our rekeys
read after such a reload is handled like any other; an engine event whose handling fails costs
nothing but itself (the rest of the worker's batch, another peer's IKE, is still handled).

The gateway of test_reload_ike: a real IkeService fed from the file through the daemon's reload
command, the worker's logic in-process, the sites IKE engines wired to it in memory."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import pwd
from pathlib import Path
from typing import Any

import pytest
from test_ikeservice_peers import GW, _now, run, site_ip
from test_reload_ike import SECRET, ConfiguredGateway, down_events

from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Endpoint
from tunsec.ike.events import ChildSaUp, DownReason, PeerUnreachable
from tunsec.ike.sa import State


def conn(name: str, site: int, script: Path, child: str = "net") -> str:
    return f"""  {name} {{ local_addrs = {GW}
       remote_addrs = {site_ip(site)}
       local {{ auth = psk
               id = gw.example }}
       remote {{ auth = psk
                id = site{site}.example }}
       children {{ {child} {{ local_ts = 10.1.0.0/16
                        remote_ts = 10.2.{site + 1}.0/24
                        esp_proposals = aes128gcm16
                        updown = {script} }} }} }}
"""


def conf(*conns: str) -> str:
    return ("tunsec { control_socket = /nonexistent/tunsec.sock }\nconnections {\n" + "".join(conns) + "}\n"
            f"secrets {{ ike {{ secret = {SECRET} }} }}\n")


@pytest.fixture
def updown(tmp_path: Path) -> tuple[Path, Path]:
    """A script that logs its verb, child and peer; and that log."""
    log = tmp_path / "updown.log"
    script = tmp_path / "updown.sh"
    script.write_text(f'#!/bin/sh\necho "$PLUTO_VERB $PLUTO_CONNECTION $PLUTO_PEER" >> {log}\n')
    script.chmod(0o755)
    return script, log


async def started(tmp_path: Path, text: str, n: int = 2) -> ConfiguredGateway:
    """The gateway with ``text`` (its file swanctl.conf), started, no site connected yet."""
    gw = ConfiguredGateway(n)
    gw.path = tmp_path / "swanctl.conf"
    gw.path.write_text(text)
    await gw.start()
    return gw


async def gateway(tmp_path: Path, text: str, n: int = 2) -> tuple[ConfiguredGateway, list[dict[str, Any]]]:
    """The gateway with ``text``, its sites connected; and what the event loop's exception handler got
    (a task that raised, never retrieved)."""
    loop_errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: loop_errors.append(ctx))
    gw = await started(tmp_path, text, n)
    for i in range(n):
        gw.connect(i)
    await gw.settle()
    return gw, loop_errors


def lines(log: Path) -> list[str]:
    """What the script logged (its runs are the service's tasks: a settled gateway has run them all)."""
    return log.read_text().splitlines() if log.exists() else []


def test_down_runs_for_the_children_of_a_removed_connection_and_of_a_renamed_child(
        tmp_path: Path, updown: tuple[Path, Path]) -> None:
    script, log = updown

    async def body() -> None:
        gw, loop_errors = await gateway(tmp_path, conf(conn("a", 0, script), conn("b", 1, script)))
        up = lines(log)
        assert sorted(up) == [f"up-client net {site_ip(0)}", f"up-client net {site_ip(1)}"]
        # a removed; b's child renamed (net -> lan): both Child SAs go
        answer = await gw.reload(conf(conn("b", 1, script, child="lan")))
        assert answer == {"ok": True, "message": "IKE connections removed: a\nIKE connections replaced: b"}
        assert [e.reason for e in down_events(gw, 0)] == [DownReason.DELETED_BY_PEER]
        after = lines(log)
        assert len(after) == 4
        assert sorted(after[2:]) == [f"down-client net {site_ip(0)}", f"down-client net {site_ip(1)}"]
        assert loop_errors == [] and gw.service.event_errors == 0

    run(body())


def test_an_answer_to_our_rekey_read_after_a_reload_renamed_the_child_is_handled_and_so_is_the_rest_of_the_batch(
        tmp_path: Path, updown: tuple[Path, Path]) -> None:
    script, log = updown

    async def body() -> None:
        gw, loop_errors = await gateway(tmp_path, conf(conn("b", 0, script), conn("c", 1, script)))
        svc = gw.service
        sa = next(s for s in svc.endpoint.sas if s.name == "b")
        sa.rekey_child(sa.children[0].unique_id)
        svc._pump()   # our CREATE_CHILD_SA is out
        assert len(gw.wire) == 1
        gw.path.write_text(conf(conn("b", 0, script, child="lan"), conn("c", 1, script)))
        answer = await gw.daemon._command(b'{"cmd": "reload"}')   # (gw.reload would deliver the rekey)
        assert answer == {"ok": True, "message": "IKE connections replaced: b"}
        # site 0 answers the rekey; site 1 asks whether we are alive: one read of the worker has both
        _src, dst, request = gw.wire.pop(0)
        gw.sites[0].receive(request, (GW, 4500), _now(), dst)
        gw.sites[1].sas[0].send_liveness()
        batch = [pipe.Ike(data=d.data, remote=Endpoint(ipaddress.ip_address(site_ip(i)), 4500))
                 for i in (0, 1) for d in gw.sites[i].datagrams_to_send(_now())]
        assert len(batch) == 2
        for msg in batch:   # as WorkerClient._readable hands a batch's events over
            assert svc.on_event(msg)
        assert any(dst == (site_ip(1), 4500) for _, dst, _ in gw.wire)   # site 1 is answered
        await gw.settle()
        rekeyed = [e for e in gw.site_events[0] if isinstance(e, ChildSaUp)]
        assert len(rekeyed) == 2 and [e.reason for e in down_events(gw, 0)] == [DownReason.DELETED_BY_PEER]
        assert not [e for e in gw.site_events[1] if isinstance(e, PeerUnreachable)]
        assert gw.sites[1].sas[0].state is State.ESTABLISHED and len(gw.children_of(1)) == 1
        assert gw.children_of(0) == []
        assert lines(log)[2:] == [f"down-client net {site_ip(0)}"]
        assert loop_errors == [] and svc.event_errors == 0

    run(body())


PEER_DATA = "what the peer sent"


def test_an_event_whose_handling_fails_is_logged_once_and_the_others_are_handled(
        tmp_path: Path, updown: tuple[Path, Path], caplog: pytest.LogCaptureFixture) -> None:
    """A bug in handling one peer's event (injected: site 0's ChildSaUp raises) costs that event
    only: site 1's, handled in the same pump, still gets its Child SA installed and its answer."""
    script, _log = updown

    async def body() -> None:
        gw = await started(tmp_path, conf(conn("b", 0, script), conn("c", 1, script)))
        svc = gw.service
        real = svc._child_registered

        def registered(sa: Any, ev: ChildSaUp) -> Any:
            if ev.name == "b":
                raise RuntimeError(PEER_DATA)
            return real(sa, ev)
        svc._child_registered = registered  # type: ignore[method-assign]
        gw.connect(0)
        gw.connect(1)
        await gw.settle()
        assert svc.event_errors == 1 and gw.children_of(0) == [] and len(gw.children_of(1)) == 1
        logged = [r.getMessage() for r in caplog.records if "internal error" in r.getMessage()]
        assert len(logged) == 1 and logged[0].startswith("b: handling ChildSaUp failed: internal error RuntimeError\n")
        assert PEER_DATA not in caplog.text   # an exception's text may quote a peer's data: never logged

    with caplog.at_level(logging.ERROR, "tunsec.ike"):
        run(body())


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (the script handed to another user)")
def test_a_reload_refuses_a_script_someone_else_may_change_and_keeps_the_running_one(
        tmp_path: Path, updown: tuple[Path, Path]) -> None:
    """The reload runs as this process, which runs the scripts (root here): a script the service user may
    change is refused with the path, its owner and the fix, and nothing changes (scriptfile.py)."""
    script, log = updown
    theirs = tmp_path / "theirs.sh"
    theirs.write_text(script.read_text())
    theirs.chmod(0o755)
    os.chown(theirs, pwd.getpwnam("tunsec").pw_uid, -1)

    async def body() -> None:
        gw, loop_errors = await gateway(tmp_path, conf(conn("a", 0, script)), n=1)
        answer = await gw.reload(conf(conn("a", 0, theirs)))
        assert answer["ok"] is False, answer
        assert (f"refusing updown script {theirs} (connections.a.children.net.updown): {theirs} is owned by tunsec"
                in answer["error"]), answer
        assert f"as root, chown root {theirs}; chmod go-w {theirs}" in answer["error"], answer
        assert gw.daemon.cfg.connections[0].children[0].updown == (str(script),)
        assert lines(log) == [f"up-client net {site_ip(0)}"] and loop_errors == []

    run(body())


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (the script handed to another user)")
def test_a_script_handed_to_another_user_while_tunsec_runs_is_not_run(
        tmp_path: Path, updown: tuple[Path, Path], caplog: pytest.LogCaptureFixture) -> None:
    """Accepted at start; once the service user may change it, the next Child SA's up-client is not run (each
    run checks again, scriptfile.launch), logged with the fix; the IKE SA comes up all the same."""
    script, log = updown

    async def body() -> None:
        gw = await started(tmp_path, conf(conn("a", 0, script), conn("b", 1, script)))
        gw.connect(0)
        await gw.settle()
        assert lines(log) == [f"up-client net {site_ip(0)}"]
        os.chown(script, pwd.getpwnam("tunsec").pw_uid, -1)
        with caplog.at_level(logging.ERROR, "tunsec.updown"):
            gw.connect(1)
            await gw.settle()
        assert lines(log) == [f"up-client net {site_ip(0)}"] and len(gw.children_of(1)) == 1
        assert f"not run: refusing updown script {script}: {script} is owned by tunsec" in caplog.text, caplog.text

    run(body())
