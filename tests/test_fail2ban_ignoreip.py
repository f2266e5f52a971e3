"""A /48's (or /56's) ban must not block, at the firewall, users' networks the operator put in the
jail's ignoreip: fail2ban ignores a ticket only if its first address lies in an ignoreip network (the
ticket's own prefix length never looked at), so the shipped filter does not take the wider ban lines
(review revbanobs F1; failed before: the /48 holding the ignored /56 was banned).  Real parts:
tunsec's AuthBan and log formatter write the log, the real fail2ban-server with the shipped filter
and jail (tunsec-ban enabled, as docs/operations.md describes) reads it; bans go to the dummy
action's file."""

from __future__ import annotations

import io
import ipaddress
import shutil
import subprocess
import time
from pathlib import Path

from f2b import FILTER, JAIL

from tunsec import logs
from tunsec.ike.auth_ban import AuthBan, AuthBanSettings
from tunsec.loglimit import SourceLimiter
from tunsec.services.ike import auth_log

USERS = ipaddress.ip_network("2001:db8:66:100::/56")   # the operator's users, in ignoreip
MARK = "198.51.100.66"   # banned after the /48's line: once its ban is in, the /48's line was read


def _log() -> str:
    out = io.StringIO()
    logs.configure("info", fmt="text", stream=out)
    ban = AuthBan(AuthBanSettings(max=2, window=600.0, ban=600.0))
    # an attacker rotating over sixteen /56s of the /48, none of them the users'
    addrs = [f"2001:db8:66:{k:x}00::1" for k in range(2, 18)] + [MARK]
    for addr in addrs:
        for _ in range(2):
            auth_log.failed(SourceLimiter(), "gw", (addr, 4500), False, "bad PSK", True, ban)
    return out.getvalue()


def _server(tmp: Path, log: Path) -> tuple[subprocess.Popen[bytes], Path]:
    conf = tmp / "fail2ban"
    shutil.copytree("/etc/fail2ban", conf)
    for extra in (conf / "jail.d").iterdir():
        extra.unlink()
    shutil.copy(FILTER, conf / "filter.d/tunsec.conf")
    shutil.copy(JAIL, conf / "jail.d/tunsec.conf")
    bans = tmp / "bans"
    (conf / "fail2ban.local").write_text(
        f"[Definition]\nlogtarget = {tmp / 'fail2ban.log'}\nsocket = {tmp / 'f2b.sock'}\n"
        f"pidfile = {tmp / 'f2b.pid'}\ndbfile = :memory:\n")
    (conf / "jail.local").write_text(
        "".join(f"[{jail}]\nenabled = true\nbackend = polling\nlogpath = {log}\nignoreip = {USERS}\n"
                f"action = dummy[target={bans}]\n" for jail in ("tunsec", "tunsec-ban")))
    exe = shutil.which("fail2ban-server")
    assert exe
    return subprocess.Popen([exe, "-f", "-x", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL), bans


def test_a_wider_ban_does_not_block_a_network_in_ignoreip(root_logger: None, tmp_path: Path) -> None:
    log = tmp_path / "tunsec.log"
    text = _log()
    assert "from 2001:db8:66::/48: 16 of its /64s failed" in text, text
    log.write_text(text)
    proc, bans = _server(tmp_path, log)
    try:
        banned: list[str] = []
        for _ in range(600):   # a deadline for fail2ban to read the log, no threshold asserted
            banned = [ln[1:] for ln in bans.read_text().split() if ln.startswith("+")] if bans.exists() else []
            if MARK in banned:
                break
            time.sleep(0.1)
        assert MARK in banned, (banned, (tmp_path / "fail2ban.log").read_text())
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # the attacker's /64s are banned; nothing that blocks the users' /56 the operator put in ignoreip
    assert "2001:db8:66:200::/64" in banned, banned
    blocking = [b for b in banned if ":" in b and ipaddress.ip_network(b, strict=False).overlaps(USERS)]
    assert not blocking, f"ignoreip {USERS} blocked by {blocking}"
