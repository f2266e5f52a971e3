"""A reload after the drop reads the configuration as the service user (load_config's service_user): it
accepts only files and folders nobody but root and itself may change, as the root start does with root alone
(review revconf F1).  On main it checked nothing there, so a file another user put in a folder it may change,
or a CA certificate of theirs, was loaded.  Each case runs load_config in a process of the service user
(setpriv), on real files and owners (root); the service user's own credentials still pass, and a FIFO put in
the configuration's place is refused at once, not read until its writer ends (the reload lock held meanwhile)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import connections_data
import pytest
from connections_data import CERT_CONF, Pki, moon_dir
from reachable import python_argv, scratch_dir
from revconf_data import manual_tunnel

import tunsec

pki = connections_data.pki   # the module-scoped PKI fixture
pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                                reason="needs root (owners, a process of the service user)")
SERVICE, OTHER = "tunsec", "nobody"
AS_SERVICE = ["setpriv", "--reuid", SERVICE, "--regid", SERVICE, "--clear-groups"]
# what the daemon's reload does after the drop (Daemon.reload), in a process of the service user
RELOAD = """
import sys
from tunsec.conf.config import load_config
from tunsec.conf.errors import ConfigError
try:
    cfg = load_config(sys.argv[1], root_check=True, service_user=True)
except ConfigError as err:
    print("refused:", err)
else:
    print("loaded:", *[t.name for t in cfg.manual], len(cfg.connections))
"""


def reload_as_service_user(conf: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(Path(tunsec.__file__).resolve().parents[1])}
    done = subprocess.run([*python_argv(AS_SERVICE), "-c", RELOAD, str(conf)], capture_output=True, text=True,
                          timeout=60, env=env, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def owned_by(path: Path, name: str) -> Path:
    user = pwd.getpwnam(name)
    os.chown(path, user.pw_uid, user.pw_gid)
    return path


def folder(path: Path, owner: str = "root") -> Path:
    path.mkdir(mode=0o755)
    return owned_by(path, owner)


@pytest.fixture
def etc() -> Iterator[Path]:
    """Root's, 0755, on a way the service user may search (pytest's tmp_path is root's alone)."""
    with scratch_dir("fixconf-") as d:
        yield d


def manual_conf(etc: Path, tail: str = "") -> Path:
    conf = etc / "tunsec.conf"
    conf.write_text(manual_tunnel("good") + tail)
    conf.chmod(0o644)
    return conf


def test_an_include_folder_another_user_owns_is_refused_even_empty(etc: Path) -> None:
    other = folder(etc / "other.d", OTHER)
    conf = manual_conf(etc, f"include {other}/*.conf\n")
    out = reload_as_service_user(conf)
    assert out.startswith("refused:") and f"refusing include folder {other}" in out, out
    assert "chown root" in out, out   # the fix


def test_another_users_file_in_a_root_folder_is_refused(etc: Path) -> None:
    folder(etc / "conf.d")
    evil = etc / "conf.d" / "evil.conf"
    evil.write_text(manual_tunnel("evil", 2, "10.3.0.0/24"))
    owned_by(evil, OTHER)
    out = reload_as_service_user(manual_conf(etc, "include conf.d/*.conf\n"))
    assert out.startswith("refused:") and f"{evil} is owned by {OTHER}" in out, out


def test_a_glob_matching_nothing_in_a_root_folder_and_the_users_own_folder_pass(etc: Path) -> None:
    folder(etc / "conf.d")
    folder(etc / "mine.d", SERVICE)
    out = reload_as_service_user(manual_conf(etc, "include conf.d/*.conf\ninclude mine.d/*.conf\n"))
    assert out.split() == ["loaded:", "good", "0"], out


def test_a_ca_another_user_owns_is_refused_and_the_users_own_credentials_pass(etc: Path, pki: Pki) -> None:
    conf = moon_dir(etc, pki, CERT_CONF)
    conf.chmod(0o644)
    key = owned_by(etc / "private" / "moonKey.pem", SERVICE)   # its own key, 0600
    key.chmod(0o600)
    ca = owned_by(etc / "x509ca" / "caCert.der", SERVICE)
    assert reload_as_service_user(conf).split() == ["loaded:", "1"]
    owned_by(ca, OTHER)
    out = reload_as_service_user(conf)
    assert out.startswith("refused:") and f"{ca}: refusing it: {ca} is owned by {OTHER}" in out, out
    assert "tunsec, reloading as tunsec" in out, out


def test_an_empty_credential_folder_another_user_owns_is_refused(etc: Path, pki: Pki) -> None:
    conf = moon_dir(etc, pki, CERT_CONF)
    conf.chmod(0o644)
    owned_by(etc / "private" / "moonKey.pem", SERVICE)
    cas = etc / "cas"
    cas.mkdir()
    shutil.move(etc / "x509ca" / "caCert.der", cas / "caCert.der")
    shutil.move(etc / "x509ca" / "subCaCert.pem", cas / "subCaCert.pem")
    conf.write_text(CERT_CONF + f"authorities {{ root {{ cacert = {cas / 'caCert.der'} }} }}\n")
    assert reload_as_service_user(conf).split() == ["loaded:", "1"]
    owned_by(etc / "x509ca", OTHER)
    out = reload_as_service_user(conf)
    assert out.startswith("refused:") and f"refusing it: {etc / 'x509ca'} is owned by {OTHER}" in out, out


def test_a_fifo_in_the_configurations_place_is_refused_at_once(etc: Path) -> None:
    """Nobody writes into the FIFO: a reload that opened it blocking would wait for ever (the timeout fails it)."""
    conf = etc / "tunsec.conf"
    os.mkfifo(conf, 0o644)
    out = reload_as_service_user(conf)
    assert out.startswith("refused:") and "not a regular file" in out, out
