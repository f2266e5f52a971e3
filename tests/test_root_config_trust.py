"""Root acts on no configuration the service user may write (review revctl F1): `tunsec prepare` and
`tunsec up` started as root refuse a configuration file, or a file it includes, that anyone but root
may change -- the file, a directory on its path, a link on the way.  The file names the directories
root creates and gives away (control_socket, state_dir) and whom the processes run as (user = root):
a control process taken over from the network that may rewrite it would be root at the next start.
Also: prepare's hint for a configuration the user cannot read keeps it root's; worker_user = root is
refused where the control process drops root; the control socket and the metrics listener accept only
once privilege is given up (F3).  The prepare/up tests run as root in a network namespace of their own."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import netns_unavailable
from reachable import scratch_dir

from tunsec import privilege, safefs
from tunsec.bench.netns import scratch_netns
from tunsec.conf.config import ConfigRefused, load_config, parse_config
from tunsec.conf.tunsec_section import ListenAddress
from tunsec.dataplane import spawner

USER = "tunsec"
TUN = "fixroot0"
NETNS_PROBLEM = netns_unavailable()
root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (ownership, the start as root)")


def needs_netns(test: Callable[..., None]) -> Callable[..., None]:
    for mark in (pytest.mark.netns, pytest.mark.skipif(NETNS_PROBLEM is not None, reason=f"NETNS: {NETNS_PROBLEM}"),
                 root):
        test = mark(test)
    return test


@pytest.fixture
def ns() -> Iterator[str]:
    with scratch_netns("fixroot") as name:
        yield name


@pytest.fixture
def base() -> Iterator[Path]:
    """Root's, 0755, under sticky /tmp: a tree only root may change, as /etc."""
    with scratch_dir("fixroot-") as d:
        yield d


@pytest.fixture
def user() -> privilege.Target:
    t = privilege.target_for(USER)
    assert t is not None
    return t


def tunsec_section(run_dir: Path, state_dir: Path) -> str:
    return (f"tunsec {{\n  tun = {TUN}\n  control_socket = {run_dir}/t.sock\n  state_dir = {state_dir}\n"
            "  mtu = 1400\n}\n")


MANUAL = ("manual {\n  site { local_addr = 192.0.2.1\n    remote_addr = 192.0.2.2\n    local_ts = 10.1.0.0/24\n"
          "    remote_ts = 10.2.0.0/24\n    spi_in = 0xc0010001\n"
          "    key_in = 0x0102030405060708090a0b0c0d0e0f1011121314\n    spi_out = 0xc0020001\n"
          "    key_out = 0x1102030405060708090a0b0c0d0e0f1011121314 }\n}\n")


def run(ns: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "tunsec", *args], capture_output=True,
                          text=True, timeout=60)


def writable_config(base: Path, user: privilege.Target, how: str, dropin: Path) -> tuple[Path, Path]:
    """A configuration (and the file the service user may change: the one the refusal must name) whose
    control_socket lies in dropin, a directory the user must never be given (a systemd drop-in)."""
    confdir = base / "conf"
    confdir.mkdir()
    conf = confdir / "tunsec.conf"
    text = tunsec_section(dropin, base / "state") + MANUAL
    if how == "include":
        inc = confdir / "tunsec.d.conf"
        inc.write_text(text)
        conf.write_text(f"include {inc}\n")
        os.chown(inc, user.uid, user.gid)
        return conf, inc
    conf.write_text(text)
    if how == "owner":
        os.chown(conf, user.uid, user.gid)   # prepare's old hint: chown tunsec FILE
    elif how == "group":
        os.chown(conf, 0, user.gid)
        conf.chmod(0o660)
    elif how == "directory":
        os.chown(confdir, user.uid, user.gid)   # the user may replace the file in it
        return conf, confdir
    elif how == "link":
        real = base / "elsewhere.conf"
        conf.rename(real)
        os.chown(real, user.uid, user.gid)
        conf.symlink_to(real)
        return conf, real
    return conf, conf


CASES = ["owner", "group", "include", "directory", "link"]


@pytest.mark.parametrize("how", CASES)
@needs_netns
def test_prepare_refuses_a_config_the_service_user_may_change(ns: str, base: Path, user: privilege.Target,
                                                              how: str) -> None:
    dropin = base / "etc" / "systemd" / "system" / "victim.service.d"
    dropin.parent.mkdir(parents=True)
    conf, culprit = writable_config(base, user, how, dropin)
    r = run(ns, "prepare", "-c", str(conf), "--user", USER)
    assert r.returncode == 1, r
    assert f"refusing configuration file {conf if how != 'include' else culprit}" in r.stderr, r.stderr
    fix = {"owner": f"chown root {culprit}; chmod go-w {culprit}", "group": f"chmod go-w {culprit}",
           "include": f"chown root {culprit}; chmod go-w {culprit}",
           "directory": f"chown root {culprit}; chmod go-w {culprit}", "link": f"chown root {culprit}"}[how]
    assert str(culprit) in r.stderr and f"as root, {fix}" in r.stderr, r.stderr
    assert not dropin.exists() and not (base / "state").exists()
    assert subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "show", TUN], capture_output=True).returncode


@needs_netns
def test_up_as_root_refuses_a_config_the_service_user_owns(ns: str, base: Path, user: privilege.Target) -> None:
    """`tunsec up` as root, before anything is set up: no control socket directory made, no TUN."""
    dropin = base / "victim.service.d"
    conf, _ = writable_config(base, user, "owner", dropin)
    r = run(ns, "up", "-c", str(conf))
    assert r.returncode != 0, r
    assert f"refusing configuration file {conf}: {conf} is owned by {USER}" in r.stderr, r.stderr
    assert not dropin.exists()


@root
def test_init_state_as_root_refuses_a_config_the_service_user_owns(base: Path, user: privilege.Target) -> None:
    conf, _ = writable_config(base, user, "owner", base / "run")
    r = subprocess.run([sys.executable, "-m", "tunsec", "init-state", "-c", str(conf)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1, r
    assert f"refusing configuration file {conf}: {conf} is owned by {USER}" in r.stderr, r.stderr
    assert not (base / "state").exists()


@needs_netns
def test_prepare_hint_for_an_unreadable_config_keeps_it_roots(ns: str, base: Path) -> None:
    conf = base / "tunsec.conf"
    conf.write_text(tunsec_section(base / "run", base / "state"))
    conf.chmod(0o600)
    r = run(ns, "prepare", "-c", str(conf), "--user", USER)
    assert r.returncode == 0, r.stderr
    assert f"chown {USER}" not in r.stdout, r.stdout
    assert f"is not readable by {USER}: " in r.stdout and f"{conf}; it stays root's" in r.stdout, r.stdout
    assert os.stat(conf).st_uid == 0


@root
def test_a_root_only_config_and_a_root_link_to_it_are_accepted(base: Path) -> None:
    """What the check lets through (the demo's and CI's configurations: root's, 0644 or 0600, in a tree of
    root's under sticky /tmp), user = root among it: the administrator's choice, from a file only root writes."""
    conf = base / "tunsec.conf"
    conf.write_text("tunsec { user = root }\n")
    (base / "link.conf").symlink_to(conf)
    for name in (conf, base / "link.conf"):
        cfg = load_config(name, root_check=True)
        assert cfg.tunsec.user == "root" and not cfg.unchecked
        privilege.check_config_files(cfg)
    # a name that leads nowhere is refused: what root acts on must be what it checked (review revroot F1)
    assert safefs.others_may_change(base / "missing.conf") is not None


@root
def test_a_root_link_to_a_file_the_user_owns_is_refused(base: Path, user: privilege.Target) -> None:
    real = base / "users.conf"
    real.write_text("")
    os.chown(real, user.uid, user.gid)
    (base / "link.conf").symlink_to(real)
    with pytest.raises(ConfigRefused, match=f"{real} is owned by {USER}"):
        load_config(base / "link.conf", root_check=True)


def test_worker_user_root_is_refused_where_the_control_process_drops() -> None:
    """The worker parses ESP from the network; as uid 0 it would own root's files (/etc) while the control
    process, which holds the keys, runs as tunsec.  user = root with worker_user = root stays allowed."""
    target = privilege.Target(USER, 12345, 12345)
    with pytest.raises(privilege.PrivilegeError, match=r"worker_user = root \} is root while the control process"):
        spawner.choose("root", privilege.Plan(True, target))
    if os.geteuid() == 0:
        assert spawner.choose("root", privilege.Plan(False, None)).user is None


def test_the_control_socket_accepts_only_once_privilege_is_given_up(tmp_path: Path) -> None:
    """F3: a request read before the drop is parsed as root.  The socket is bound at set-up (its owner and
    mode from the start) but served from _start_serving, which _start_worker calls after the drop."""
    from tunsec.daemon import Daemon

    cfg = parse_config(f"tunsec {{ control_socket = {tmp_path}/t.sock\n state_dir = {tmp_path}/s }}\n",
                       str(tmp_path / "x.conf"))

    async def body() -> None:
        d = Daemon(cfg)
        await d._open_control_socket()
        assert d._server is not None and not d._server.is_serving()
        await d._start_serving()
        assert d._server.is_serving()
        d._server.close()

    asyncio.run(body())


def test_the_metrics_listener_accepts_only_when_told() -> None:
    from tunsec import metrics

    async def dump() -> None:
        raise AssertionError("no scrape expected")

    src = metrics.Source(dump=dump, document=lambda reply: {}, events=lambda: None,  # type: ignore[arg-type]
                         worker_restarts=lambda: 0, worker_pid=lambda: None)

    async def body() -> None:
        server = await metrics.start(ListenAddress(ipaddress.ip_address("127.0.0.1"), 0), src, serve=False)
        assert server._server is not None and not server._server.is_serving()
        await server.start_serving()
        assert server._server.is_serving()
        await server.close()

    asyncio.run(body())
