"""Review revops F5 (fifteenth session) of h/records: BlockRecord._clean_temporary removes, besides its own
record's temporary files, those of the legacy name `prohibit-routes.TUN.ns<inode>`. That name is also the
record of TUN `TUN.ns<inode>` in the initial namespace (a legal TUN name, 14 characters here), a running
instance that may be writing it (write_atomic_at: `.NAME.<16 hex>.tmp`, then rename): a start of TUN `t` in
namespace <inode> unlinks that other instance's temporary file, whose rename then fails (ENOENT) and its
record is not written. The docstring's premise "only this instance writes them" does not hold for the legacy
name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tunsec.dataplane import blockrecord
from tunsec.dataplane.blockrecord import BlockRecord, Netns


def test_a_start_in_a_namespace_leaves_the_initial_namespaces_tun_t_ns_inode_temporary_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    # TUN "t.ns4026532174" of the initial namespace, mid-write of its record (another instance, running)
    other = state / ".prohibit-routes.t.ns4026532174.0123456789abcdef.tmp"
    other.write_text('{"tun": "t.ns4026532174", "networks": ["198.51.100.0/24"]}\n')
    os.chmod(other, 0o600)
    # TUN "t" starting in network namespace 4026532174
    monkeypatch.setattr(blockrecord, "this_netns", lambda: Netns(":ns4026532174", "boot/1"))
    rec = BlockRecord.open(str(state), "t", None)
    try:
        assert rec.fd >= 0, rec.why
        assert other.exists(), "the other instance's temporary file (TUN t.ns4026532174's) was removed"
    finally:
        rec.close()
