"""Ownership changes root makes in directories the service user may change (tunsec.safefs): `tunsec
init-state`'s marker, `tunsec prepare`'s directories and the hand-over before the drop.  That user
may replace any entry between two of root's calls; the swap is made deterministic by doing it at the
first os call after the entry exists (as test_control_socket does for the socket).  Run as root, in
this process, except the drop, which runs in a process of its own."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from reachable import scratch_dir

from tunsec import prepare, privilege
from tunsec.seqstate import StateError
from tunsec.statedir import MARKER, init_state_dir, read_marker

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to change ownership")

USER = "tunsec"
# the real calls, for the attacker's moves while os's are hooked
_lstat, _symlink, _rename = os.lstat, os.symlink, os.rename
HOOKED = ("open", "close", "fsync", "stat", "lstat", "chown", "lchown", "fchown", "scandir", "listdir")


@pytest.fixture
def base() -> Iterator[Path]:
    """A scratch directory in a path only root may change (a parent of root's, under sticky /tmp)."""
    with scratch_dir("tunsec-fsown-") as d:
        yield d


@pytest.fixture
def user() -> privilege.Target:
    t = privilege.target_for(USER)
    assert t is not None
    return t


def victim_file(base: Path) -> Path:
    """Stands for /etc/shadow: root's, 0600."""
    v = base / "victim"
    v.write_text("root:secret\n")
    v.chmod(0o600)
    return v


def owner_and_mode(path: Path) -> tuple[int, int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def swap_when(monkeypatch: pytest.MonkeyPatch, ready: Callable[[], bool], swap: Callable[[], None]) -> list[str]:
    """At the first hooked os call once ready() holds, swap() (the user's move, won every time)."""
    swapped: list[str] = []

    def hook(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if not swapped and ready():
                swap()
                swapped.append(name)
            return real(*args, **kwargs)
        return call

    for name in HOOKED:
        monkeypatch.setattr(os, name, hook(name, getattr(os, name)))
    return swapped


def is_(path: Path, test: Callable[[int], bool]) -> bool:
    try:
        return test(_lstat(path).st_mode)
    except FileNotFoundError:
        return False


def test_init_state_gives_away_no_file_swapped_in_for_the_marker(base: Path, user: privilege.Target,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The state directory is the user's; right after the marker is renamed into place it becomes a
    symlink to root's file.  On main, the chown by path that followed gave that file to the user."""
    victim = victim_file(base)
    state = base / "state"
    state.mkdir(mode=0o700)
    os.chown(state, user.uid, user.gid)
    marker = state / MARKER

    def swap() -> None:
        _symlink(victim, state / ".swap")
        _rename(state / ".swap", marker)

    swapped = swap_when(monkeypatch, lambda: is_(marker, stat.S_ISREG), swap)
    init_state_dir(state)
    monkeypatch.undo()
    assert swapped, "the hook never ran: the test proves nothing"
    assert owner_and_mode(victim) == (0, 0, 0o600)


def test_init_state_as_root_in_the_users_directory_makes_the_marker_the_users(base: Path,
                                                                              user: privilege.Target) -> None:
    state = base / "state"
    state.mkdir(mode=0o700)
    os.chown(state, user.uid, user.gid)
    done = init_state_dir(state)
    assert owner_and_mode(state / MARKER) == (user.uid, user.gid, 0o600)
    assert read_marker(state) == done.instance
    assert [p.name for p in state.iterdir()] == [MARKER]   # no temporary file left


def test_prepare_gives_away_no_directory_swapped_in_for_its_own(base: Path, user: privilege.Target,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Right after prepare made the control socket's directory it becomes a symlink to root's
    directory: on main the chown by path followed it."""
    victim = base / "victim"
    victim.mkdir(mode=0o700)
    path = base / "run"

    def swap() -> None:
        _rename(path, base / "moved")
        _symlink(victim, path)

    swapped = swap_when(monkeypatch, lambda: is_(path, stat.S_ISDIR), swap)
    with pytest.raises(prepare.PrepareError, match="it must be a directory, not a symbolic link"):
        prepare._own_dir(path, user)
    monkeypatch.undo()
    assert swapped, "the hook never ran: the test proves nothing"
    assert owner_and_mode(victim) == (0, 0, 0o700)


def test_prepare_changes_no_ownership_under_a_directory_another_user_may_change(base: Path,
                                                                                user: privilege.Target) -> None:
    """The user's home, say: it could make `etc` below it a symlink to /etc at any time.  Refused, unless
    the directory is the user's already (then nothing needs changing)."""
    home = base / "home"
    home.mkdir()
    os.chown(home, user.uid, user.gid)
    with pytest.raises(prepare.PrepareError, match=f"users other than root may change {home}, so root changes "
                                                   "no ownership there"):
        prepare._own_dir(home / "run", user)
    assert not (home / "run").exists()
    with pytest.raises(prepare.PrepareError, match=f"users other than root may change {home}"):
        prepare._own_dir(home / "a" / "b", user)   # checked before anything is created
    assert list(home.iterdir()) == []
    (home / "run").mkdir()
    os.chown(home / "run", user.uid, user.gid)
    assert prepare._own_dir(home / "run", user) is False


def test_prepare_makes_missing_directories_in_roots_tree_and_gives_the_last(base: Path,
                                                                            user: privilege.Target) -> None:
    path = base / "var" / "lib" / "tunsec"
    assert prepare._own_dir(path, user, 0o700) is True
    assert owner_and_mode(path) == (user.uid, user.gid, 0o700)
    assert owner_and_mode(path.parent)[:2] == (0, 0)


def state_with_traps(base: Path) -> tuple[Path, Path]:
    """A state directory of root's with a state file, and what the user put there: a hard link to
    root's file, a FIFO, a symlink to root's file."""
    victim = victim_file(base)
    state = base / "state"
    init_state_dir(state)
    (state / "manual-key-0123456789abcdef.json").write_text("{}\n")
    os.link(victim, state / "manual-key-hardlink.json")
    # named as tunsec names its files: give_dir hands over nothing else (F2 of review revctl)
    os.mkfifo(state / "manual-key-fifo.json")
    os.symlink(victim, state / "manual-key-sym.json")
    return state, victim


def users_traps(state: Path, user: privilege.Target) -> None:
    """The FIFO and symlink as the user made them in a directory of theirs (prepare gives away no directory
    holding another's entries not named as tunsec's)."""
    for name in ("manual-key-fifo.json", "manual-key-sym.json"):
        os.lchown(state / name, user.uid, user.gid)


def test_prepare_hands_over_no_hard_link_fifo_or_symlink(base: Path, user: privilege.Target) -> None:
    state, victim = state_with_traps(base)
    users_traps(state, user)
    note = prepare._own_state_dir(state, user)
    assert owner_and_mode(victim) == (0, 0, 0o600)
    for name in (MARKER, "manual-key-0123456789abcdef.json"):
        assert owner_and_mode(state / name)[:2] == (user.uid, user.gid)
    assert owner_and_mode(state)[:2] == (user.uid, user.gid)
    assert "manual-key-hardlink.json (it has 2 hard links)" in note
    assert "manual-key-fifo.json (a FIFO, not a regular file)" in note
    assert "manual-key-sym.json (a symbolic link, not a regular file)" in note


DROP = """
import logging, os, sys
from tunsec import privilege
from tunsec.conf.tunsec_section import TunsecSettings
logging.basicConfig(level=logging.WARNING, format="%(message)s")
plan = privilege.Plan(True, privilege.target_for(sys.argv[2]))
privilege.give_up_control(plan, TunsecSettings(state_dir=sys.argv[1]), True, False)
print(os.geteuid())
"""


def test_the_drop_hands_over_no_hard_link_fifo_or_symlink(base: Path, user: privilege.Target) -> None:
    """tunsec up's drop with manual tunnels (in a process of its own: it gives up root for good)."""
    state, victim = state_with_traps(base)
    r = subprocess.run([sys.executable, "-c", DROP, str(state), USER], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(user.uid)
    assert owner_and_mode(victim) == (0, 0, 0o600)
    assert owner_and_mode(state / "manual-key-0123456789abcdef.json")[:2] == (user.uid, user.gid)
    assert owner_and_mode(state)[:2] == (user.uid, user.gid)
    assert f"in {state}, not handed over to {USER}" in r.stderr, r.stderr
    assert "manual-key-hardlink.json (it has 2 hard links)" in r.stderr


def test_the_drop_hands_over_nothing_under_a_directory_another_user_may_change(base: Path,
                                                                               user: privilege.Target) -> None:
    home = base / "home"
    home.mkdir()
    state = home / "state"
    init_state_dir(state)   # while home was root's (init-state refuses it once it is the user's)
    os.chown(home, user.uid, user.gid)
    r = subprocess.run([sys.executable, "-c", DROP, str(state), USER], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and f"state_dir {state} is not writable by {USER}" in r.stderr, r.stderr
    assert f"users other than root may change {home}, so root changes no ownership there" in r.stderr
    assert owner_and_mode(state / MARKER)[:2] == (0, 0)


def init_state(base: Path, state: Path) -> subprocess.CompletedProcess[str]:
    """`tunsec init-state` as root, for a configuration whose state_dir is state."""
    conf = base / "tunsec.conf"
    conf.write_text(f"tunsec {{ state_dir = {state}\n control_socket = {base}/t.sock }}\n")
    return subprocess.run([sys.executable, "-m", "tunsec", "init-state", "-c", str(conf)], capture_output=True,
                          text=True, timeout=60)


def test_init_state_as_root_creates_nothing_under_a_directory_another_user_may_change(
        base: Path, user: privilege.Target) -> None:
    """The user's home: it could make a parent of the state directory a symlink to /etc between root's
    mkdir and its marker.  Refused before anything is made, whether the state directory exists or not."""
    home = base / "home"
    home.mkdir()
    os.chown(home, user.uid, user.gid)
    for state in (home / "state", home / "a" / "state"):
        r = init_state(base, state)
        assert r.returncode == 1, r
        assert f"cannot initialise the state directory {state}: users other than root may change {home}" \
            in r.stderr, r.stderr
        assert "Run tunsec init-state as the user tunsec runs as" in r.stderr and "Traceback" not in r.stderr
        assert list(home.iterdir()) == []
    (home / "state").mkdir()
    os.chown(home / "state", user.uid, user.gid)
    r = init_state(base, home / "state")
    assert r.returncode == 1 and f"users other than root may change {home}" in r.stderr, r
    assert list((home / "state").iterdir()) == []


def test_init_state_refuses_a_symlinked_state_dir(base: Path, user: privilege.Target) -> None:
    """A state_dir that is a symlink (to root's directory, say) is not followed: no marker lands there."""
    victim = base / "victim"
    victim.mkdir(mode=0o700)
    (base / "state").symlink_to(victim)
    r = init_state(base, base / "state")
    assert r.returncode == 1, r
    assert f"cannot initialise the state directory {base / 'state'}: it is a symbolic link (not followed)" \
        in r.stderr, r.stderr
    assert list(victim.iterdir()) == []
    r = init_state(base, base / "real")   # in root's tree it goes ahead
    assert r.returncode == 0 and "initialised" in r.stdout, r
    assert read_marker(base / "real")


def shared_dir(base: Path) -> Path:
    """Stands for /run or /var/lib: root's, 0755, with root's entries."""
    shared = base / "run"
    shared.mkdir(mode=0o755)
    (shared / "sshd.pid").write_text("1\n")
    (shared / "sudo").mkdir(mode=0o700)
    return shared


@pytest.mark.parametrize("which", ["control socket", "state_dir"])
def test_prepare_gives_away_no_shared_directory(base: Path, user: privilege.Target, which: str) -> None:
    """control_socket = /run/tunsec.sock or state_dir = /var/lib: on main prepare gave that whole directory
    (and root's files in it) to the user, who could then replace root daemons' entries."""
    shared = shared_dir(base)
    with pytest.raises(prepare.PrepareError, match=f"cannot give {shared} to {USER}: it holds entries that are not "
                                                   r"tunsec's \(sshd.pid, sudo\).*/run/tunsec/.*/var/lib/tunsec/"):
        if which == "state_dir":
            prepare._own_state_dir(shared, user)
        else:
            prepare._own_dir(shared, user, socket="tunsec.sock")
    assert owner_and_mode(shared) == (0, 0, 0o755)
    assert owner_and_mode(shared / "sshd.pid")[:2] == (0, 0)


def test_prepare_gives_an_existing_directory_holding_only_tunsecs_entries(base: Path, user: privilege.Target) -> None:
    """Root's state directory from `tunsec init-state` (marker, a key's state, a TUN's record of its prohibit
    routes, leftover temporary files, and what the user put there): given, with its files, and its mode made
    0700 whatever it was."""
    state = base / "state"
    init_state_dir(state)
    state.chmod(0o755)
    for name in ("manual-key-0123456789abcdef.json", ".manual-key-0123456789abcdef.json.a1b2c3d4.tmp", "users",
                 "prohibit-routes.tunsec0", ".prohibit-routes.tunsec0.a1b2c3d4.tmp",
                 "prohibit-routes.tun.0.ns4026532182", ".prohibit-routes.tunsec0.ns4026532182.a1b2c3d4.tmp",
                 "prohibit-routes.tun.0:ns4026532182", ".prohibit-routes.tunsec0:ns4026532182.a1b2c3d4.tmp"):
        (state / name).write_text("{}\n")
    os.chown(state / "users", user.uid, user.gid)
    assert prepare._own_state_dir(state, user) == ""
    assert owner_and_mode(state) == (user.uid, user.gid, 0o700)
    assert owner_and_mode(state / "manual-key-0123456789abcdef.json")[:2] == (user.uid, user.gid)


def test_prepare_takes_a_state_dir_already_the_users_with_lost_found_in_it(base: Path, user: privilege.Target) -> None:
    """Review revroot F2: a dedicated mount made the user's (StateDirectory=, a chown) with mkfs's lost+found,
    root's: refused before (it is not tunsec's), though nothing is given at the directory's level and give_dir
    gives only tunsec's names.  Taken now (its mode made 0700), lost+found left root's."""
    state = base / "state"
    state.mkdir(mode=0o755)
    (state / "lost+found").mkdir(mode=0o700)
    (state / "manual-key-0123456789abcdef.json").write_text("{}\n")   # root's: written by init-state
    os.chown(state, user.uid, user.gid)
    prepare._own_state_dir(state, user)
    assert owner_and_mode(state) == (user.uid, user.gid, 0o700)
    assert owner_and_mode(state / "lost+found")[:2] == (0, 0)
    prepare._own_dir(state, user, socket="tunsec.sock")   # the control socket's directory: the same rule


def squatted(parent: Path, mode: int = 0o777) -> Path:
    """What another local user (nobody) does before prepare: makes the name in a sticky world-writable
    directory (/tmp), world-writable, with a file of theirs in it."""
    nobody = privilege.target_for("nobody")
    assert nobody is not None
    parent.mkdir(mode=0o1777)
    parent.chmod(0o1777)
    d = parent / "tunsec-state"
    d.mkdir()
    d.chmod(mode)
    (d / MARKER).write_text("planted\n")
    for p in (d, d / MARKER):
        os.chown(p, nobody.uid, nobody.gid)
    return d


@pytest.mark.parametrize("which", ["control socket", "state_dir"])
def test_prepare_refuses_a_directory_another_user_made_first_in_a_sticky_parent(base: Path, user: privilege.Target,
                                                                                which: str) -> None:
    """On main prepare took nobody's 0777 directory, gave it and nobody's marker to the user and kept its mode:
    any local user could then delete a key's state file and the key restarted at sequence number 1."""
    d = squatted(base / "tmp")
    with pytest.raises(prepare.PrepareError, match=f"cannot give {d} to {USER}: it exists and is owned by nobody "
                                                   r"\(uid \d+\), mode 0777: neither root nor tunsec"):
        if which == "state_dir":
            prepare._own_state_dir(d, user)
        else:
            prepare._own_dir(d, user, socket="tunsec.sock")
    assert owner_and_mode(d)[2] == 0o777 and owner_and_mode(d)[0] != user.uid
    assert owner_and_mode(d / MARKER)[0] == owner_and_mode(d)[0]


def test_prepare_makes_the_users_existing_directory_private(base: Path, user: privilege.Target) -> None:
    """One the user made with umask 0, in root's tree and in the user's home: its mode is set either way."""
    for d, given in ((base / "state", True), (base / "home" / "state", False)):
        d.mkdir(parents=True)
        if not given:
            os.chown(d.parent, user.uid, user.gid)
        d.chmod(0o777)
        os.chown(d, user.uid, user.gid)
        assert prepare._own_dir(d, user, 0o700) is given
        assert owner_and_mode(d) == (user.uid, user.gid, 0o700)


def test_the_drop_refuses_a_state_dir_others_may_write(base: Path, user: privilege.Target) -> None:
    """tunsec up's hand-over (as root, before the drop): a 0777 state directory is an error naming it, its
    mode and the fix; nothing in it is handed over."""
    state = base / "state"
    init_state_dir(state)
    state.chmod(0o777)
    r = subprocess.run([sys.executable, "-c", DROP, str(state), USER], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "PrivilegeError" in r.stderr, r.stderr
    assert f"the state directory {state} (tunsec {{ state_dir }}) may be changed by users other than root and " \
           f"{USER}: {state} (owner root (uid 0)) is writable by others, mode 0777" in r.stderr, r.stderr
    assert f"chown {USER}: {state} && chmod 0700 {state}" in r.stderr
    assert owner_and_mode(state)[:2] == (0, 0) and owner_and_mode(state / MARKER)[:2] == (0, 0)


def sticky_dir(base: Path) -> Path:
    """Stands for /tmp: root's, 1777."""
    sticky = base / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)
    return sticky


def test_init_state_as_root_makes_nothing_through_a_symlink_swapped_in_on_the_way(
        base: Path, user: privilege.Target, monkeypatch: pytest.MonkeyPatch) -> None:
    """state_dir in a sticky directory (only root's entries are safe there), its parent missing when
    root checks: the user makes that parent a symlink of theirs to root's directory right before root's
    first mkdir.  By path (main), root's mkdir followed it and made a directory in root's; through
    descriptors the symlink is found and refused, naming it."""
    victim = base / "victim"
    victim.mkdir(mode=0o700)
    sticky = sticky_dir(base)
    state = sticky / "x" / "y" / "state"
    real_mkdir = os.mkdir
    swapped: list[bool] = []

    def mkdir(*args: Any, **kwargs: Any) -> None:
        if not swapped:
            _symlink(victim, sticky / "x")
            os.lchown(sticky / "x", user.uid, user.gid)
            swapped.append(True)
        real_mkdir(*args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    with pytest.raises(StateError) as caught:
        init_state_dir(state)
    monkeypatch.undo()
    assert swapped, "the swap never ran: the test proves nothing"
    assert list(victim.iterdir()) == []
    assert str(caught.value).startswith(f"{sticky / 'x'} is a symbolic link (not followed), so root does not "
                                        f"create or initialise {state} through it"), caught.value


def test_init_state_as_root_refuses_another_users_directory_in_a_sticky_parent(
        base: Path, user: privilege.Target) -> None:
    """Anyone may make a name first in /tmp: a state_dir there that another user made (0777, theirs) is
    refused, naming its owner and what to do, and gets no marker (main wrote one and gave it to them).
    The user tunsec runs as may have made it: that one is initialised, the marker theirs."""
    nobody = pwd.getpwnam("nobody")
    state = sticky_dir(base) / "state"
    state.mkdir()
    state.chmod(0o777)
    os.chown(state, nobody.pw_uid, nobody.pw_gid)
    r = init_state(base, state)
    assert r.returncode == 1, r
    assert (f"cannot initialise the state directory {state}: {state} is owned by nobody, not root nor the user "
            f"tunsec runs as, in {state.parent}, where any user may make it first") in r.stderr, r.stderr
    assert list(state.iterdir()) == []

    os.chown(state, user.uid, user.gid)
    state.chmod(0o700)
    r = init_state(base, state)
    assert r.returncode == 0 and "initialised" in r.stdout, r
    assert owner_and_mode(state / MARKER) == (user.uid, user.gid, 0o600)


def test_init_state_as_root_names_the_parent_another_user_owns_and_why(base: Path, user: privilege.Target) -> None:
    home = base / "home"
    home.mkdir(mode=0o755)
    os.chown(home, user.uid, user.gid)
    with pytest.raises(StateError) as caught:
        init_state_dir(home / "a" / "state")
    assert str(caught.value).startswith(f"users other than root may change {home} (it is owned by {USER}), so root "
                                        f"does not create or initialise {home / 'a' / 'state'} there"), caught.value
    assert list(home.iterdir()) == []
