"""The shipped fail2ban jails (contrib/fail2ban/jail.d/tunsec.conf) against what docs/configuration.md
promises of tunsec's own ban: "Its established IKE SAs and their rekeys, and every other source, go on"
(review revban F7).  The jail tunsec-ban blocks UDP 500 AND 4500 at the firewall, which kills a source's
established SAs (NAT-T ESP, DPD, rekeys) and every user behind a shared NAT: it must ship disabled, and
if an operator enables it, block no longer than tunsec's longest ban (MAX_BAN_FACTOR x the default
auth_failures_ban)."""

from __future__ import annotations

import configparser
from pathlib import Path

from tunsec.ike.auth_ban import MAX_BAN_FACTOR, AuthBanSettings

JAIL = Path(__file__).resolve().parents[1] / "contrib" / "fail2ban" / "jail.d" / "tunsec.conf"
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _seconds(text: str) -> int:
    return int(text[:-1]) * SECONDS[text[-1]] if text[-1] in SECONDS else int(text)


def test_the_ban_jail_ships_disabled_and_blocks_no_longer_than_tunsec() -> None:
    jail = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#",))
    assert jail.read(JAIL) == [str(JAIL)]
    ban = jail["tunsec-ban"]
    assert not ban.getboolean("enabled"), "tunsec-ban blocks established SAs at the firewall: ship it disabled"
    assert _seconds(ban["bantime"]) <= MAX_BAN_FACTOR * AuthBanSettings().ban, ban["bantime"]
    assert ban["filter"] == "tunsec[mode=bans]"   # still the ban lines, for an operator who enables it
