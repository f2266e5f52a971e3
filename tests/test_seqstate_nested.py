"""Review revmanual F2: a damaged sequence state file whose JSON nests deeply raises RecursionError
out of SeqState.open (json.loads' own error, not a ValueError), which neither _parse nor the
manual service turns into the StateError that says what to do: `tunsec up` ends in a traceback,
a reload in an "internal error", where any other unreadable state file gets "cannot read its
sequence number state ... Generate new keys"."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_seqstate import CONF, SPI

from tunsec.dataplane.pipe import Direction
from tunsec.seqstate import SeqState, StateError
from tunsec.statedir import init_state_dir

KEY = bytes(range(1, 21))
NESTED = b"[" * 20000   # 20 KB, below read_regular's 64 KiB limit


def test_a_deeply_nested_state_file_is_refused_with_what_to_do(tmp_path: Path) -> None:
    st = SeqState.open(tmp_path, "site-b", SPI, Direction.OUT, KEY, False)
    st.restart()
    st.path.write_bytes(NESTED)
    with pytest.raises(StateError) as err:
        SeqState.open(tmp_path, "site-b", SPI, Direction.OUT, KEY, False)
    assert "Generate new keys" in str(err.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="tunsec up needs root")
def test_tunsec_up_refuses_a_deeply_nested_state_file_without_a_traceback(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    key_out = bytes.fromhex("1112131415161718191a1b1c1d1e1f2021222324")
    init_state_dir(state_dir)
    st = SeqState.open(state_dir, "site-b", SPI, Direction.OUT, key_out, False)
    st.restart()
    st.path.write_bytes(NESTED)
    conf = tmp_path / "t.conf"
    conf.write_text(CONF.format(sock=tmp_path / "t.sock", state=state_dir))
    r = subprocess.run([sys.executable, "-m", "tunsec", "up", "-c", str(conf)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and "RecursionError" not in r.stderr, r.stderr[-2000:]
    assert "Generate new keys" in r.stderr and str(st.path) in r.stderr
    link = subprocess.run(["ip", "link", "show", "tsst0"], capture_output=True)
    assert link.returncode != 0   # refused before the TUN was created
