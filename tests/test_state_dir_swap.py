"""The service user renaming its state directory away and putting a link in its place while root works
in it (`tunsec init-state`, `tunsec up` before the drop): it owns that entry in a sticky parent, so it
may.  Root keeps the directory's descriptor from its walk and works relative to it, so nothing lands in
the directory the link names (a stand-in for /etc/apt/apt.conf.d).  The swap is made deterministic by
hooking the step right before root's next use of the directory.  Run as root."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from reachable import scratch_dir

from tunsec import privilege, statedir
from tunsec.dataplane import pipe
from tunsec.seqstate import SeqState, StateError, state_file
from tunsec.statedir import MARKER, StateDir, init_state_dir, read_marker

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

KEY = bytes(range(20))


@pytest.fixture
def user() -> privilege.Target:
    t = privilege.target_for("tunsec")
    assert t is not None
    return t


@pytest.fixture
def base() -> Iterator[Path]:
    with scratch_dir("tunsec-statefd-") as d:
        yield d


def users_state_dir(base: Path, user: privilege.Target) -> tuple[Path, Path]:
    """(state, target): the user's state directory in a sticky parent, and root's directory it will
    point its link at (holding one file of root's)."""
    sticky = base / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    state = sticky / "state"
    state.mkdir(mode=0o700)
    os.chown(state, user.uid, user.gid)
    target = base / "rootonly"
    target.mkdir(mode=0o755)
    (target / ".probe").write_text("root's\n")
    return state, target


def swap(state: Path, target: Path) -> Callable[[], None]:
    """The user's move (root does it here: the effect is the same)."""
    def move() -> None:
        os.rename(state, state.with_name("state.old"))
        os.symlink(target, state)
    return move


def hooked(monkeypatch: pytest.MonkeyPatch, module: Any, name: str, before: Callable[[], None]) -> list[str]:
    """module.name calls before() the first time it runs, then itself."""
    real = getattr(module, name)
    ran: list[str] = []

    def call(*args: Any, **kwargs: Any) -> Any:
        if not ran:
            before()
            ran.append(name)
        return real(*args, **kwargs)
    monkeypatch.setattr(module, name, call)
    return ran


def untouched(target: Path) -> bool:
    return sorted(p.name for p in target.iterdir()) == [".probe"] and (target / ".probe").read_text() == "root's\n"


def test_init_state_writes_its_marker_in_the_directory_it_walked_to(base: Path, user: privilege.Target,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    state, target = users_state_dir(base, user)
    real_make = statedir._make_dir

    def make_then_swap(*args: Any) -> Any:
        out = real_make(*args)
        swap(state, target)()
        return out
    monkeypatch.setattr(statedir, "_make_dir", make_then_swap)
    done = init_state_dir(state, user.uid)
    monkeypatch.undo()
    assert untouched(target)
    old = state.with_name("state.old")
    assert read_marker(old) == done.instance
    st = os.lstat(old / MARKER)
    assert (st.st_uid, st.st_gid) == (user.uid, user.gid)
    assert sorted(p.name for p in old.iterdir()) == [MARKER]   # no temporary file left


def test_tunsec_up_probes_and_keeps_state_in_the_directory_it_locked(base: Path, user: privilege.Target,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    state, target = users_state_dir(base, user)
    init_state_dir(state, user.uid)
    ran = hooked(monkeypatch, statedir, "_probe", swap(state, target))
    d = StateDir.open(state, user.uid)
    try:
        monkeypatch.undo()
        assert ran and untouched(target)
        # the swap is undone and done again before a sequence state write: it still goes to the real one
        os.unlink(state)
        os.rename(state.with_name("state.old"), state)
        swap(state, target)()
        st = SeqState.open(d, "a", 0x1000, pipe.Direction.OUT, KEY, esn=False)
        st.restart(0.0)
        assert untouched(target)
        assert state_file(state.with_name("state.old"), KEY).exists()
    finally:
        d.close()


def test_a_state_dir_through_dot_dot_is_walked_as_the_kernel_resolves_it(base: Path) -> None:
    """``x/../state`` with x a link: abspath drops x and checks base/state, the kernel follows x."""
    (base / "other" / "sub").mkdir(parents=True)
    (base / "other" / "state").mkdir(mode=0o700)
    (base / "x").symlink_to(base / "other" / "sub")
    with pytest.raises(StateError, match="symbolic link"):
        init_state_dir(base / "x" / ".." / "state")
    assert not list((base / "other" / "state").iterdir()) and not (base / "state").exists()


def test_a_swap_between_the_check_and_the_open_is_refused(base: Path, user: privilege.Target,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Right after check_private resolved the path: the walk by descriptors meets the link and stops."""
    state, target = users_state_dir(base, user)
    init_state_dir(state, user.uid)
    real_check = statedir.check_private

    def check_then_swap(*args: Any) -> Path:
        out = real_check(*args)
        swap(state, target)()
        return out
    monkeypatch.setattr(statedir, "check_private", check_then_swap)
    with pytest.raises(StateError, match=r"cannot open the state directory .*: it is a symbolic link"):
        StateDir.open(state, user.uid).close()
    assert untouched(target)
