"""F6 (review of h/ban): scripts/install-deps.sh leaves fail2ban enabled when the install fails after
fail2ban's postinst ran, and a re-run never disables it (fail2ban is then installed, so not "missing").

A copy of the script runs with stand-in commands first on PATH (nothing is installed, no service or
package touched): dpkg-query says every package is installed but those in $MISSING; apt-get "install"
runs fail2ban's postinst as Debian's does (deb-systemd-helper enable / update-rc.d defaults: policy-rc.d
blocks starts, not enables; recorded in $STATE) and then fails as a later package's postinst may;
update-rc.d and systemctl record disable/enable; python3 (PYTHON), useradd and getent do nothing.
Fixed: the script disables fail2ban from its EXIT trap whenever it is installed or was to be
(KEEP_FAIL2BAN=1 leaves it alone), and only one it installed, now or before (its marker)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "install-deps.sh"

STUBS = {
    "dpkg-query": '#!/bin/sh\nfor m in $MISSING; do [ "$m" = "$3" ] && exit 1; done\necho "install ok installed"\n',
    "apt-get": '#!/bin/sh\n[ "$1" = update ] && exit 0\n'
               'case " $* " in *" fail2ban "*) echo enabled > "$STATE";; esac\n'
               'echo "E: Sub-process /usr/bin/dpkg returned an error code (1)" >&2\nexit "${APT_RC:-100}"\n',
    "update-rc.d": '#!/bin/sh\n[ "$2" = disable ] && echo disabled > "$STATE"\nexit 0\n',
    "systemctl": '#!/bin/sh\ncase " $* " in *" disable "*) echo disabled > "$STATE";; esac\nexit 0\n',
    "python3": '#!/bin/sh\n[ "$1" = -c ] && echo /nonexistent\nexit 0\n',
    "useradd": "#!/bin/sh\nexit 0\n",
    "getent": "#!/bin/sh\nexit 0\n",
    "sudo": '#!/bin/sh\nexec "$@"\n',
    "tee": "#!/bin/sh\ncat >/dev/null\n",   # policy-rc.d not written on this machine (the copy's branch only)
    "chmod": "#!/bin/sh\nexit 0\n",
}


def _run(tmp: Path, missing: str, apt_rc: int, **extra: str) -> tuple[int, str]:
    stubs = tmp / "bin"
    stubs.mkdir(exist_ok=True)
    for name, body in STUBS.items():
        (stubs / name).write_text(body)
        (stubs / name).chmod(0o755)
    (tmp / "scripts").mkdir(exist_ok=True)
    shutil.copy(SCRIPT, tmp / "scripts" / "install-deps.sh")
    state = tmp / "fail2ban.state"
    env = {**os.environ, "PATH": f"{stubs}:/usr/bin:/bin", "MISSING": missing, "STATE": str(state),
           "INSTALL_DEPS_STATE": str(tmp / "install-deps-state"),
           "APT_RC": str(apt_rc), "PYTHON": str(stubs / "python3"), **extra}
    if "KEEP_FAIL2BAN" not in extra:
        env.pop("KEEP_FAIL2BAN", None)   # the caller's own must not decide the test
    rc = subprocess.run(["bash", str(tmp / "scripts" / "install-deps.sh")], env=env, capture_output=True,
                        timeout=60).returncode
    return rc, state.read_text().strip() if state.exists() else "untouched"


def test_f6_fail2ban_is_left_disabled_when_the_install_fails_half_way_and_after_a_rerun(tmp_path: Path) -> None:
    rc, state = _run(tmp_path, "fail2ban freeradius", apt_rc=100)
    assert rc != 0                 # the install failed (freeradius's postinst, a dropped mirror...)
    first = state
    rc, state = _run(tmp_path, "freeradius", apt_rc=0)   # the operator fixes it and runs it again
    assert rc == 0
    assert (first, state) == ("disabled", "disabled"), \
        f"fail2ban after the failed install: {first}; after a successful re-run: {state}"


def test_keep_fail2ban_leaves_a_machine_meant_to_run_it_alone(tmp_path: Path) -> None:
    """The opt-out: fail2ban's postinst enabled it and the script does not touch it."""
    rc, state = _run(tmp_path, "fail2ban", apt_rc=0, KEEP_FAIL2BAN="1")
    assert (rc, state) == (0, "enabled")


def test_an_operators_own_fail2ban_installed_before_is_left_running(tmp_path: Path) -> None:
    """fail2ban was there before the script (no marker of the script's): a run installing something
    else leaves its service as the operator set it up."""
    (tmp_path / "fail2ban.state").write_text("enabled\n")
    rc, state = _run(tmp_path, "freeradius", apt_rc=0)
    assert (rc, state) == (0, "enabled")


def test_an_operator_enabling_the_fail2ban_we_installed_keeps_it_after_a_rerun(tmp_path: Path) -> None:
    """Review revban2 F2: the marker outlived the run that installed fail2ban, so every later run
    disabled (under a running systemd: stopped) it after the operator had turned it on."""
    rc, state = _run(tmp_path, "fail2ban", apt_rc=0)
    assert (rc, state) == (0, "disabled")                   # our install, left disabled: as meant
    (tmp_path / "fail2ban.state").write_text("enabled\n")   # the operator enables it, on purpose
    rc, state = _run(tmp_path, "freeradius", apt_rc=0)      # a later run for something else
    assert (rc, state) == (0, "enabled")
