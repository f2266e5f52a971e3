"""fail2ban's own fail2ban-regex on a log, with the filter tunsec ships (contrib/fail2ban/)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

CONTRIB = Path(__file__).resolve().parents[1] / "contrib/fail2ban"
FILTER, JAIL = CONTRIB / "filter.d/tunsec.conf", CONTRIB / "jail.d/tunsec.conf"


def fail2ban_regex(log: Path) -> list[str]:
    """The address of each line the shipped filter matches (fail2ban-regex -o ip), in order."""
    exe = shutil.which("fail2ban-regex")
    assert exe, "fail2ban-regex missing: bash scripts/install-deps.sh installs fail2ban"
    r = subprocess.run([exe, "-o", "ip", str(log), str(FILTER)], capture_output=True, text=True, timeout=120,
                       check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.split()


def maxretry() -> int:
    """The shipped jail's maxretry: how many matched lines ban an address."""
    (n,) = re.findall(r"^maxretry\s*=\s*(\d+)\s*$", JAIL.read_text(), re.M)
    return int(n)
