"""`tunsec up` started as root gives state_dir away at its drop only where `tunsec prepare` would
(review revctl F2): a directory that is root's or the user's and holds nothing but tunsec's entries
(statedir.refusal, one rule for both), and of it only the files tunsec names (safefs.give_dir).  A
state_dir naming a shared directory (/var/lib, /etc/tunsec next to the configuration and its keys)
is refused, and root's files in it stay root's.  Root, the drop in a process of its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import netns_unavailable
from reachable import scratch_dir

from tunsec import privilege
from tunsec.bench.netns import scratch_netns

USER = "tunsec"
NETNS_PROBLEM = netns_unavailable()
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (the drop and the chown)")

DROP = """
import dataclasses, os, sys
from tunsec import privilege
from tunsec.conf.tunsec_section import TunsecSettings
s = dataclasses.replace(TunsecSettings(), state_dir=sys.argv[1])
try:   # what Daemon._drop does once set up, for a configuration with a manual tunnel
    privilege.give_up_control(privilege.plan(sys.argv[2]), s, manual=True, own_routes_on_kept_tun=False)
    print("dropped to uid", os.getuid())
except privilege.PrivilegeError as err:
    print("refused:", err)
"""


@pytest.fixture
def base() -> Iterator[Path]:
    with scratch_dir("fixroot-") as d:   # root's, 0755, as / is
        yield d


@pytest.fixture
def user() -> privilege.Target:
    t = privilege.target_for(USER)
    assert t is not None
    return t


def drop(state: Path) -> str:
    r = subprocess.run([sys.executable, "-c", DROP, str(state), USER], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.mark.parametrize("shared, victim", [("var/lib", "dpkg-status"), ("etc/tunsec", "tunsec.conf")])
def test_the_drop_refuses_a_shared_state_dir_and_gives_nothing_away(base: Path, shared: str, victim: str) -> None:
    directory = base / shared
    directory.mkdir(parents=True)
    directory.chmod(0o755)
    (directory / victim).write_text("root's\n")
    (directory / victim).chmod(0o600)
    (directory / "tunsec-instance-id").write_text("x\n")   # a tunsec name does not make the rest tunsec's
    out = drop(directory)
    assert out.startswith(f"refused: cannot give {directory} (tunsec {{ state_dir }}) to {USER}: it holds entries "
                          f"that are not tunsec's ({victim})"), out
    assert "/var/lib/tunsec/" in out
    for p in (directory, directory / victim, directory / "tunsec-instance-id"):
        assert os.stat(p).st_uid == 0, p


def test_the_drop_gives_a_directory_of_tunsecs_entries_and_in_the_users_own_only_tunsecs_files(
        base: Path, user: privilege.Target) -> None:
    """The user's directory may hold the user's own files: left alone; root's file under tunsec's name (the
    sequence state written before the drop) is given."""
    state = base / "state"
    state.mkdir(mode=0o700)
    (state / "manual-key-0123456789abcdef.json").write_text("{}\n")
    (state / "notes").write_text("the user's\n")
    os.chown(state / "notes", user.uid, user.gid)
    out = drop(state)
    assert out == f"dropped to uid {user.uid}", out
    for name in ("", "manual-key-0123456789abcdef.json", "notes"):
        assert os.stat(state / name).st_uid == user.uid, name


@pytest.mark.parametrize("entry", ["lost+found", "README"])
def test_a_state_dir_already_the_users_with_a_root_entry_still_starts(base: Path, user: privilege.Target,
                                                                      entry: str) -> None:
    """Review revroot F2 (a regression of h/fixroot): a state_dir that is the user's already (StateDirectory=,
    prepare, a chown by hand) holding one entry of root's under a name not tunsec's -- lost+found where it is
    a dedicated ext4 mount, an administrator's README -- was refused at the drop.  Nothing is given at the
    directory's level, the user may rename or remove any entry in it already, and give_dir gives only
    tunsec's names: the drop goes through and the entry stays root's."""
    state = base / "var" / "lib" / "tunsec"
    state.mkdir(parents=True)
    os.chown(state, user.uid, user.gid)
    state.chmod(0o700)
    if entry == "lost+found":
        (state / entry).mkdir(mode=0o700)   # mkfs.ext4's, root's
    else:
        (state / entry).write_text("keys rotated 2026-11\n")
    out = drop(state)
    assert out == f"dropped to uid {user.uid}", out
    assert (state / entry).lstat().st_uid == 0


@pytest.mark.netns
@pytest.mark.skipif(NETNS_PROBLEM is not None, reason=f"NETNS: {NETNS_PROBLEM}")
def test_up_as_root_with_the_config_directory_as_state_dir_leaves_it_roots(base: Path) -> None:
    """End to end, no manual tunnel: every start opens the prohibit-route record in state_dir, and an open
    record hands state_dir over.  On main the configuration (0600, the PSKs) and a private key next to it
    became tunsec's, who could then rewrite the configuration: root at the next start (F1)."""
    confdir = base / "tunsec"
    confdir.mkdir(mode=0o755)
    (confdir / "private").mkdir(mode=0o700)
    key = confdir / "private" / "gw.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    key.chmod(0o600)
    conf = confdir / "tunsec.conf"
    conf.write_text(f"tunsec {{\n  tun = fixroot1\n  control_socket = {base}/run/t.sock\n  state_dir = {confdir}\n"
                    "  mtu = 1400\n}\n")
    conf.chmod(0o600)
    with scratch_netns("fixroot") as ns:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "tunsec", "up", "-c", str(conf)],
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:   # refused at the drop: up ends by itself (on main it ran on, given the directory)
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert f"cannot give {confdir} (tunsec {{ state_dir }}) to {USER}: it holds entries that are not tunsec's " \
           "(private, tunsec.conf)" in err, err
    assert {p.name: os.stat(p).st_uid for p in (confdir, conf, key)} == {"tunsec": 0, "tunsec.conf": 0, "gw.pem": 0}
