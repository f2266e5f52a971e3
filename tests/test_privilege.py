"""Startup checks around privilege, each run in a throwaway network namespace
(``unshare --net``) so that nothing reaches the host's network: the error names
the operation, the object, the missing privilege and the fix."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from reachable import python_argv, scratch_dir

from tunsec.runtime import default_control_socket
from tunsec.statedir import MARKER, init_state_dir

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make namespaces and change user")

MANUAL = """tunsec {{
  control_socket = {sock}
  state_dir = {state}
{extra}}}
manual {{
  t {{
    local_addr = 127.0.0.1
    remote_addr = 127.0.0.2
    local_ts = 10.1.0.0/24
    remote_ts = 10.2.0.0/24
    esp = aes128gcm16
    spi_in = 0xc0010001
    key_in = 0x{key}00
    spi_out = 0xc0020001
    key_out = 0x{key}ff
  }}
}}
"""

IKE = """tunsec {{
  control_socket = {sock}
}}
connections {{
  c {{
    local_addrs = 127.0.0.1
    remote_addrs = 127.0.0.2
    local {{
      auth = psk
      id = a
    }}
    remote {{
      auth = psk
      id = b
    }}
    children {{
      x {{
        local_ts = 10.1.0.0/24
        remote_ts = 10.2.0.0/24
      }}
    }}
  }}
}}
secrets {{
  ike-1 {{
    id = b
    secret = 0x{key}
  }}
}}
"""


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A scratch directory the users tunsec drops to can reach (pytest's own is root's alone)."""
    with scratch_dir("tunsec-priv-") as d:
        yield d


def up(conf: Path, prefix: list[str], before: str = "true") -> subprocess.CompletedProcess[str]:
    """tunsec up in a network namespace of its own, with lo up (and the shell command before run first,
    as root); it must refuse to start."""
    # sysfs mounted again, so /sys/class/net shows this namespace's devices
    argv = ["unshare", "--net", "--mount", "--propagation", "private", "sh", "-c",
            f'mount -t sysfs none /sys && ip link set lo up && {before} && exec "$@"', "sh",
            *python_argv(prefix), "-m", "tunsec", "up", "-c", str(conf)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def user_dir(tmp_path: Path, pw: pwd.struct_passwd) -> Path:
    d = tmp_path / "run"
    d.mkdir()
    os.chown(d, pw.pw_uid, pw.pw_gid)
    return d


def test_user_set_without_setuid_is_refused_before_anything_is_set_up(tmp_path: Path) -> None:
    conf = tmp_path / "t.conf"
    conf.write_text(MANUAL.format(sock=tmp_path / "s.sock", state=tmp_path / "state", extra="  user = nobody\n",
                                  key="11" * 19))
    r = up(conf, ["setpriv", "--inh-caps=-all", "--bounding-set=-setuid,-setgid", "--"])
    assert r.returncode == 1
    assert "to nobody" in r.stderr and "needs CAP_SETUID and CAP_SETGID" in r.stderr, r.stderr
    assert "user = root" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "s.sock").exists()


def test_state_dir_the_user_cannot_reach_is_a_startup_error(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)   # root's: nobody cannot search it, whatever state/ inside is
    conf = tmp_path / "t.conf"
    init_state_dir(closed / "state")   # root's, as `tunsec init-state` run by root leaves it
    conf.write_text(MANUAL.format(sock=tmp_path / "s.sock", state=closed / "state", extra="  user = nobody\n",
                                  key="22" * 19))
    r = up(conf, [])
    assert r.returncode == 1
    assert f"state_dir {closed / 'state'} is not writable by nobody" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_ike_on_port_500_as_a_user_names_the_capability_and_the_port_fix(tmp_path: Path) -> None:
    pw = pwd.getpwnam("nobody")
    d = user_dir(tmp_path, pw)
    conf = d / "t.conf"
    conf.write_text(IKE.format(sock=d / "s.sock", key="33" * 16))
    os.chown(conf, pw.pw_uid, pw.pw_gid)
    conf.chmod(0o600)
    r = up(conf, ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups",
                  "--inh-caps=-all", "--"])
    assert r.returncode == 1
    assert "cannot bind UDP (IKE) 127.0.0.1 port 500" in r.stderr, r.stderr
    assert "CAP_NET_BIND_SERVICE" in r.stderr and "port >= 1024" in r.stderr
    assert "Traceback" not in r.stderr


def test_control_socket_directory_the_user_may_not_create(tmp_path: Path) -> None:
    pw = pwd.getpwnam("nobody")
    d = user_dir(tmp_path, pw)
    conf = d / "t.conf"
    conf.write_text(IKE.format(sock=tmp_path / "root-only" / "s.sock", key="44" * 16))
    os.chown(conf, pw.pw_uid, pw.pw_gid)
    r = up(conf, ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups",
                  "--inh-caps=-all", "--"])
    assert r.returncode == 1
    assert f"control socket directory {tmp_path / 'root-only'} is not writable by nobody" in r.stderr, r.stderr
    assert "RUNTIME_DIRECTORY" in r.stderr


def test_default_control_socket_follows_the_runtime_directory() -> None:
    assert default_control_socket({"RUNTIME_DIRECTORY": "/run/tunsec-a:/run/other"}) == "/run/tunsec-a/tunsec.sock"
    assert default_control_socket({"XDG_RUNTIME_DIR": "/run/user/1000"}) == "/run/user/1000/tunsec/tunsec.sock"
    assert default_control_socket({"XDG_RUNTIME_DIR": "relative"}) == "/run/tunsec/tunsec.sock"
    assert default_control_socket({}) == "/run/tunsec/tunsec.sock"


def test_status_reads_the_same_default(tmp_path: Path) -> None:
    # RUNTIME_DIRECTORY comes first: a CI runner started as a systemd service with RuntimeDirectory= hands it on
    env = {k: v for k, v in os.environ.items() if k != "RUNTIME_DIRECTORY"} | {"XDG_RUNTIME_DIR": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "tunsec", "status"], capture_output=True, text=True, env=env,
                       timeout=30)
    assert r.returncode == 1 and f"no running tunsec on {tmp_path}/tunsec/tunsec.sock" in r.stderr, r.stderr


def as_nobody() -> list[str]:
    pw = pwd.getpwnam("nobody")
    return ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups", "--inh-caps=-all", "--"]


@pytest.mark.parametrize("before, expected", [
    ("true", "creating TUN tunsec0 as nobody: needs CAP_NET_ADMIN; as root, once: tunsec prepare"),
    ("ip tuntap add dev tunsec0 mode tun user daemon",
     "attaching to TUN tunsec0 (owner daemon) as nobody: needs CAP_NET_ADMIN or to be its owner"),
])
def test_a_tun_the_user_may_not_open_names_the_device_and_the_fix(tmp_path: Path, before: str,
                                                                  expected: str) -> None:
    pw = pwd.getpwnam("nobody")
    d = tmp_path / "run"
    d.mkdir()
    init_state_dir(d / "state")   # while d is root's: root initialises nothing under nobody's directory
    os.chown(d, pw.pw_uid, pw.pw_gid)
    conf = d / "t.conf"
    for p in (d / "state", d / "state" / MARKER):   # nobody's, as `tunsec prepare` hands them over
        os.chown(p, pw.pw_uid, pw.pw_gid)
    conf.write_text(MANUAL.format(sock=d / "s.sock", state=d / "state", extra="", key="55" * 19))
    os.chown(conf, pw.pw_uid, pw.pw_gid)
    r = up(conf, as_nobody(), before)
    assert r.returncode == 1
    assert f"cannot open TUN tunsec0: {expected}" in r.stderr, r.stderr
    assert "ip tuntap add dev tunsec0 mode tun user nobody vnet_hdr" in r.stderr and "Traceback" not in r.stderr


def test_no_tunsec_user_is_a_startup_error_not_nobody(tmp_path: Path) -> None:
    """The host has nobody but no tunsec (an /etc/passwd without it, in a mount namespace): tunsec
    does not fall back to nobody, whom other daemons share; it says what to create, before it sets
    anything up.  user = nobody written out is still honoured (the other tests here)."""
    passwd = tmp_path / "passwd"
    passwd.write_text("".join(line for line in Path("/etc/passwd").read_text().splitlines(keepends=True)
                              if not line.startswith("tunsec:")))
    conf = tmp_path / "t.conf"
    conf.write_text(MANUAL.format(sock=tmp_path / "s.sock", state=tmp_path / "state", extra="", key="66" * 19))
    r = up(conf, [], f"mount --bind {passwd} /etc/passwd")
    assert r.returncode == 1
    assert "cannot start: user tunsec does not exist on this host" in r.stderr, r.stderr
    assert "useradd --system --no-create-home --shell /usr/sbin/nologin tunsec" in r.stderr
    assert "user = root" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "s.sock").exists() and not (tmp_path / "state").exists()


def test_the_read_hint_never_names_a_shared_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """tunsec's own group (only tunsec in it): chgrp; nobody's nogroup (shared): an ACL for the user."""
    import grp

    from tunsec import daemon, privilege

    for user, expected in (("tunsec", "chgrp tunsec F; chmod g+r F"), ("nobody", "setfacl -m u:nobody:r F")):
        pw = pwd.getpwnam(user)
        monkeypatch.setattr(privilege, "_me", lambda name=user: name)
        monkeypatch.setattr(os, "getegid", lambda gid=pw.pw_gid: gid)
        assert daemon._read_grant("F") == expected
        assert "chgrp " + grp.getgrgid(pwd.getpwnam("nobody").pw_gid).gr_name not in daemon._read_grant("F")


def test_hardening_is_checked_by_the_drops_verification() -> None:
    """In a fresh process: dumpable with a core limit until harden(); _verify (run by every drop) says
    so rather than going on."""
    code = """
from tunsec import privilege
before = privilege.hardening_problem()
privilege._prctl(privilege.PR_SET_NO_NEW_PRIVS, 1)   # all else _verify checks holds: only the flag is left
try:
    privilege._verify(privilege.get_caps().permitted)
except privilege.PrivilegeError as err:
    refused = str(err)
privilege.harden()
print(before, refused, privilege.hardening_problem(), sep="|")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    dumpable = "the process is still dumpable (PR_SET_DUMPABLE 0 did not stick)"
    assert r.stdout.strip().split("|") == [dumpable, dumpable, "None"], r.stdout
