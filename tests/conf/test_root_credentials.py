"""As root (load_config's root_check: tunsec up, prepare, a reload with user = root), the credential files
root reads -- x509/, x509ca/, private/..., authorities' and certs' files -- must be ones nobody but root and
the service user (tunsec { user }) may change, nor a directory on their path: another user who may replace a
CA certificate makes tunsec trust their CA, one who may replace a key makes it sign with theirs.  Real files
and owners (the tests run as root); tunsec check (no root_check) reads them as before."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import connections_data
import pytest
from connections_data import CERT_CONF, Pki, moon_dir
from reachable import scratch_dir

from tunsec.conf.config import load_config
from tunsec.conf.errors import ConfigError

pki = connections_data.pki   # the module-scoped PKI fixture
root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (ownership, the root check)")
SERVICE, OTHER = "tunsec", "tunsec-dp"


def uid(name: str) -> int:
    return pwd.getpwnam(name).pw_uid


def gateway(tmp_path: Path, pki: Pki, user: str | None = None) -> Path:
    conf = CERT_CONF if user is None else f"tunsec {{ user = {user} }}\n" + CERT_CONF
    return moon_dir(tmp_path, pki, conf)


def changeable(tmp_path: Path, how: str, owner: str) -> Path:
    """Make a credential (or its folder) one owner may change; the path the refusal names."""
    ca, key = tmp_path / "x509ca" / "caCert.der", tmp_path / "private" / "moonKey.pem"
    if how == "ca-owner":
        os.chown(ca, uid(owner), -1)
        return ca
    if how == "key-group":
        os.chown(key, 0, pwd.getpwnam(owner).pw_gid)
        key.chmod(0o660)
        return key
    if how == "folder":
        os.chown(ca.parent, uid(owner), -1)
        return ca.parent
    if how == "cert-link":
        cert = tmp_path / "x509" / "moonCert.pem"
        real = tmp_path / "elsewhere.pem"
        cert.rename(real)
        os.chown(real, uid(owner), -1)
        cert.symlink_to(real)
        return real
    raise AssertionError(how)


@root
@pytest.mark.parametrize("how", ["ca-owner", "key-group", "folder", "cert-link"])
def test_a_credential_another_user_may_change_is_refused_as_root(tmp_path: Path, pki: Pki, how: str) -> None:
    conf = gateway(tmp_path, pki)
    culprit = changeable(tmp_path, how, OTHER)
    with pytest.raises(ConfigError) as caught:
        load_config(conf, root_check=True)
    text = str(caught.value)
    assert "refusing it: " in text and str(culprit) in text, text
    assert f"so nobody but root and {SERVICE} (uid {uid(SERVICE)}) may change it" in text, text
    assert "as root, chown root" in text or "as root, chmod go-w" in text, text
    load_config(conf)   # tunsec check (no root check): as before


@root
def test_the_service_users_own_ca_passes_but_not_with_user_root(pki: Pki) -> None:
    """The service user reads the files itself at a reload and holds them while it runs: owning them gives it
    nothing more.  With user = root nobody but root may change them.  Root reads a file the service user owns
    as that user (review revrootfiles F1), so the tree is one that user may search (pytest's is root's, 0700)."""
    with scratch_dir("root-credentials-") as where:
        _own_ca_passes_but_not_with_user_root(where, pki)


def _own_ca_passes_but_not_with_user_root(where: Path, pki: Pki) -> None:
    conf = gateway(where, pki)
    ca = changeable(where, "ca-owner", SERVICE)
    (conn,) = load_config(conf, root_check=True).connections
    assert conn.ike.local.private_key is not None
    conf = gateway(where, pki, user="root")
    os.chown(ca, uid(SERVICE), -1)
    with pytest.raises(ConfigError, match=f"{ca} is owned by {SERVICE} .*so nobody but root may change it"):
        load_config(conf, root_check=True)


@root
def test_a_ca_named_by_authorities_is_checked_where_it_is(tmp_path: Path, pki: Pki) -> None:
    conf = gateway(tmp_path, pki)
    extra = tmp_path / "other" / "ca.der"
    extra.parent.mkdir()
    (tmp_path / "x509ca" / "caCert.der").rename(extra)
    conf.write_text(CERT_CONF + f"authorities {{ root {{ cacert = {extra} }} }}\n")
    load_config(conf, root_check=True)
    os.chown(extra.parent, uid(OTHER), -1)
    refused = f"authorities.root.cacert: other/ca.der: refusing it: {extra.parent} is owned by {OTHER}"
    with pytest.raises(ConfigError, match=refused):
        load_config(conf, root_check=True)
