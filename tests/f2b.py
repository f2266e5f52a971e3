"""fail2ban's own fail2ban-regex on a log, with the filter tunsec ships (contrib/fail2ban/)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

CONTRIB = Path(__file__).resolve().parents[1] / "contrib/fail2ban"
FILTER, JAIL = CONTRIB / "filter.d/tunsec.conf", CONTRIB / "jail.d/tunsec.conf"


def fail2ban_regex(log: Path, filter: str | Path = FILTER) -> list[str]:
    """The address of each line the shipped filter (``FILTER[mode=bans]``: in that mode) matches
    (fail2ban-regex -o ip), in order."""
    exe = shutil.which("fail2ban-regex")
    assert exe, "fail2ban-regex missing: bash scripts/install-deps.sh installs fail2ban"
    r = subprocess.run([exe, "-o", "ip", str(log), str(filter)], capture_output=True, text=True, timeout=120,
                       check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.split()


def maxretry(jail: str = "tunsec") -> int:
    """The shipped jail's maxretry: how many matched lines ban an address."""
    (section,) = re.findall(rf"^\[{re.escape(jail)}\]\n(.*?)(?=^\[|\Z)", JAIL.read_text(), re.M | re.S)
    (n,) = re.findall(r"^maxretry\s*=\s*(\d+)\s*$", section, re.M)
    return int(n)


class Fail2banServer:
    """fail2ban-server with the shipped filter and jail, reading ``log`` (the file backend) from its
    start, its bans done by the dummy action into a file of ``workdir``: no firewall is touched, no
    other jail runs (a config directory of its own, Debian's defaults left out)."""

    def __init__(self, workdir: Path, log: Path) -> None:
        self.conf = workdir / "fail2ban"
        shutil.copytree("/etc/fail2ban", self.conf)
        for extra in (self.conf / "jail.d").iterdir():
            extra.unlink()
        shutil.copy(FILTER, self.conf / "filter.d/tunsec.conf")
        shutil.copy(JAIL, self.conf / "jail.d/tunsec.conf")
        self.sock, self.bans = workdir / "fail2ban.sock", workdir / "bans"
        (self.conf / "fail2ban.local").write_text(
            f"[Definition]\nlogtarget = {workdir / 'fail2ban.log'}\nsocket = {self.sock}\n"
            f"pidfile = {workdir / 'fail2ban.pid'}\ndbfile = :memory:\n")
        (self.conf / "jail.local").write_text(
            "".join(f"[{jail}]\nbackend = polling\nlogpath = {log}\naction = dummy[target={self.bans}]\n"
                    for jail in ("tunsec", "tunsec-ban")))
        exe = shutil.which("fail2ban-server")
        assert exe, "fail2ban-server missing: bash scripts/install-deps.sh installs fail2ban"
        self.proc = subprocess.Popen([exe, "-f", "-x", "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

    def banned(self) -> list[str]:
        """The addresses the jail banned (the dummy action's file: +ADDR a ban, -ADDR an unban)."""
        if not self.bans.exists():
            return []
        return [ln[1:] for ln in self.bans.read_text().split() if ln.startswith("+")]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
