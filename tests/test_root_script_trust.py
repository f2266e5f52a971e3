"""updown scripts run only when nobody but root and the user who runs them may change them (scriptfile.py):
with user = root a script the service user may write would be code execution as root.  Checked at start
(`tunsec up` refuses, naming the path, its owner and mode, and the fix), at reload, and again before
each run, which executes the file that check found (through its descriptor), not one swapped in since.
Real files, directories, owners and ACLs (the tests run as root), the start in a network namespace."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from reachable import scratch_dir
from test_root_config_trust import TUN, USER, needs_netns, ns, root, run, tunsec_section  # noqa: F401

from tunsec import privilege, updown

OTHER = "tunsec-dp"   # a user that is neither root nor the service user


@pytest.fixture
def base() -> Iterator[Path]:
    """Root's, 0755, under sticky /tmp: a tree only root may change, as /etc."""
    with scratch_dir("fixrootfiles-") as d:
        yield d


def uid_of(name: str) -> int:
    t = privilege.target_for(name)
    assert t is not None
    return t.uid


def script(where: Path, mark: Path, body: str = "") -> Path:
    """An executable script that touches mark when it runs."""
    where.mkdir(parents=True, exist_ok=True)
    path = where / "updown.sh"
    path.write_text(f"#!/bin/sh\n{body}touch {mark}\n")
    path.chmod(0o755)
    return path


def made_changeable(base: Path, how: str, owner: str) -> tuple[Path, Path]:
    """A script (and the path the refusal must name) owner may change, in the way how says."""
    uid = uid_of(owner)
    s = script(base / "etc", base / "ran")
    if how == "owner":
        os.chown(s, uid, -1)
        return s, s
    if how == "group":
        os.chown(s, 0, uid_of(owner))
        s.chmod(0o775)
        return s, s
    if how == "directory":
        os.chown(s.parent, uid, -1)
        return s, s.parent
    if how == "link":
        real = base / "theirs.sh"
        s.rename(real)
        os.chown(real, uid, -1)
        s.symlink_to(real)
        return s, real
    if how == "interpreter":
        interp = base / "sh"
        shutil.copy("/bin/sh", interp)
        os.chown(interp, uid, -1)
        s.write_text(f"#!{interp}\ntouch {base / 'ran'}\n")
        return s, interp
    if how == "acl":
        if shutil.which("setfacl") is None:
            pytest.skip("no setfacl")
        r = subprocess.run(["setfacl", "-m", f"u:{owner}:rwx", str(s)], capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"no ACLs here: {r.stderr}")
        return s, s
    raise AssertionError(how)


FIXES = {"owner": "chown root {p}; chmod go-w {p}", "group": "chmod go-w {p}", "directory": "chown root {p}",
         "link": "chown root {p}; chmod go-w {p}", "interpreter": "chown root {p}; chmod go-w {p}",
         "acl": "setfacl -b {p}; chmod go-w {p}"}


@root
@pytest.mark.parametrize("how", list(FIXES))
def test_a_script_the_service_user_may_change_is_refused_for_root(base: Path, how: str) -> None:
    s, culprit = made_changeable(base, how, USER)
    (refused,) = updown.refusals([("connections.c.children.net.updown", (str(s), "arg"))], 0)
    assert refused.startswith(f"refusing updown script {s} (connections.c.children.net.updown): "), refused
    assert str(culprit) in refused and "tunsec runs it as root" in refused, refused
    assert f"as root, {FIXES[how].format(p=culprit)}" in refused, refused
    if how in ("owner", "link", "interpreter"):
        assert f"is owned by {USER} (uid {uid_of(USER)}), mode 0755" in refused, refused


@root
@pytest.mark.parametrize("how", ["owner", "directory", "interpreter"])
def test_the_service_users_own_script_runs_as_it_but_anothers_does_not(base: Path, how: str) -> None:
    """Run as the service user, the script may be that user's (it gains nothing: it runs as that user), never
    a third user's; a root-only script passes for everyone."""
    s, _ = made_changeable(base, how, USER)
    assert updown.refusals([("x", (str(s),))], uid_of(USER)) == []
    (refused,) = updown.refusals([("x", (str(s),))], uid_of(OTHER))
    assert f"tunsec runs it as {OTHER} (uid {uid_of(OTHER)}), so nobody but root and {OTHER}" in refused, refused
    clean = script(base / "clean", base / "ran")
    assert updown.refusals([("x", (str(clean),))], 0) == updown.refusals([("x", (str(clean),))], uid_of(OTHER)) == []


@root
def test_a_relative_interpreter_is_refused(base: Path) -> None:
    s = script(base / "etc", base / "ran")
    s.write_text("#!sh\ntrue\n")
    from tunsec import scriptfile
    from tunsec.safefs import Untrusted

    with pytest.raises(Untrusted, match="its #! interpreter 'sh' is not an absolute path"):
        scriptfile.check(str(s), 0)


@root
def test_a_script_that_became_changeable_is_not_run(base: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Accepted at start, then handed to the service user: the run checks again and does not run it."""
    mark = base / "ran"
    s = script(base / "etc", mark)
    env = {"PLUTO_VERB": "up-client", "PLUTO_CONNECTION": "net", "PATH": "/usr/bin:/bin"}
    assert asyncio.run(updown.run((str(s),), env)) and mark.exists()
    mark.unlink()
    os.chown(s, uid_of(USER), -1)
    with caplog.at_level(logging.ERROR, "tunsec.updown"):
        assert not asyncio.run(updown.run((str(s),), env))
    assert not mark.exists()
    assert f"not run: refusing updown script {s}: {s} is owned by {USER}" in caplog.text, caplog.text


@root
def test_a_program_swapped_between_the_check_and_the_run_is_not_run(base: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """What runs is the file the check found: one renamed into its place after the check is not executed (nor
    the original: the run fails closed).  touch checked, mkdir swapped in: mark would be a file or a directory."""
    mark = base / "mark"
    (base / "etc").mkdir()
    (base / "staging").mkdir()
    prog, other = base / "etc" / "updown", base / "staging" / "updown"
    shutil.copy("/usr/bin/touch", prog)
    shutil.copy("/usr/bin/mkdir", other)
    from tunsec import scriptfile

    checked = scriptfile.check

    def check_then_swap(path: str, uid: int) -> object:
        found = checked(path, uid)
        os.replace(other, prog)
        return found

    monkeypatch.setattr(scriptfile, "check", check_then_swap)
    env = {"PLUTO_VERB": "up-client", "PLUTO_CONNECTION": "net", "PATH": "/usr/bin:/bin"}
    with caplog.at_level(logging.ERROR, "tunsec.updown"):
        assert not asyncio.run(updown.run((str(prog), str(mark)), env))
    assert not mark.exists()
    assert f"cannot run it: {prog} was replaced" in caplog.text, caplog.text   # seen at its #! look or its open
    monkeypatch.setattr(scriptfile, "check", checked)
    assert asyncio.run(updown.run((str(prog), str(mark)), env)) and mark.is_dir()   # the one there now, checked


@root
def test_the_run_executes_the_checked_file_with_its_arguments(base: Path) -> None:
    """A binary through its descriptor; a #! script as the kernel runs it (its interpreter through a checked
    descriptor, the line's argument), keeping its path as $0, its arguments and the environment."""
    out = base / "out"
    s = script(base / "etc", base / "ran", body=f'echo "$0|$1|$2|$PLUTO_VERB" > {out}\n')
    env = {"PLUTO_VERB": "down-client", "PLUTO_CONNECTION": "net", "PATH": "/usr/bin:/bin"}
    assert asyncio.run(updown.run((str(s), "a b", "c"), env))
    assert out.read_text() == f"{s}|a b|c|down-client\n"
    s.write_text(f"#!/bin/sh -e\necho \"$-\" > {out}\n")   # the line's argument reaches the interpreter
    assert asyncio.run(updown.run((str(s),), env)) and "e" in out.read_text()
    assert asyncio.run(updown.run(("/usr/bin/touch", str(base / "bin-ran")), env)) and (base / "bin-ran").exists()


def ike_config(base: Path, updown_path: Path, user: str) -> Path:
    conf = base / "tunsec.conf"
    conf.write_text(tunsec_section(base / "run", base / "state").replace("tunsec {", f"tunsec {{\n  user = {user}")
                    + "connections {\n  c { local_addrs = 127.0.0.1\n    remote_addrs = 127.0.0.2\n"
                    "    local { auth = psk\n id = a.example }\n    remote { auth = psk\n id = b.example }\n"
                    "    children { net { local_ts = 10.1.0.0/24\n remote_ts = 10.2.0.0/24\n"
                    f"      updown = {updown_path} }} }} }}\n}}\n"
                    "secrets { ike { secret = 0sdGhpcyBpcyBhIHRlc3Qga2V5IG9mIDMyIGJ5dGVzISE= } }\n")
    return conf


@needs_netns
@pytest.mark.parametrize("user", ["root", USER])
def test_up_refuses_a_script_someone_else_may_change_before_setting_anything_up(ns: str, base: Path,  # noqa: F811
                                                                                user: str) -> None:
    """`tunsec up` as root: with user = root a script the service user owns is refused, with the default user a
    script of a third user's; no TUN, no control socket directory."""
    s, _ = made_changeable(base, "owner", USER if user == "root" else OTHER)
    conf = ike_config(base, s, user)
    r = run(ns, "up", "-c", str(conf))
    assert r.returncode != 0, r
    owner = USER if user == "root" else OTHER
    assert f"refusing updown script {s} (connections.c.children.net.updown): {s} is owned by {owner}" in r.stderr, \
        r.stderr
    assert f"as root, chown root {s}; chmod go-w {s}" in r.stderr, r.stderr
    assert not (base / "run").exists()
    assert subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "show", TUN], capture_output=True).returncode
