"""contrib/systemd/tunsec.service as systemd itself reads it.

`systemd-analyze verify` reports unknown keys, bad values and a missing
ExecStart binary on stderr (several of them with exit status 0, so the test
reads the output too). The unit names /usr/local/bin/tunsec, where pip puts
the entry point for root; the copy checked here points at this
installation's entry point. There is no systemd to run the unit under on the
test machines; `systemd-analyze security --offline` rates its sandboxing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "contrib/systemd/tunsec.service"
INSTALLED_PATH = "/usr/local/bin/tunsec"


@pytest.fixture
def unit(tmp_path: Path) -> Path:
    entry = Path(sysconfig.get_path("scripts")) / "tunsec"
    assert entry.is_file(), f"the tunsec entry point is not installed at {entry} (bash scripts/install-deps.sh)"
    text = UNIT.read_text()
    assert f"ExecStart={INSTALLED_PATH} " in text
    out = tmp_path / "tunsec.service"
    out.write_text(text.replace(f"ExecStart={INSTALLED_PATH} ", f"ExecStart={entry} "))
    return out


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("systemd-analyze")
    assert exe, "systemd-analyze missing: bash scripts/install-deps.sh installs systemd"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=60, check=False)


def test_unit_verifies_without_a_warning(unit: Path) -> None:
    r = analyze("verify", str(unit))
    assert r.returncode == 0, r.stderr
    assert [line for line in (r.stdout + r.stderr).splitlines() if "tunsec" in line] == []


def test_verify_catches_what_it_should(unit: Path) -> None:
    """The check above could fail: a misspelt value and a missing binary are reported."""
    unit.write_text(unit.read_text().replace("Type=notify", "Type=notfy"))
    assert "Failed to parse service type" in analyze("verify", str(unit)).stderr
    unit.write_text(re.sub(r"ExecStart=\S+", "ExecStart=/nonexistent/tunsec", unit.read_text()))
    r = analyze("verify", str(unit))
    assert r.returncode != 0 and "/nonexistent/tunsec is not executable" in r.stderr


def test_sandbox_exposure_rated_ok(unit: Path) -> None:
    r = analyze("security", "--offline=yes", "--no-pager", str(unit))
    m = re.search(r"Overall exposure level for tunsec.service: ([\d.]+) (\w+)", r.stdout)
    assert m, r.stdout[-2000:] + r.stderr
    assert m.group(2) in ("OK", "SAFE"), m.group(0)
