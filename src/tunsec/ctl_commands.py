"""The control socket's side in the daemon: one client's connection (its slot, deadline and line), and
what each command does (status, reload, initiate, terminate, unban).  The socket's protocol and its
limits are ctlsocket.py's; who may ask for what, control_gate's.  Functions of the Daemon, bound to it
as its methods (daemon.py: ``_serve_client = ctl_commands.serve_client``)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from tunsec import ctlsocket, reroute
from tunsec.conf.connections import find_child
from tunsec.dataplane.client import WorkerError
from tunsec.loglimit import internal_error, os_failure, suffix
from tunsec.services.ike.commands import joined_answer
from tunsec.status import status_document_sliced

if TYPE_CHECKING:
    from tunsec.daemon import Daemon

log = logging.getLogger("tunsec")


async def serve_client(self: Daemon, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        peer = ctlsocket.peer_of(writer.get_extra_info("socket"))
    except OSError:
        writer.transport.abort()
        return
    if (busy := self.ctl_slots.take(peer.uid)) is not None:
        self.ctl_counts.busy += 1
        self._ctl_log("control socket: %s (pid %d, uid %d)", busy, peer.pid, peer.uid)
        writer.write(ctlsocket.encode({"ok": False, "error": busy}))   # a line: the socket's buffer takes it
        writer.close()
        return
    try:
        async with asyncio.timeout(ctlsocket.DEADLINE) as deadline:
            await self._exchange(reader, writer, peer, deadline)
            writer.close()
            await writer.wait_closed()   # after the answer's last byte went (drain() leaves up to 64 KiB)
    except TimeoutError:
        self.ctl_counts.timed_out += 1
    except (OSError, asyncio.IncompleteReadError):   # the client went (_command answers the request's own)
        pass
    except Exception as err:   # a bug: one line, not asyncio's traceback per connection
        self._ctl_log("control socket: request from pid %d failed: %s", peer.pid, internal_error(err, False))
    finally:
        self.ctl_slots.give(peer.uid)
        writer.transport.abort()   # the descriptor and any answer left unread go now (closed: nothing)

async def exchange(self: Daemon, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: ctlsocket.Peer,
                    deadline: asyncio.Timeout) -> None:
    try:
        line = await reader.readline()
    except ValueError:   # over the reader's limit (LINE_LIMIT): it kept no more than that of it
        self.ctl_counts.too_long += 1
        writer.write(ctlsocket.encode({"ok": False, "error": "request too long"}))
        await writer.drain()
        while (chunk := await reader.read(ctlsocket.LINE_LIMIT)) and b"\n" not in chunk:
            pass   # the rest of the line read (and dropped): a close before would reset the answer
        return
    writer.write(ctlsocket.encode(await self._command(line, peer, deadline)))
    await writer.drain()

def ctl_log(self: Daemon, msg: str, *args: object) -> None:
    if (held := self._refusal_log.admit()) is not None:
        log.warning(msg + "%s", *args, suffix(held))

async def command(self: Daemon, line: bytes, peer: ctlsocket.Peer | None = None,
                   deadline: asyncio.Timeout | None = None) -> dict[str, Any]:
    """One request's answer; peer None: asked from inside this process (tests)."""
    try:
        req = json.loads(line or b"{}")
        cmd = req.get("cmd") if isinstance(req, dict) else None
    except (ValueError, RecursionError) as err:   # RecursionError: nested deeper than the parser goes
        self.ctl_counts.malformed += 1
        return {"ok": False, "error": "request is not JSON" if isinstance(err, ValueError) else "malformed request"}
    if peer is not None and (refused := self.gate.refusal(str(cmd), peer)):
        self._ctl_log("control socket: %s (pid %d, uid %d)", refused, peer.pid, peer.uid)
        return {"ok": False, "error": refused}
    try:
        if cmd in ("initiate", "terminate"):
            return await self._ike_command(cmd, req, deadline)
        if cmd == "reload":
            return await self._reload_command(deadline)
        if cmd == "unban":
            return self._unban_command(str(req.get("target") or ""))
        if cmd == "status":
            return await self._status_runs.get()
    except OSError as err:   # the host's (a full disk, a permission): answered, not taken for the client going
        error = os_failure(f"{cmd} (control socket)", err)
        log.error("%s", error)
        return {"ok": False, "error": error}
    return {"ok": False, "error": f"unknown command {cmd!r}"}

def unban_command(self: Daemon, target: str) -> dict[str, Any]:
    """Lift the failed-authentication bans covering ``target`` (ike/auth_ban.py: AuthBan.lift)."""
    if self.ike is None:
        return {"ok": False, "error": "no IKE connections configured"}
    try:
        lifted = self.ike.auth_ban.lift(target) + self.ike.worker_path.ban.lift(target)   # either path's
    except ValueError:
        return {"ok": False, "error": f"unban: {target!r} is not an address or network (e.g. 192.0.2.7, "
                                      "2001:db8:1:2::/64, fe80::1%eth0)"}
    if not lifted:
        return {"ok": False, "error": f"no ban in force covers {target}"}
    return {"ok": True, "message": "ban lifted: " + ", ".join(lifted)}

async def reload_command(self: Daemon, deadline: asyncio.Timeout | None) -> dict[str, Any]:
    """A reload runs to its end whatever the client's deadline (cut short it would be half
    applied; only root and tunsec's user may ask for one); its answer gets a deadline again."""
    if deadline is not None:
        deadline.reschedule(None)
    ok, lines = await self.reload_cut.run(self._reload_guarded())   # the stop may cut it short
    if deadline is not None:
        deadline.reschedule(asyncio.get_running_loop().time() + ctlsocket.DEADLINE)
    if not ok:
        return {"ok": False, "error": "\n".join(lines)}
    # applied, but a step failed (a route refused, its traffic blocked): an error to the client too,
    # with what was applied (`tunsec reload` exits 1)
    failed = [line for line in lines if line.startswith(reroute.FAILED)]
    done = "\n".join(line for line in lines if not line.startswith(reroute.FAILED)) or "no changes"
    return {"ok": False, "error": "\n".join(failed), "message": done} if failed else {"ok": True, "message": done}

async def status(self: Daemon) -> dict[str, Any]:
    """The status answer, shared by the clients asking at the same time (ctlsocket.Shared)."""
    try:
        merged = await self.dump()
    except WorkerError as err:
        return {"ok": False, "error": f"worker unavailable: {err}"}
    # built and encoded a slice at a time: thousands of clients' status is seconds of the event loop
    # held at once otherwise, while IKE, DPD and RADIUS wait
    answer = ctlsocket.Answer({"ok": True, "status": await status_document_sliced(self, merged)})
    await answer.encode_sliced()
    return answer

async def ike_command(self: Daemon, cmd: str, req: dict[str, Any],
                       deadline: asyncio.Timeout | None = None) -> dict[str, Any]:
    if self.ike is None:
        return {"ok": False, "error": "no IKE connections configured"}
    try:
        child = str(req.get("child") or "")
        if cmd == "initiate" or child:
            try:
                conn = find_child(self.cfg.connections, child, str(req.get("ike") or "")).name
            except LookupError as err:
                return {"ok": False, "error": str(err.args[0])}
        if cmd == "initiate":
            joined = self.ike.initiate(conn, child or None)
            if joined is not None:
                return await joined_answer(joined, conn, child, deadline)
            return {"ok": True, "message": f"initiating {conn}" + (f" child {child}" if child else "")}
        if child:   # that Child SA only (and its tries not sent yet); its IKE SA stays
            done = self.ike.terminate_child(conn, child)
            if not done:
                return {"ok": False, "error": f"no CHILD_SA {child!r} of connection {conn!r} is up"}
            return {"ok": True, "message": done.message()}
        done = self.ike.terminate(str(req.get("ike", "")))
        if not done:   # neither an IKE SA nor a try of it not sent yet (services/ike/tries.py)
            return {"ok": False, "error": f"no IKE SA of connection {req.get('ike')!r}"}
        return {"ok": True, "message": done.message()}
    except KeyError as err:
        return {"ok": False, "error": f"unknown connection {err}"}
