"""What root reads of a configuration is what it checked (review revroot F1, F3).  On main the check of who
may change a configuration file (safefs.others_may_change) ran on the paths in cfg.files after cli._load had
read them, and a path that no longer existed passed: the service user renamed or removed the file it had made
root read (told when by inotify), and root went on with the user's configuration.  Now, as root, load_config
(root_check) checks each file before opening it, opens what it checked without following a link, and
compares the open file with it; a name that leads nowhere is refused.  The refusal's fix names the path at
fault, the configured user, and an ACL when one grants the write (F3).  Root; the user's moves as uid
tunsec (setpriv)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from reachable import scratch_dir

from tunsec import privilege, safefs
from tunsec.conf import config
from tunsec.conf.config import load_config

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root")

USER = "tunsec"
OTHER = "tunsec-dp"   # an existing user other than the default, as `user =`
EVIL = "tunsec {\n  user = root\n  mtu = 1400\n}\n"


@pytest.fixture
def base() -> Iterator[Path]:
    """Root's, 0755, under sticky /tmp: a tree only root may change, as /etc."""
    with scratch_dir("fixroot2-") as d:
        yield d


def as_user(*argv: str) -> None:
    subprocess.run(["setpriv", "--reuid", USER, "--regid", USER, "--clear-groups", *argv], check=True)


def uid() -> int:
    return pwd.getpwnam(USER).pw_uid


def init_state(conf: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tunsec", "init-state", "-c", conf], capture_output=True,
                          text=True, timeout=60, **kw)  # type: ignore[call-overload]


def test_a_config_read_without_the_check_is_refused_once_the_user_renamed_it(base: Path) -> None:
    """The review's deterministic order: root reads (as cli._load did on main), the user renames the file in
    its own directory, then Daemon.prepare / prepare() / init-state check.  On main the check found no file at
    the path and passed; now what was not checked before its read is refused as root whatever the path holds."""
    home = base / "home"
    home.mkdir()
    os.chown(home, uid(), -1)
    (home / "tunsec.conf").write_text(EVIL)   # root's, 0644: only the directory is the user's
    cfg = load_config(str(home / "tunsec.conf"))
    assert cfg.tunsec.user == "root"
    as_user("mv", str(home / "tunsec.conf"), str(home / "tunsec.conf.old"))
    with pytest.raises(privilege.PrivilegeError, match="refusing configuration file"):
        privilege.check_config_files(cfg)


def test_the_check_comes_before_the_read_and_names_the_users_directory(base: Path) -> None:
    home = base / "home"
    home.mkdir()
    os.chown(home, uid(), -1)
    conf = home / "tunsec.conf"
    conf.write_text(EVIL)
    why = f"refusing configuration file {conf}: {home} is owned by {USER}"
    with pytest.raises(config.ConfigRefused, match=why) as err:
        load_config(str(conf), root_check=True)
    assert f"chown root {home}; chmod go-w {home}" in str(err.value)


def test_an_include_of_the_users_unlinked_from_a_sticky_dir_is_refused(base: Path) -> None:
    """fixroot's exception (a root file in a sticky directory passes) held for a name the user had removed:
    on main the include of the user's was read, unlinked, and the check of its path passed."""
    etc, drop = base / "etc", base / "conf.d"
    etc.mkdir()
    drop.mkdir()
    drop.chmod(0o1777)
    (etc / "tunsec.conf").write_text(f"include {drop}/*.conf\n")
    as_user("sh", "-c", f"printf '%s' '{EVIL}' > {drop}/zz.conf")
    with pytest.raises(config.ConfigRefused, match=f"{drop}/zz.conf is owned by {USER}"):
        load_config(str(etc / "tunsec.conf"), root_check=True)
    # the same name gone between the glob and the check: refused, not "nothing to change"
    assert safefs.others_may_change(drop / "zz.gone") is not None


def test_a_file_replaced_between_the_check_and_the_open_is_refused(base: Path) -> None:
    """The compare after the open (only root may replace it here: an editor's save, a root process fooled)."""
    conf = base / "tunsec.conf"
    conf.write_text("tunsec { mtu = 1400 }\n")
    checked = safefs.trusted(conf)
    (base / "new.conf").write_text(EVIL)
    os.replace(base / "new.conf", conf)
    with pytest.raises(safefs.Untrusted, match="replaced between the check and the read"):
        safefs.read_checked(conf, checked)
    checked = safefs.trusted(conf)
    conf.unlink()
    with pytest.raises(safefs.Untrusted, match="cannot be opened as checked"):
        safefs.read_checked(conf, checked)
    assert safefs.others_may_change(conf) is not None   # on main: None ("a configuration given as text")


def test_stdin_of_a_file_removed_meanwhile_is_refused_and_a_pipe_of_roots_accepted(base: Path) -> None:
    """-c /dev/stdin: a regular file behind it is checked by its name (/proc/self/fd/0 names it); one removed
    since has no name to check and is refused (on main: passed, and init-state made the directory it names).
    A pipe (-c <(...), a pipe on stdin) has nothing that lasts to check: only processes root started hold its
    ends, and no other user may open them through /proc; it is accepted."""
    target = base / "rootonly" / "made-by-root"
    (base / "rootonly").mkdir(mode=0o755)
    home = base / "home"
    home.mkdir()
    os.chown(home, uid(), -1)
    conf = home / "tunsec.conf"
    conf.write_text(f"tunsec {{\n  state_dir = {target}\n}}\n")
    with open(conf, "rb") as f:
        as_user("rm", str(conf))
        r = init_state("/dev/stdin", stdin=f)
    assert r.returncode == 1 and "refusing configuration file /dev/stdin" in r.stderr, r.stderr
    assert not target.exists()
    r = init_state("/dev/stdin", input=f"tunsec {{\n  state_dir = {target}\n}}\n")
    assert r.returncode == 0, r.stderr
    assert target.is_dir()


def test_the_fix_names_the_file_and_the_configured_user(base: Path) -> None:
    """F3: on main the fix read `chown root FILE; chmod go-w FILE` and the read hint named tunsec whatever
    tunsec { user } said."""
    conf = base / "tunsec.conf"
    conf.write_text(f"tunsec {{\n  user = {OTHER}\n  state_dir = {base}/state\n}}\n")
    os.chown(conf, uid(), -1)
    r = init_state(str(conf))
    assert r.returncode == 1 and f"chown root {conf}; chmod go-w {conf}" in r.stderr, r.stderr
    assert "FILE" not in r.stderr, r.stderr
    assert OTHER in r.stderr.split("read it")[-1], r.stderr
    assert not (base / "state").exists()


def test_the_fix_for_a_directory_names_the_directory(base: Path) -> None:
    d = base / "conf"
    d.mkdir()
    d.chmod(0o775)
    conf = d / "tunsec.conf"
    conf.write_text(f"tunsec {{\n  state_dir = {base}/state\n}}\n")
    r = init_state(str(conf))
    assert r.returncode == 1 and f"as root, chmod go-w {d}" in r.stderr, r.stderr


@pytest.mark.skipif(shutil.which("setfacl") is None, reason="needs setfacl")
def test_an_acl_granting_the_write_is_named_with_its_fix(base: Path) -> None:
    conf = base / "tunsec.conf"
    conf.write_text(f"tunsec {{\n  state_dir = {base}/state\n}}\n")
    conf.chmod(0o644)
    if subprocess.run(["setfacl", "-m", f"u:{USER}:rw", str(conf)], capture_output=True).returncode:
        pytest.skip("no ACLs on this file system")
    r = init_state(str(conf))
    assert r.returncode == 1, r.stderr
    assert f"writable by a user or group its ACL names (getfacl {conf})" in r.stderr, r.stderr
    assert f"setfacl -b {conf}" in r.stderr, r.stderr
    assert not (base / "state").exists()
