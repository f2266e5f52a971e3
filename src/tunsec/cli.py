"""The `tunsec` command: up (the daemon, in the foreground), check, status, initiate, terminate, unban,
prepare and bench (the netns benchmark harness of tunsec.bench); --help lists them."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from tunsec import logs
from tunsec.conf.config import Config, ConfigRefused, load_config
from tunsec.conf.errors import ConfigError
from tunsec.ctlpeer import NotFollowed, Target, server_refusal, target
from tunsec.printable import escaped
from tunsec.runtime import owner_name, resolved


def _load(path: str, root_check: bool = False) -> Config | None:
    """root_check: the command acts as root on what the file says (up, prepare, init-state): load_config's."""
    try:
        return resolved(load_config(path, root_check=root_check))
    except ConfigRefused as err:   # not "invalid": root may not act on it, whatever it says
        for issue in err.errors:
            print(f"tunsec: {issue.message}", file=sys.stderr)
        return None
    except ConfigError as err:
        print(f"tunsec: {path}: configuration invalid:", file=sys.stderr)
        print(str(err), file=sys.stderr)
        return None


def cmd_check(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    if cfg is None:
        return 1
    from tunsec.policy.ids import IdSpace
    from tunsec.policy.spd import PolicyError
    from tunsec.services.manual import plan

    problems = []
    ids = IdSpace()
    for i, t in enumerate(cfg.manual):
        try:
            plan(t, i, ids)
        except PolicyError as err:
            problems.append(f"{t.file}:{t.line}: manual.{t.name}: {err}")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    for w in cfg.warnings:
        print(f"warning: {w}", file=sys.stderr)
    for t in cfg.manual:
        print(f"warning: {t.file}:{t.line}: manual.{t.name}: manual keys are for tests and benchmarks; use IKE "
              "in production (RFC 4106 §8.1 forbids AES-GCM with statically configured keys). Its sequence "
              f"numbers are persisted in {cfg.tunsec.state_dir} (initialised once by tunsec init-state; tunsec "
              "up refuses to start without it): if that directory is lost, replace the keys", file=sys.stderr)
    print(f"{args.config}: OK ({len(cfg.manual)} manual tunnel(s), {len(cfg.connections)} IKE connection(s))")
    return 0


def _harden() -> bool:
    """privilege.harden() before the configuration (secrets) is read; False after saying why on stderr."""
    from tunsec import privilege

    try:
        privilege.harden()
    except OSError as err:
        print(f"tunsec: cannot make the process non-dumpable with no core file: {err}", file=sys.stderr)
        return False
    return True


def cmd_up(args: argparse.Namespace) -> int:
    from tunsec import pid1

    pid1.init_if_pid1()   # first, holding nothing yet: as PID 1 an init stays above the daemon (pid1.py)
    if not _harden():
        return 1
    cfg = _load(args.config, root_check=True)
    if cfg is None:
        return 1
    level = (args.log_level or cfg.tunsec.log_level).upper()
    logs.configure(level, cfg.tunsec.log_format, "tunsec")
    from tunsec.daemon import Daemon, StartupError
    from tunsec.policy.spd import PolicyError

    try:
        daemon = Daemon(cfg)
    except PolicyError as err:
        logging.getLogger("tunsec").error("%s", err)
        return 1

    async def main() -> int:
        if sys.version_info < (3, 12) and not _uvloop_running():
            # asyncio's default child watcher waits for the worker in a thread of its own; the
            # privilege drop needs the process single-threaded (capabilities are per thread)
            watcher = asyncio.PidfdChildWatcher()
            watcher.attach_loop(asyncio.get_running_loop())
            asyncio.set_child_watcher(watcher)
        return await daemon.run()

    try:
        daemon.prepare()
    except (StartupError, OSError) as err:
        logging.getLogger("tunsec").error("cannot start: %s", err)
        return 1
    code = 1
    try:
        try:
            import uvloop

            code = int(uvloop.run(main()))
        except ImportError:
            code = asyncio.run(main())
        return code
    except StartupError as err:
        logging.getLogger("tunsec").error("cannot start: %s", err)
        return 1
    finally:
        daemon.close_network(clean=code == 0)   # a failure keeps the kill switch (killswitch.py)


def cmd_prepare(args: argparse.Namespace) -> int:
    if not _harden():
        return 1
    cfg = _load(args.config, root_check=True)
    if cfg is None:
        return 1
    logging.basicConfig(level=cfg.tunsec.log_level.upper(), format="tunsec prepare: %(levelname)s %(message)s",
                        stream=sys.stderr)
    from tunsec.prepare import PrepareError, prepare
    from tunsec.unprepare import undo

    if not args.undo and not args.user:
        print("tunsec prepare: --user is required (the user tunsec up will run as), or --undo", file=sys.stderr)
        return 1
    try:
        print(undo(cfg) if args.undo else prepare(cfg, args.user))
    except PrepareError as err:
        print(f"tunsec prepare: {err}", file=sys.stderr)
        return 1
    return 0


def cmd_init_state(args: argparse.Namespace) -> int:
    """Mark state_dir as initialised on purpose: from now on a manual key without a state file is new."""
    cfg = _load(args.config, root_check=True)
    if cfg is None:
        return 1
    from tunsec.conf.tunsec_section import service_uid
    from tunsec.privilege import PrivilegeError, check_config_files
    from tunsec.seqstate import StateError
    from tunsec.statedir import init_state_dir

    path = Path(cfg.tunsec.state_dir)
    try:   # as root: the file says where root creates the directory and whose the marker becomes
        check_config_files(cfg)
        done = init_state_dir(path, service_uid(cfg.tunsec.user))   # unknown: root alone
    except (OSError, StateError, PrivilegeError) as err:
        why = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        print(f"tunsec init-state: cannot initialise the state directory {path}: {why}", file=sys.stderr)
        return 1
    if not done.new:
        print(f"{path}: already initialised (instance {done.instance}); nothing changed")
    elif done.adopted:
        print(f"{path}: initialised (instance {done.instance}); the {done.adopted} sequence state file(s) in "
              "it are kept and used")
    else:
        print(f"{path}: initialised (instance {done.instance}); manual keys start at sequence number 1 here. "
              "Keep this directory on persistent storage: if it is lost, replace the manual keys")
    return 0


def _uvloop_running() -> bool:
    return type(asyncio.get_running_loop()).__module__.startswith("uvloop")


# a status of many thousand SAs is a few MiB; a server in the socket's place must not feed us for ever
MAX_ANSWER = 16 << 20
# this process is the `tunsec` program (program()), not a library user of main() or _ask (tests, the
# bench harness): it may give up its capabilities for good once it asks the server
_PROGRAM = False


class AnswerError(ValueError):
    """The answer is too large, late or not a JSON object."""


def _ask(t: Target | str, request: dict[str, Any], timeout: float = 10.0, limit: int = MAX_ANSWER) -> dict[str, Any]:
    """The answer to request, read in at most timeout seconds in all and at most limit bytes; as root only from
    a server of root's or the service user's (ctlpeer.server_refusal: NotFollowed, nothing sent)."""
    t = t if isinstance(t, Target) else Target(t, None)
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(t.path)
        refused = server_refusal(s, t)
        if refused:
            raise NotFollowed(refused)
        if _PROGRAM:   # the server checked (it may read its /proc entry): nothing more is needed
            from tunsec import privilege  # (not at import: the CLI's start time)

            privilege.shed_for_answer()
        try:
            s.sendall(json.dumps(request).encode() + b"\n")
        except (BrokenPipeError, ConnectionResetError):
            # refused before it read the request (busy: every connection slot taken): it wrote why and
            # closed, and that answer waits to be read here
            pass
        except TimeoutError:
            raise AnswerError(f"the request was not taken within {timeout:g} s") from None
        buf = _read_answer(s, deadline, timeout, limit)
    if not buf:
        raise AnswerError("closed the connection without an answer")
    try:
        answer = json.loads(buf)
    except ValueError:
        raise AnswerError("the answer is not JSON") from None
    if not isinstance(answer, dict):
        raise AnswerError("answer is not a JSON object")
    return answer


def _read_answer(s: socket.socket, deadline: float, timeout: float, limit: int) -> bytearray:
    """One line, or what came before the server closed the connection."""
    buf = bytearray()
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AnswerError(f"no complete answer within {timeout:g} s")
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            raise AnswerError(f"no complete answer within {timeout:g} s") from None
        except ConnectionResetError:
            break   # it closed with our request unread: what it wrote before came first
        if not chunk:
            break
        buf += chunk
        if len(buf) > limit:
            raise AnswerError(f"answer larger than {limit >> 20} MiB")
    return buf


def _shown(text: object) -> str:
    """Text from the server (whoever listens on the socket) for a terminal: line by line, every
    character str.isprintable refuses escaped (no terminal command, title or clipboard write); a backslash as
    it is (the server escaped a peer's text already: doubled again, each of its escapes would show as two)."""
    return "\n".join(escaped(line, backslash=False) for line in str(text).split("\n"))


def _target(args: argparse.Namespace) -> Target | None:
    """The control socket to ask (ctlpeer.target), None after saying on stderr why not (as root: a file
    another user may change names it)."""
    try:
        return target(args.config, str(args.socket) if args.socket else None)
    except NotFollowed as err:
        print(f"tunsec: {err}", file=sys.stderr)
        return None


def _request(request: dict[str, Any], t: Target | None) -> dict[str, Any] | None:
    """Ask the running instance at t (_target); None (after saying why on stderr) if it cannot answer yes."""
    if t is None:
        return None
    path = t.path
    try:
        answer = _ask(t, request, timeout=30)
    except PermissionError:
        # it runs, but this user may not talk to it: say so rather than "not running"
        print(f"tunsec: permission denied on {path}: run as root or as user {owner_name(path)}", file=sys.stderr)
        return None
    except (AnswerError, NotFollowed) as err:
        print(f"tunsec: {path}: {err}" if isinstance(err, AnswerError) else f"tunsec: {err}", file=sys.stderr)
        return None
    except (OSError, ValueError) as err:
        print(f"tunsec: no running tunsec on {path}: {_shown(err)}", file=sys.stderr)
        return None
    if not answer.get("ok"):
        if "message" in answer:   # a reload applied with a step failed: what it did, then what failed
            print(_shown(answer["message"]))
        print(f"tunsec: {_shown(answer.get('error'))}", file=sys.stderr)
        return None
    return answer


def cmd_status(args: argparse.Namespace) -> int:
    from tunsec.status import render

    t = _target(args)
    answer = _request({"cmd": "status"}, t)
    if answer is None or t is None:
        return 1
    if args.json:   # json.dumps escapes every control character and all but ASCII
        print(json.dumps(answer.get("status"), indent=2))
        return 0
    try:
        text = render(answer["status"])
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        print(f"tunsec: the answer on {t.path} is not a status document", file=sys.stderr)
        return 1
    print(_shown(text))
    return 0


def _simple(request: dict[str, Any], args: argparse.Namespace) -> int:
    answer = _request(request, _target(args))
    if answer is None:
        return 1
    print(_shown(answer.get("message", "ok")))
    return 0


def cmd_initiate(args: argparse.Namespace) -> int:
    req: dict[str, Any] = {"cmd": "initiate", "child": args.child}
    if args.ike:
        req["ike"] = args.ike
    return _simple(req, args)


def cmd_terminate(args: argparse.Namespace) -> int:
    if not args.ike and not args.child:
        print("tunsec terminate: name --ike CONN, --child NAME, or both", file=sys.stderr)
        return 2
    req: dict[str, Any] = {"cmd": "terminate", "ike": args.ike}
    if args.child:
        req["child"] = args.child
    return _simple(req, args)


def cmd_unban(args: argparse.Namespace) -> int:
    return _simple({"cmd": "unban", "target": args.target}, args)


def cmd_reload(args: argparse.Namespace) -> int:
    """The running tunsec reads its configuration file again and applies the difference."""
    # a refusal (file:line, or what needs a restart) goes to stderr
    answer = _request({"cmd": "reload"}, _target(args))
    if answer is None:
        return 1
    print(_shown(answer.get("message", "ok")))
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="tunsec", description="userspace IPsec VPN")
    sub = ap.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run tunsec in the foreground")
    up.add_argument("-c", "--config", required=True)
    up.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    up.set_defaults(func=cmd_up)
    st = sub.add_parser("status", help="show SAs, counters and drops of a running tunsec")
    st.add_argument("-c", "--config")
    st.add_argument("--socket")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)
    ini = sub.add_parser("initiate", help="start negotiating a child (and its IKE SA)")
    ini.add_argument("--child", required=True)
    ini.add_argument("--ike", help="the connection, if the child name is not unique")
    ini.add_argument("-c", "--config")
    ini.add_argument("--socket")
    ini.set_defaults(func=cmd_initiate)
    ter = sub.add_parser("terminate", help="delete the IKE SAs of a connection and their children, "
                                           "or with --child that Child SA only")
    ter.add_argument("--ike", help="the connection (with --child: only if the child name is not unique)")
    ter.add_argument("--child", help="delete this Child SA only; its IKE SA stays")
    ter.add_argument("-c", "--config")
    ter.add_argument("--socket")
    ter.set_defaults(func=cmd_terminate)
    ub = sub.add_parser("unban", help="lift the failed-authentication bans (tunsec { auth_failures }) of an "
                                      "address or network, and forget its failures")
    ub.add_argument("target", help="an address or network: 192.0.2.7, 2001:db8:1:2::/64, fe80::1%%eth0")
    ub.add_argument("-c", "--config")
    ub.add_argument("--socket")
    ub.set_defaults(func=cmd_unban)
    rl = sub.add_parser("reload", help="read the configuration file again and apply the difference "
                                       "(what is unchanged keeps its SAs); same as SIGHUP")
    rl.add_argument("-c", "--config")
    rl.add_argument("--socket")
    rl.set_defaults(func=cmd_reload)
    pre = sub.add_parser("prepare", help="as root: create and configure the TUN and routes for an unprivileged "
                                         "tunsec up, then exit")
    pre.add_argument("-c", "--config", required=True)
    pre.add_argument("--user", help="the user tunsec up will run as (owner of the TUN)")
    pre.add_argument("--undo", action="store_true", help="remove what prepare made for this configuration (the TUN, "
                                                         "its kill switch, a full tunnel's exclude routes), then exit")
    pre.set_defaults(func=cmd_prepare)
    ini_st = sub.add_parser("init-state", help="initialise state_dir for manual keys (a new installation, or "
                                               "after replacing every manual key), then exit")
    ini_st.add_argument("-c", "--config", required=True)
    ini_st.set_defaults(func=cmd_init_state)
    sub.add_parser("bench", help="throughput benchmark in two network namespaces (root; tunsec bench --help)")
    ck = sub.add_parser("check", help="validate a configuration file")
    ck.add_argument("-c", "--config", required=True)
    ck.set_defaults(func=cmd_check)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        # the harness has its own options: hand them over untouched
        from tunsec.bench.harness import main as bench_main

        return int(bench_main(argv[1:], prog="tunsec bench"))
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BrokenPipeError:
        # `tunsec status | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def program() -> int:
    """The `tunsec` command (the console script, python -m tunsec)."""
    global _PROGRAM
    _PROGRAM = True
    return main()


if __name__ == "__main__":
    sys.exit(program())
