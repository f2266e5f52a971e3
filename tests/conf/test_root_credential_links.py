"""Links the service user puts in a credential folder it may own, read by root at `tunsec up` (load_config's
root check: conf/credentials.py, safefs.trusted with owners).  Review revrootfiles F1 (a root-only key linked
in) and F2 (a pipe root holds, a link re-pointed after the check); these tests failed before its fix.

The service user may own x509/, x509ca/, private/... (credential_owners): it reads them itself at a reload.
What root reads there must still be only what that user could give it.  Before the fix:
- safefs.trusted let an anonymous pipe reached through /proc/self/fd pass (for ``-c <(...)``: "only processes
  root started hold its ends"), also at the end of a link of the service user's: root then read a pipe it
  holds itself (its stdout under Docker: the start hangs, as the pipe's writer is root), and read_checked opened
  the *link* again, following it and blocking: re-pointed between the check and the open, root opens whatever
  the service user names (a FIFO: a hang; /dev/watchdog: a reboot), before the inode comparison refuses it;
- a link the service user makes in its folder to a root-only key elsewhere passed (trusted follows a link of an
  owner's, and the key is root's in a folder only root may change; a hard link keeps root as its owner, with
  fs.protected_hardlinks=0): root loaded a key the service user could not read.
Now a pipe passes only by a way root's alone, and what an owner may change on the way is read with that
owner's rights.

Real files, owners, a pipe and inotify (the tests run as root)."""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterator
from pathlib import Path

import connections_data
import pytest
from connections_data import CERT_CONF, Pki, key_bytes, moon_dir, pem, spki
from opened import Inotify
from reachable import scratch_dir

from tunsec.conf import credentials
from tunsec.conf.config import load_config
from tunsec.conf.credentials import Credentials
from tunsec.conf.errors import ConfigError, ConfigIssue
from tunsec.safefs import Checked
from tunsec.safefs import trusted as real_trusted

pki = connections_data.pki   # the module-scoped PKI fixture
root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (ownership, the root check)")
SERVICE = "tunsec"


@pytest.fixture
def where() -> Iterator[Path]:
    """Root's, 0755, under sticky /tmp (as /etc/swanctl): a tree the service user may search, as a real one
    (pytest's own is root's alone, mode 0700)."""
    with scratch_dir("revrootfiles-creds-") as d:
        yield d


def uid(name: str) -> int:
    return pwd.getpwnam(name).pw_uid


def service_link(target: str, link: Path) -> None:
    """A symbolic link of the service user's (as it makes one in a folder it owns)."""
    os.symlink(target, link)
    os.lchown(link, uid(SERVICE), -1)


def service_certs(where: Path, pki: Pki) -> tuple[Path, Path]:
    """moon's configuration (root's; its `certs = moonCert.pem`) with x509/ the service user's: (the file, the
    name the configuration gives, which the service user may now replace: by a link)."""
    conf = moon_dir(where, pki, CERT_CONF)
    os.chown(where / "x509", uid(SERVICE), -1)
    return conf, where / "x509" / "moonCert.pem"


def loads(conf: Path) -> bool:
    """True when root loads the configuration (tunsec up's load_config with the root check)."""
    try:
        load_config(conf, root_check=True)
    except ConfigError:
        return False
    return True


@root
def test_a_service_users_link_into_a_pipe_root_holds_is_not_read(where: Path, pki: Pki) -> None:
    """A file the configuration names (certs, cacerts, authorities, secrets' file: the folders' listings skip
    what is not a regular file) replaced by a link to a pipe root holds."""
    conf, cert = service_certs(where, pki)
    assert loads(conf)   # the folder the service user owns passes, as h/fixrootfiles wants
    r, w = os.pipe()   # a pipe this (root) process holds, as tunsec up holds its stdout under Docker
    try:
        data = pem(pki.moon.cert)
        os.write(w, data)
        os.close(w)    # else root's read would wait for root's own writer: the hang
        cert.unlink()
        service_link(f"/proc/self/fd/{r}", cert)
        loads(conf)
        os.set_blocking(r, False)
        left = os.read(r, 1 << 16)
    finally:
        os.close(r)
    assert left == data, "root read a pipe of its own through a link of the service user's"


@pytest.fixture
def decoy(where: Path) -> Iterator[tuple[Path, Inotify]]:
    """A file of root's elsewhere, watched: in real life a FIFO (root's start hangs) or /dev/watchdog."""
    path = where / "elsewhere" / "decoy"
    path.parent.mkdir()
    path.write_bytes(b"not for root to open\n")
    watch = Inotify(path)
    yield path, watch
    watch.close()


@root
def test_a_link_repointed_after_the_check_is_not_followed_by_root(where: Path, pki: Pki,
                                                                   decoy: tuple[Path, Inotify],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The race the service user may run against tunsec up (it owns the link's folder): the link points at a
    pipe root holds when it is checked and elsewhere when root opens it.  The window is made certain here by
    re-pointing the link right after the check (what a process of the service user renaming links in a loop
    wins now and then)."""
    conf, link = service_certs(where, pki)
    target, watch = decoy

    def raced(path: str, owners: tuple[int, ...] = ()) -> Checked:
        checked = real_trusted(path, owners)
        if path == str(link):
            service_link(str(target), link.with_name("new"))
            os.replace(link.with_name("new"), link)   # the service user's rename, after the check
        return checked

    monkeypatch.setattr(credentials, "trusted", raced)
    r, w = os.pipe()
    try:
        link.unlink()
        service_link(f"/proc/self/fd/{r}", link)
        loads(conf)
    finally:
        os.close(r)
        os.close(w)
    assert not watch.opened(), f"root opened {target}, where the service user re-pointed {link} after the check"


@root
@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_a_root_only_key_linked_into_the_service_users_folder_is_not_loaded(where: Path, pki: Pki,
                                                                             link: str) -> None:
    """Another service's key, root's alone (0600 in a folder of mode 0700: the service user cannot read it),
    linked by the service user into private/, the folder it may own: a symbolic link of its own (trusted
    follows it: the link is an owner's, the file root's in a folder only root may change), or a hard link
    (fs.protected_hardlinks=0 lets it link a file it may not read: made by root here, this host has 1).
    Root reads, and tunsec then holds and signs with, a key its service user could not read."""
    vault = where / "other-service"
    vault.mkdir(mode=0o700)
    secret = vault / "tls.key"
    secret.write_bytes(key_bytes(pki.sun.key))
    secret.chmod(0o600)
    folder = where / "private"
    folder.mkdir()
    os.chown(folder, uid(SERVICE), -1)
    if link == "symlink":
        service_link(str(secret), folder / "tls.key")
    else:
        os.link(secret, folder / "tls.key")
    issues: list[ConfigIssue] = []
    keys = Credentials(str(where), issues, owners=(uid(SERVICE),)).private_keys()
    assert spki(pki.sun.key) not in [spki(k) for k in keys], "root loaded a key its service user may not read"
    assert any("tls.key" in i.file for i in issues), issues
