"""Both processes parse data from the network: once set up, the control process
and the worker run as dedicated users with no capabilities and no-new-privs
(unless ``user = root`` asks otherwise), the worker as a user of its own
(``worker_user``, default tunsec-dp, started by the spawner) that cannot reach the
configuration, keys, control socket or control process; and nothing on the
daemon's path is imported into the worker.  tunsec also runs as that user from the start, with no
capability at all, on a TUN root made for it (by hand or with ``tunsec prepare``).
Read from /proc for the running processes."""

from __future__ import annotations

import grp
import json
import os
import pwd
import signal
import subprocess
import sys
from pathlib import Path

from conftest import Side, TunnelOptions, TunsecPair, state_dir_of
from control import status_if_ok
from reachable import python_argv

from tunsec.bench.netns import TwoHosts, wait_until
from tunsec.conf.tunsec_section import DATAPLANE_USER, WORKER_USER
from tunsec.dataplane.sandbox import landlock_abi
from tunsec.statedir import MARKER, init_state_dir


def proc_status(pid: int) -> dict[str, list[str]]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.split()
    return out


def parent(pid: int) -> int:
    return int(proc_status(pid)["PPid"][0])


def is_spawner(pid: int) -> bool:
    return "tunsec.dataplane.spawner" in Path(f"/proc/{pid}/cmdline").read_text()


def control_pid(worker: int) -> int:
    """The control process is the worker's parent, or its spawner's (a worker of its own user)."""
    up = parent(worker)
    return parent(up) if is_spawner(up) else up


def assert_unprivileged(pid: int, user: str) -> None:
    st = proc_status(pid)
    pw = pwd.getpwnam(user)
    assert st["Uid"] == [str(pw.pw_uid)] * 4, st["Uid"]      # real, effective, saved, filesystem
    assert st["Gid"] == [str(pw.pw_gid)] * 4, st["Gid"]
    assert pw.pw_uid != 0 and pw.pw_gid != 0
    assert st["Groups"] == []
    for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(st[caps][0], 16) == 0, f"{caps} = {st[caps][0]}"
    assert st["NoNewPrivs"] == ["1"]


def assert_sealed(pid: int, pw: pwd.struct_passwd) -> None:
    """No core file and no /proc/<pid>/mem for a process of pw's uid: a child with the dropped
    credentials (as an updown script or the worker has) tries to read the memory and must fail."""
    limits = Path(f"/proc/{pid}/limits").read_text().splitlines()
    core = next(line for line in limits if line.startswith("Max core file size")).split()[4:6]
    assert core == ["0", "0"], core
    assert os.stat(f"/proc/{pid}/mem").st_uid == 0   # the kernel shows a non-dumpable process's files as root's
    probe = subprocess.run([*python_argv(setpriv(pw)), "-c", f"open('/proc/{pid}/mem', 'rb').close()"],
                           capture_output=True, text=True, timeout=30)
    assert probe.returncode != 0 and "PermissionError" in probe.stderr, (probe.returncode, probe.stderr)


def assert_sandboxed(pid: int) -> None:
    """The worker's seccomp filter is on (its Landlock domain shows nowhere in /proc: that is
    dataplane/test_sandbox.py's, from inside)."""
    assert proc_status(pid)["Seccomp"] == ["2"]


def expected_default_user() -> str:
    return WORKER_USER   # the install creates it; without it tunsec refuses to start (test_privilege.py)


def dataplane_user() -> str:
    """The worker's own user (scripts/install-deps.sh makes it; these tests need it)."""
    pwd.getpwnam(DATAPLANE_USER)
    return DATAPLANE_USER


def test_worker_is_unprivileged_by_default_and_after_a_restart(topo: TwoHosts) -> None:
    pair = TunsecPair(topo, TunnelOptions(inner6=False))
    pair.start_both()
    assert topo.wait_ping(topo.a, topo.b.inner4, src=topo.a.inner4)
    user, dp = expected_default_user(), dataplane_user()
    pid = int(pair.a.status_json(topo)["worker"]["pid"])
    assert_unprivileged(pid, dp)
    assert_sandboxed(pid)   # the default: tunsec { worker_sandbox = yes }
    landlock = 1 if landlock_abi() else 0
    assert pair.a.status_json(topo)["worker"]["gauges"]["sandbox"] == landlock | 2   # tunsec status says so
    # the spawner that started it holds no more than it does
    spawner = parent(pid)
    assert is_spawner(spawner)
    assert_unprivileged(spawner, dp)
    # the control process too (routes are static and on a TUN it created: it keeps no capability)
    control = control_pid(pid)
    assert control != pid and "tunsec" in Path(f"/proc/{control}/cmdline").read_text()
    assert_unprivileged(control, user)
    pw, dp_pw = pwd.getpwnam(user), pwd.getpwnam(dp)
    assert_sealed(control, pw)
    for p in (pid, spawner):
        assert_sealed(p, dp_pw)
    # the control process, no longer able to change user, has the spawner start a new worker as dp
    os.kill(pid, signal.SIGKILL)
    # polled on the socket (control.py: no interpreter per poll); the CLI then once
    assert wait_until(lambda: (st := status_if_ok(pair.a.sock)) is not None and st["worker"]["pid"] != pid, 15)
    assert pair.a.status(topo).returncode == 0
    new = int(pair.a.status_json(topo)["worker"]["pid"])
    assert_unprivileged(new, dp)
    assert_sealed(new, dp_pw)   # exec'd by the spawner of the same uid: dumpable until it said otherwise
    assert_sandboxed(new)
    assert parent(new) == spawner and control_pid(new) == control
    # the new worker refuses B's sequence numbers up to its persisted reservation (manual keys never accept
    # a number twice across a crash): B's traffic must pass that mark before A hears B again
    topo.run(topo.b, ["ping", "-c", "60", "-i", "0.02", "-W", "1", topo.a.inner4], check=False, timeout=30)
    assert topo.wait_ping(topo.a, topo.b.inner4, src=topo.a.inner4)
    log = pair.a.log.read_text()
    assert f"running as {user}" in log and f"running as {dp}" in log
    assert log.count("worker sandbox: ") == 2 and "cannot sandbox" not in log   # the first worker and the new one


def test_user_root_keeps_the_worker_root(topo: TwoHosts) -> None:
    pair = TunsecPair(topo, TunnelOptions(tunsec_extra="  user = root\n", inner6=False))
    pair.start_both()
    assert topo.wait_ping(topo.a, topo.b.inner4, src=topo.a.inner4)
    worker = int(pair.a.status_json(topo)["worker"]["pid"])
    for pid in (worker, control_pid(worker)):
        assert proc_status(pid)["Uid"] == ["0"] * 4
    assert int(proc_status(control_pid(worker))["CapEff"][0], 16) != 0
    # the worker keeps uid 0 but no capability: one taken over changes no route nor address (review
    # revlate4 F1 (a)); its traffic passed above, so it needed none once serving
    st = proc_status(worker)
    for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(st[caps][0], 16) == 0, f"{caps} = {st[caps][0]}"
    assert st["NoNewPrivs"] == ["1"]


EVIL = """import os, sys
with open({marker!r}, "a") as f:
    f.write(f"{{os.getpid()}} {{__name__}} {{' '.join(sys.argv)}}\\n")
"""


def test_nothing_on_the_daemons_path_is_imported_into_the_worker(topo: TwoHosts, tmp_path: Path) -> None:
    """A sitecustomize (imported by any Python that has it on sys.path) and a
    fake uvloop, both in the daemon's working directory and on its PYTHONPATH.
    The daemon itself imports them, which shows the trap works; the worker,
    which starts as root, must not."""
    marker = tmp_path / "imported"
    cwd, extra = tmp_path / "cwd", tmp_path / "pythonpath"
    for d in (cwd, extra):
        d.mkdir()
        (d / "sitecustomize.py").write_text(EVIL.format(marker=str(marker)))
        (d / "uvloop.py").write_text(EVIL.format(marker=str(marker)) + "raise ImportError('not the real one')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(extra), os.environ.get("PYTHONPATH", "")]))
    pair = TunsecPair(topo, TunnelOptions(inner6=False))
    pair.start(pair.a, cwd=cwd, env=env)
    pair.start(pair.b)
    assert topo.wait_ping(topo.a, topo.b.inner4, src=topo.a.inner4)
    worker = int(pair.a.status_json(topo)["worker"]["pid"])
    assert pair.a.proc is not None
    lines = marker.read_text().splitlines()
    pids = {int(line.split()[0]) for line in lines}
    assert pair.a.proc.pid in pids, f"the trap did not work on the daemon itself: {lines}"
    assert worker not in pids, lines
    assert not any("--pipe-fd" in line for line in lines), lines


def setpriv(pw: pwd.struct_passwd, bounding: bool = True) -> list[str]:
    """Start as pw from the beginning, as a service manager would: no capability, no groups."""
    return ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups", "--inh-caps=-all",
            *(["--bounding-set=-all"] if bounding else []), "--"]


def own_side(topo: TwoHosts, side: Side, pw: pwd.struct_passwd) -> Side:
    """side with its control socket and state in a directory of pw's, and its config readable by pw."""
    d = topo.workdir / f"{side.host.ns}-run"
    d.mkdir(mode=0o750)
    sock = d / "tunsec.sock"
    text = side.conf.read_text().replace(str(state_dir_of(side.host, side.sock)), str(d / "state"))
    init_state_dir(d / "state")   # while d is root's: root initialises nothing under pw's directory
    os.chown(d, pw.pw_uid, pw.pw_gid)
    for p in (d / "state", d / "state" / MARKER):   # pw's, as `tunsec prepare` hands them over
        os.chown(p, pw.pw_uid, pw.pw_gid)
    side.conf.write_text(text.replace(str(side.sock), str(sock)))
    # root's, read through pw's group: `tunsec prepare` (root) acts on no file pw may change (review revctl F1)
    os.chown(side.conf, 0, pw.pw_gid)
    side.conf.chmod(0o640)
    return Side(side.host, side.conf, side.log, sock)


def start_as(topo: TwoHosts, side: Side, pw: pwd.struct_passwd, bounding: bool = True) -> None:
    argv = [*python_argv(setpriv(pw, bounding)), "-m", "tunsec", "up", "-c", str(side.conf)]
    side.proc = topo.popen(side.host, argv, log=side.log)
    assert wait_until(lambda: side.proc is not None and (side.proc.poll() is not None
                                                         or side.status(topo).returncode == 0), 20)
    assert side.proc.poll() is None, f"tunsec in {side.host.ns} did not start:\n{side.log.read_text()}"


def status_as(topo: TwoHosts, side: Side, pw: pwd.struct_passwd, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [*python_argv(setpriv(pw)), "-m", "tunsec", "status", *args]
    return topo.run(side.host, argv, check=False, timeout=20)


def tun_warnings(side: Side) -> list[str]:
    return [line for line in side.log.read_text().splitlines() if "WARNING TUN tunsec0" in line]


def test_unprivileged_on_a_tun_made_for_it(topo: TwoHosts) -> None:
    """A: root made a multi-queue TUN for the user by hand and left its MTU at 1500; tunsec runs with one
    worker and no capability at all, and says once what root should change.  B: `tunsec prepare` made
    everything, then tunsec runs unprivileged without a warning.  Manual keys on UDP 4500 (>= 1024)."""
    user = expected_default_user()
    pw = pwd.getpwnam(user)
    pair = TunsecPair(topo, TunnelOptions(inner6=False, tunsec_extra="  workers = 1\n"))
    a, b = own_side(topo, pair.a, pw), own_side(topo, pair.b, pw)
    for cmd in (f"ip tuntap add dev tunsec0 mode tun user {user} multi_queue vnet_hdr",
                "ip link set dev tunsec0 addrgenmode none", "ip link set dev tunsec0 up",
                # tunsec's table, looked up before the main table (dataplane/routetable.py)
                "ip rule add priority 116 lookup 116", f"ip route add {topo.b.inner_net4} dev tunsec0 table 116"):
        topo.run(topo.a, cmd.split())
    prep = topo.run(topo.b, [sys.executable, "-m", "tunsec", "prepare", "-c", str(b.conf), "--user", user],
                    check=False)
    assert prep.returncode == 0, prep.stderr
    link = topo.run(topo.b, ["ip", "-d", "link", "show", "tunsec0"]).stdout
    assert f"user {user}" in link and "vnet_hdr on" in link and "multi_queue" not in link, link
    start_as(topo, a, pw)
    start_as(topo, b, pw, bounding=False)
    assert topo.wait_ping(topo.a, topo.b.inner4, src=topo.a.inner4)
    for side in (a, b):
        worker = int(side.status_json(topo)["worker"]["pid"])
        control = control_pid(worker)
        for pid in (worker, control):
            assert_sealed(pid, pw)
            if side is a:
                assert_unprivileged(pid, user)
            else:   # no CAP_SETPCAP to empty the bounding set it was given: no-new-privs keeps it unused
                st = proc_status(pid)
                assert st["Uid"] == [str(pw.pw_uid)] * 4 and st["NoNewPrivs"] == ["1"]
                assert all(int(st[c][0], 16) == 0 for c in ("CapInh", "CapPrm", "CapEff", "CapAmb")), st
                assert int(st["CapBnd"][0], 16) != 0
    # a worker exec'd by the control process running as the user is dumpable until it says otherwise
    old = int(a.status_json(topo)["worker"]["pid"])
    os.kill(old, signal.SIGKILL)
    assert wait_until(lambda: (st := status_if_ok(a.sock)) is not None and st["worker"]["pid"] != old, 15)
    assert_sealed(int(a.status_json(topo)["worker"]["pid"]), pw)
    mtu = a.status_json(topo)["tun"]["mtu"]
    warnings = tun_warnings(a)
    assert len(warnings) == 1, a.log.read_text()
    assert "its MTU is 1500" in warnings[0] and f"ip link set dev tunsec0 mtu {mtu}" in warnings[0], warnings
    assert "route" not in warnings[0].split("as root run:")[1], warnings   # the route was there
    assert "1 queue(s)" in a.log.read_text()
    assert tun_warnings(b) == [], b.log.read_text()
    # no CAP_SETUID to give the worker a user of its own: said, not silent
    assert "the dataplane worker cannot run as tunsec-dp" in a.log.read_text()
    # status: from root (side.status above) and from the user; another user is told why it may not
    assert status_as(topo, a, pw, "-c", str(a.conf)).returncode == 0
    # a member of the user's group only: the status, but nothing that changes state
    member = ["setpriv", f"--reuid={pwd.getpwnam('daemon').pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups",
              "--inh-caps=-all", "--"]
    argv = [*python_argv(member), "-m", "tunsec"]
    assert topo.run(topo.a, [*argv, "status", "--socket", str(a.sock)], check=False, timeout=20).returncode == 0
    for cmd in (["reload"], ["terminate", "--ike", "x"]):
        r = topo.run(topo.a, [*argv, *cmd, "--socket", str(a.sock)], check=False, timeout=20)
        assert r.returncode == 1 and f"permission denied: {cmd[0]} changes state" in r.stderr, r.stderr
    other = pwd.getpwnam("nobody" if user != "nobody" else "daemon")
    denied = status_as(topo, a, other, "--socket", str(a.sock))
    assert denied.returncode == 1
    assert f"permission denied on {a.sock}: run as root or as user {user}" in denied.stderr, denied.stderr


CONTAINER_CAPS = ("net_admin", "net_bind_service", "setuid", "setgid")   # --cap-drop ALL --cap-add ...


def test_root_with_a_containers_capabilities_drops_to_the_user(topo: TwoHosts) -> None:
    """Root in a container (--cap-drop ALL plus NET_ADMIN, NET_BIND_SERVICE, SETUID, SETGID, and CHOWN for
    manual keys' state_dir): the control process ends as the user, the worker and its spawner as the
    worker's user, with no capability; the bounding set stays the container's (no CAP_SETPCAP to empty it)
    and no-new-privs keeps it unused."""
    user = expected_default_user()
    pair = TunsecPair(topo, TunnelOptions(inner6=False))
    # manual keys persist sequence numbers in state_dir, which root makes and hands to the user: + CHOWN
    caps = (*CONTAINER_CAPS, "chown")
    limit = ["setpriv", "--inh-caps=-all", "--bounding-set=-all," + ",".join("+" + c for c in caps), "--"]
    pw = pwd.getpwnam(user)
    pair.a.proc = topo.popen(topo.a, [*python_argv(limit), "-m", "tunsec", "up", "-c", str(pair.a.conf)],
                             log=pair.a.log)
    pair.start(pair.b)
    assert wait_until(lambda: pair.a.proc is not None and (pair.a.proc.poll() is not None
                                                           or pair.a.status(topo).returncode == 0), 20)
    assert pair.a.proc.poll() is None, pair.a.log.read_text()
    assert topo.wait_ping(topo.a, topo.b.inner4, src=topo.a.inner4)
    worker = int(pair.a.status_json(topo)["worker"]["pid"])
    bounding = sum(1 << n for n in (12, 10, 7, 6, 0))
    dp = pwd.getpwnam(dataplane_user())
    for pid, who in ((worker, dp), (parent(worker), dp), (control_pid(worker), pw)):
        st = proc_status(pid)
        assert st["Uid"] == [str(who.pw_uid)] * 4 and st["Groups"] == [] and st["NoNewPrivs"] == ["1"], st
        assert all(int(st[c][0], 16) == 0 for c in ("CapInh", "CapPrm", "CapEff", "CapAmb")), st
        assert int(st["CapBnd"][0], 16) == bounding, st["CapBnd"]


PROBE = """import errno, json, os, socket, sys
conf, key, sock, control = sys.argv[1:5]
def attempt(f):
    try:
        f()
    except OSError as e:
        return errno.errorcode[e.errno]
    return "ok"
def connect():
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(sock)
print(json.dumps({"config": attempt(lambda: open(conf).close()), "key": attempt(lambda: open(key).close()),
                  "socket": attempt(connect), "mem": attempt(lambda: open(f"/proc/{control}/mem", "rb").close()),
                  "kill": attempt(lambda: os.kill(int(control), 0))}))
"""


def probe_as(uid: int, gid: int, paths: list[str]) -> dict[str, str]:
    """What a process with these credentials (no groups, no capability, no-new-privs: the worker's) may do."""
    pre = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--inh-caps=-all",
           "--bounding-set=-all", "--no-new-privs", "--"]
    r = subprocess.run([*python_argv(pre), "-c", PROBE, *paths], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


def test_the_worker_cannot_reach_the_config_keys_socket_or_control_process(topo: TwoHosts) -> None:
    """The configuration and a private key readable by the control process's user (for reloads, as
    docs/privileges.md says), the control socket it serves: the worker's uid and gid are others, and with them each
    is refused (EACCES), as are the control process's memory and signals; the control process's own
    credentials may read and connect (so the refusal is the worker's user, not the files' modes)."""
    pair = TunsecPair(topo, TunnelOptions(inner6=False))
    user = pwd.getpwnam(expected_default_user())
    key = topo.workdir / "private" / "gw.key"
    key.parent.mkdir(mode=0o750)
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    for path, mode in ((key.parent, 0o750), (key, 0o640), (pair.a.conf, 0o640)):
        os.chown(path, 0, user.pw_gid)
        path.chmod(mode)
    pair.start_both()
    assert topo.wait_ping(topo.a, topo.b.inner4, src=topo.a.inner4)
    worker = int(pair.a.status_json(topo)["worker"]["pid"])
    control = control_pid(worker)
    st = proc_status(worker)
    uid, gid = int(st["Uid"][0]), int(st["Gid"][0])
    assert (uid, gid) != (user.pw_uid, user.pw_gid)
    assert uid != int(proc_status(control)["Uid"][0]) and gid != int(proc_status(control)["Gid"][0])
    assert grp.getgrgid(gid).gr_mem == []   # tunsec-dp's own group, no member shares the control's files
    paths = [str(pair.a.conf), str(key), str(pair.a.sock), str(control)]
    assert probe_as(uid, gid, paths) == {"config": "EACCES", "key": "EACCES", "socket": "EACCES",
                                         "mem": "EACCES", "kill": "EPERM"}
    as_control = probe_as(user.pw_uid, user.pw_gid, paths)
    assert (as_control["config"], as_control["key"], as_control["socket"], as_control["kill"]) == ("ok",) * 4
    # traffic still flows after the probes: nothing the worker needs was taken away
    assert topo.wait_ping(topo.a, topo.b.inner4, src=topo.a.inner4)
