"""Review revconf F1, at the start's check (load_config's root_check, as root): a folder another user may fill
is refused only once it holds a file.  An include glob's folder, and the credential folder x509ca/, that
another user (tunsec-dp here; nobody elsewhere) owns pass the start while empty; a reload reads them as the
service user with no check at all (docs/privileges.md), so that user's configuration file or CA certificate put
there later is acted on: a tunnel of its choosing, a CA tunsec trusts.  The start must refuse them as it refuses
the same folder holding a file (tests/conf/test_root_credentials.py "folder")."""

from __future__ import annotations

import os
import pwd
import shutil
from pathlib import Path

import connections_data
import pytest
from connections_data import CERT_CONF, Pki, moon_dir
from revconf_data import manual_tunnel

from tunsec.conf.config import load_config
from tunsec.conf.errors import ConfigError

pki = connections_data.pki   # the module-scoped PKI fixture
root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (ownership, the root check)")
OTHER = "tunsec-dp"   # a user that is neither root nor the service user (tunsec)

MANUAL = manual_tunnel("good") + "include conf.d/*.conf\n"


def other_owns(folder: Path) -> None:
    user = pwd.getpwnam(OTHER)
    os.chown(folder, user.pw_uid, user.pw_gid)


@root
def test_an_include_globs_folder_another_user_owns_is_refused_while_empty(tmp_path: Path) -> None:
    conf = tmp_path / "tunsec.conf"
    conf.write_text(MANUAL)
    conf.chmod(0o600)
    (tmp_path / "conf.d").mkdir(mode=0o755)
    other_owns(tmp_path / "conf.d")
    with pytest.raises(ConfigError) as caught:
        load_config(conf, root_check=True)
    assert str(tmp_path / "conf.d") in str(caught.value), str(caught.value)


@root
def test_an_empty_x509ca_folder_another_user_owns_is_refused(tmp_path: Path, pki: Pki) -> None:
    """The CAs come through `authorities` from a folder of root's; x509ca/ is empty, another user's."""
    cas = tmp_path / "cas"
    cas.mkdir()
    conf = moon_dir(tmp_path, pki, CERT_CONF)
    for name in ("caCert.der", "subCaCert.pem"):
        shutil.move(tmp_path / "x509ca" / name, cas / name)
    conf.write_text(CERT_CONF + f"authorities {{\n  root {{ cacert = {cas / 'caCert.der'} }}\n"
                                f"  sub {{ cacert = {cas / 'subCaCert.pem'} }}\n}}\n")
    conf.chmod(0o600)
    load_config(conf, root_check=True)   # as laid out (x509ca/ root's): it loads
    other_owns(tmp_path / "x509ca")
    with pytest.raises(ConfigError) as caught:
        load_config(conf, root_check=True)
    assert str(tmp_path / "x509ca") in str(caught.value), str(caught.value)
