"""Review revroot3 of h/fixrootfiles2 (privilege.acting_as): a proof that fails on main.

F1: root reads a credential the service user may have chosen (a link or folder of its own on the way:
Checked.by_owner) "with that user's ids", so that a link it makes to a root-only key is refused
(review revrootfiles F1).  acting_as changes the effective uid and gid and leaves the capabilities to the
kernel's setuid fix-up, which clears the effective set when the effective uid leaves 0.  That fix-up is
optional: SECBIT_NO_SETUID_FIXUP (systemd's ``SecureBits=no-setuid-fixup``, ``capsh --secbits``, a
supervisor that keeps capabilities across its own uid changes) turns it off, and the process then opens the
file with uid tunsec *and* CAP_DAC_OVERRIDE: root loads the root-only key again.  acting_as neither clears
the effective capabilities itself nor checks that they are gone.

Real files and owners, a real securebits flag in a child process (the flag is per thread and would stay in the
test process); runs as root."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from reachable import scratch_dir

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (owners, securebits)")
SERVICE = "tunsec"

CHILD = """
import ctypes, sys
PR_SET_SECUREBITS, SECBIT_NO_SETUID_FIXUP = 28, 1 << 2
libc = ctypes.CDLL(None, use_errno=True)
if sys.argv[3] == "1" and libc.prctl(PR_SET_SECUREBITS, SECBIT_NO_SETUID_FIXUP, 0, 0, 0) != 0:
    print("SKIP prctl", ctypes.get_errno()); sys.exit(0)
from tunsec.conf.credentials import Credentials
issues = []
keys = Credentials(sys.argv[1], issues, owners=(int(sys.argv[2]),)).private_keys()
print("KEYS", len(keys), [i.message for i in issues])
"""


@pytest.fixture
def where() -> Iterator[Path]:
    with scratch_dir("revroot3-secbits-") as d:
        yield d


def test_a_root_only_key_linked_in_stays_refused_without_the_setuid_fixup(where: Path) -> None:
    uid = pwd.getpwnam(SERVICE).pw_uid
    vault = where / "other-service"   # another service's key: root's alone, the service user cannot read it
    vault.mkdir(mode=0o700)
    secret = vault / "tls.key"
    secret.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    secret.chmod(0o600)
    folder = where / "private"   # the folder the service user may own (credential_owners)
    folder.mkdir()
    os.chown(folder, uid, -1)
    os.symlink(secret, folder / "tls.key")
    os.lchown(folder / "tls.key", uid, -1)   # the service user's link
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def load(no_fixup: bool) -> str:
        return subprocess.run([sys.executable, "-c", CHILD, str(where), str(uid), "1" if no_fixup else "0"],
                              env=env, capture_output=True, text=True, timeout=120, check=True).stdout

    assert load(False).startswith("KEYS 0"), "the fixed F1 of review revrootfiles: refused with the fix-up"
    out = load(True)
    if out.startswith("SKIP"):
        pytest.skip(f"cannot set SECBIT_NO_SETUID_FIXUP here: {out}")
    assert out.startswith("KEYS 0"), f"root loaded a key its service user may not read (no setuid fix-up): {out}"
