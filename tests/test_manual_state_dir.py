"""Manual keys' state directory: initialised on purpose (``tunsec init-state``), refused when lost,
locked by one tunsec at a time; the real ManualService with the worker's logic and C fast path
in-process (test_reload_manual's Harness), and ``tunsec up`` / ``tunsec init-state`` themselves."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from test_reload_manual import Harness, conf, derived, sa_pair, tunnel

from tunsec import privilege
from tunsec.dataplane import pipe
from tunsec.seqstate import SeqState, StateError, state_file
from tunsec.services.base import StartupError
from tunsec.statedir import MARKER, StateDir, init_state_dir, read_marker


def tunsec(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tunsec", *args], capture_output=True, text=True, timeout=60)


def test_init_state_marks_the_directory_once_and_then_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "t.conf"
    path.write_text(conf(tmp_path, tunnel("a", 1)))
    r = tunsec("init-state", "-c", str(path))
    assert r.returncode == 0, r.stderr
    instance = read_marker(tmp_path / "state")
    assert f"{tmp_path / 'state'}: initialised (instance {instance})" in r.stdout
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "state" / MARKER).stat().st_mode) == 0o600
    again = tunsec("init-state", "-c", str(path))
    assert again.returncode == 0 and f"already initialised (instance {instance}); nothing changed" in again.stdout
    assert read_marker(tmp_path / "state") == instance


@pytest.mark.parametrize("lost", ["removed", "emptied", "marker corrupt"])
def test_manual_tunnels_refuse_to_start_in_a_lost_state_dir_saying_what_to_do(tmp_path: Path, lost: str) -> None:
    """After a run (state written), the directory is lost: missing, re-created empty (a fresh volume),
    or its marker damaged. Starting must fail naming the path, what is missing, and both fixes,
    and install nothing (every key would otherwise start at sequence number 1 again)."""
    async def body() -> None:
        h = Harness(tmp_path, conf(tmp_path, tunnel("a", 1)))
        await h.start()
        h.stop()
        state = tmp_path / "state"
        shutil.rmtree(state)
        if lost == "emptied":
            state.mkdir(mode=0o700)
        elif lost == "marker corrupt":
            init_state_dir(state)
            (state / MARKER).write_text("something else\n")
        # a new process on the lost directory: no init-state this time
        again = Harness(tmp_path, conf(tmp_path, tunnel("a", 1)), init=False)
        with pytest.raises(StartupError) as err:
            await again.start()
        text = str(err.value)
        assert text.startswith(f"cannot start manual tunnels: the state directory {state} (tunsec {{ state_dir }})")
        assert {"removed": "does not exist", "emptied": f"its marker {state / MARKER} is missing",
                "marker corrupt": "is not one tunsec init-state wrote"}[lost] in text
        assert "tunsec init-state -c CONFIG" in text and "generate new keys for every manual tunnel" in text
        assert again.sas() == set() and not again.worker.log
    asyncio.run(body())


def test_tunsec_up_refuses_a_lost_state_dir_before_setting_anything_up(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("tunsec up needs root")
    path = tmp_path / "t.conf"
    path.write_text(conf(tmp_path, tunnel("a", 1)).replace("tunsec {", "tunsec { tun = tsstd0\n"))
    r = tunsec("up", "-c", str(path))
    assert r.returncode == 1
    assert f"cannot start manual tunnels: the state directory {tmp_path / 'state'}" in r.stderr, r.stderr
    assert "does not exist" in r.stderr and "tunsec init-state" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "state").exists()   # not created behind the operator's back
    assert subprocess.run(["ip", "link", "show", "tsstd0"], capture_output=True).returncode != 0


def test_an_unmarked_directory_with_older_state_files_says_init_state_adopts_them(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "manual-out-c0020001-0123456789abcdef.json").write_text("{}")
    with pytest.raises(StateError, match=r"holds 1 sequence state file\(s\) of a tunsec without this marker.*"
                                         r"an upgrade\), tunsec init-state -c CONFIG adopts them"):
        StateDir.open(state)
    done = init_state_dir(state)
    assert done.new and done.adopted == 1
    StateDir.open(state).close()


def test_a_new_key_in_an_initialised_directory_starts_and_its_file_is_written_before_use(tmp_path: Path) -> None:
    """Once initialised, a key without a file is a new key: it starts at 0, and its file (with the
    reservation) is on disk before the worker gets the SA."""
    async def body() -> None:
        h = Harness(tmp_path, conf(tmp_path, tunnel("a", 1)))
        on_disk: dict[int, int] = {}

        def seen(m: pipe.Message) -> None:
            if isinstance(m, pipe.Update | pipe.Add):
                f = state_file(tmp_path / "state", m.sa.key)
                on_disk[m.sa.spi] = json.loads(f.read_text())["limit"] if f.exists() else -1

        h.worker.hold = lambda m: seen(m)   # type: ignore[func-returns-value]
        await h.start()
        assert h.sas() == sa_pair(1)
        out = h.adds(0xC0020001)[-1].sa
        assert out.seq_start == 0 and out.key == bytes.fromhex(derived("0x0102030405060708090a0b0c0d0e0f1011121314",
                                                                       1, "out")[2:])
        assert on_disk[0xC0020001] == out.seq_limit > 0   # persisted before the ADD
        assert on_disk[0xC0010001] > 0
    asyncio.run(body())


def test_a_second_instance_on_the_same_state_dir_is_refused(tmp_path: Path) -> None:
    """Two processes on one directory would hand out the same sequence numbers: the second one is
    refused (in-process, and a real ``tunsec up``) while the first runs, and starts once it ended."""
    async def body() -> None:
        first = Harness(tmp_path, conf(tmp_path, tunnel("a", 1)))
        await first.start()
        second = Harness(tmp_path, conf(tmp_path, tunnel("a", 1)))
        with pytest.raises(StartupError, match=f"another tunsec uses the state directory {tmp_path / 'state'}"):
            await second.start()
        assert not second.worker.log
        if os.geteuid() == 0:
            other = tmp_path / "other.conf"
            other.write_text(conf(tmp_path, tunnel("a", 1)).replace("tunsec {", "tunsec { tun = tsstd1\n"))
            r = tunsec("up", "-c", str(other))
            assert r.returncode == 1 and "another tunsec uses the state directory" in r.stderr, r.stderr
            assert "Traceback" not in r.stderr
        first.stop()
        await second.start()
        assert second.sas() == sa_pair(1)
        assert second.adds(0xC0020001)[-1].sa.seq_start >= first.adds(0xC0020001)[-1].sa.seq_limit
    asyncio.run(body())


def test_init_state_does_not_overwrite_a_damaged_marker(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / MARKER).write_text("something else\n")
    path = tmp_path / "t.conf"
    path.write_text(conf(tmp_path, tunnel("a", 1)))
    r = tunsec("init-state", "-c", str(path))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"{tmp_path / 'state' / MARKER} exists but is not a marker tunsec init-state wrote" in r.stderr
    assert "replace every manual key" in r.stderr
    assert (tmp_path / "state" / MARKER).read_text() == "something else\n"


@pytest.mark.parametrize("trap", ["marker FIFO", "state file FIFO", "state file too large", "state file symlink"])
def test_tunsec_up_refuses_a_state_file_that_is_not_one_without_hanging(tmp_path: Path, trap: str) -> None:
    """tunsec up reads these as root before it drops, in a directory the service user owns: a FIFO there
    hung the start (on main), /dev/zero behind a symlink would fill the memory.  Each is a clear error,
    before anything is set up."""
    if os.geteuid() != 0:
        pytest.skip("tunsec up needs root")
    path = tmp_path / "t.conf"
    path.write_text(conf(tmp_path, tunnel("a", 1)).replace("tunsec {", "tunsec { tun = tsstd1\n"))
    state = tmp_path / "state"
    init_state_dir(state)
    marker = state / MARKER
    sf = state_file(state, bytes.fromhex(derived("0x0102030405060708090a0b0c0d0e0f1011121314", 1, "out")[2:]))
    if trap == "marker FIFO":
        marker.unlink()
        os.mkfifo(marker)
    elif trap == "state file FIFO":
        os.mkfifo(sf)
    elif trap == "state file too large":
        sf.write_bytes(b" " * (1 << 17))
    else:
        os.symlink("/dev/zero", sf)
    r = tunsec("up", "-c", str(path))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    expected = {"marker FIFO": f"cannot read its marker {marker}: it is a FIFO, not a regular file",
                "state file FIFO": f"cannot read its sequence number state {sf}: it is a FIFO, not a regular file",
                "state file too large": f"cannot read its sequence number state {sf}: it is larger than 65536 bytes",
                "state file symlink": f"cannot read its sequence number state {sf}: it is a symbolic link (not "
                                      "followed)"}[trap]
    assert expected in r.stderr, r.stderr
    assert subprocess.run(["ip", "link", "show", "tsstd1"], capture_output=True).returncode != 0


def private_case(tmp_path: Path, case: str) -> tuple[Path, str]:
    """An initialised state directory that a user other than root and tunsec's may change, and what the error
    must say about it."""
    nobody = pwd.getpwnam("nobody").pw_uid
    parent = tmp_path / "parent"
    parent.mkdir()
    state = parent / "state"
    init_state_dir(state)
    if case == "0777":
        state.chmod(0o777)
        return state, f"{state} (owner root (uid 0)) is writable by others, mode 0777"
    if case == "group-writable":
        state.chmod(0o770)
        return state, f"{state} (owner root (uid 0)) is writable by its group, mode 0770"
    if case == "another user's":
        os.chown(state, nobody, nobody)
        return state, f"{state} is owned by nobody (uid {nobody}), mode 0700"
    parent.chmod(0o777)   # not sticky: anyone may rename state away and put their own in its place
    return state, f"{parent} (owner root (uid 0)) is writable by others, mode 0777"


@pytest.mark.parametrize("case", ["0777", "group-writable", "another user's", "parent 0777"])
def test_a_state_dir_other_users_may_change_is_refused(tmp_path: Path, case: str) -> None:
    """Anyone who may change the directory may delete a key's state file while its marker stays: the key
    would start again at sequence number 1 (repeated AES-GCM nonces).  Refused, naming the path, its owner
    and mode, and the fix (as sshd's StrictModes)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make the directory another user's")
    state, why = private_case(tmp_path, case)
    with pytest.raises(StateError) as err:
        StateDir.open(state)
    text = str(err.value)
    assert text.startswith(f"cannot start manual tunnels: the state directory {state} (tunsec {{ state_dir }}) may "
                           "be changed by users other than root: " + why), text
    assert f"chmod 0700 {state}" in text and "generate new keys" in text


def test_a_private_state_dir_of_the_user_tunsec_becomes_in_a_sticky_parent_is_accepted(tmp_path: Path) -> None:
    """What prepare leaves: the service user's, 0700, here under a sticky world-writable directory (others
    may add names there but not rename or remove the user's).  Root opens it for the user it becomes only."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make the directory another user's")
    sticky = tmp_path / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)
    state = sticky / "state"
    init_state_dir(state)
    pw = pwd.getpwnam("tunsec")
    os.chown(state, pw.pw_uid, pw.pw_gid)
    with pytest.raises(StateError, match=f"{state} is owned by tunsec"):
        StateDir.open(state)
    StateDir.open(state, pw.pw_uid).close()


def linked_state(tmp_path: Path, holder_mode: int) -> tuple[Path, Path, Path]:
    """(the link, the private directory it points to, the directory holding the link with holder_mode)."""
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    init_state_dir(real / "state")
    holder = tmp_path / "holder"
    holder.mkdir()
    holder.chmod(holder_mode)
    link = holder / "state"
    link.symlink_to(real / "state")
    return link, real / "state", holder


@pytest.mark.parametrize("holder_mode", [0o777, 0o770])
def test_a_state_dir_named_through_a_link_others_may_re_point_is_refused(tmp_path: Path, holder_mode: int) -> None:
    """The link's target is private, but whoever may write where the link is may point it at a directory of
    theirs between two reservations and back: the key's limit read at the next start is then an old, lower
    one (repeated nonces).  Refused by StateDir.open and by the hand-over before the drop, naming where the
    link is.  On main only the target was checked (realpath) and both accepted it."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make directories others may change")
    link, _real, holder = linked_state(tmp_path, holder_mode)
    kind = "others" if holder_mode & 0o002 else "its group"
    why = f"{holder} (owner root (uid 0)) is writable by {kind}, mode {holder_mode:04o}"
    with pytest.raises(StateError, match=re.escape(why)):
        StateDir.open(link)
    with pytest.raises(privilege.PrivilegeError, match=re.escape(why)):
        privilege.hand_over(link, None)


def test_a_link_another_user_owns_in_a_sticky_directory_is_refused(tmp_path: Path) -> None:
    """A sticky directory (/tmp) keeps others from removing root's entries, but not the link's owner from
    replacing their own link."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make the link another user's")
    link, _real, _holder = linked_state(tmp_path, 0o1777)
    nobody = pwd.getpwnam("nobody").pw_uid
    os.lchown(link, nobody, nobody)
    with pytest.raises(StateError, match=re.escape(f"{link} is a symbolic link owned by nobody (uid {nobody})")):
        StateDir.open(link)


@pytest.mark.parametrize("holder_mode", [0o755, 0o1777])
def test_a_state_dir_named_through_a_link_only_root_may_change_is_used_where_it_points(
        tmp_path: Path, holder_mode: int) -> None:
    """A link root keeps in a directory only root may change (or root's link in a sticky one) is fine; tunsec
    then works in the directory it pointed to when it was checked, so even root re-pointing the link later
    moves no reservation."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    link, real, _holder = linked_state(tmp_path, holder_mode)
    d = StateDir.open(link)
    try:
        assert d.path == real
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir(mode=0o700)
        link.unlink()
        link.symlink_to(elsewhere)
        key = bytes(range(20))
        st = SeqState.open(d.path, "a", 0x1000, pipe.Direction.OUT, key, esn=False)
        st.extend(0.0)
        assert state_file(real, key).exists() and not list(elsewhere.iterdir())
    finally:
        d.close()


def test_tunsec_up_refuses_a_world_writable_state_dir_cleanly(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("tunsec up needs root")
    path = tmp_path / "t.conf"
    path.write_text(conf(tmp_path, tunnel("a", 1)).replace("tunsec {", "tunsec { tun = tsstd2\n"))
    state = tmp_path / "state"
    init_state_dir(state)
    state.chmod(0o777)
    r = tunsec("up", "-c", str(path))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"the state directory {state} (tunsec {{ state_dir }}) may be changed by users other than root and " \
           f"tunsec: {state} (owner root (uid 0)) is writable by others, mode 0777" in r.stderr, r.stderr
    assert subprocess.run(["ip", "link", "show", "tsstd2"], capture_output=True).returncode != 0
