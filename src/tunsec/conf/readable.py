"""Files holding key material that every local user may read: a load warning per file.

tunsec.conf (and what it includes) carries PSKs, EAP passwords, RADIUS and DAE secrets and manual ESP
keys in clear text, and private/, rsa/, ecdsa/, pkcs8/ the private keys.  Who may *change* them is
checked (safefs, root_check); who may *read* them is the administrator's choice, but at 0644 (an
editor's or ``install``'s mode under umask 022) every local account reads every key, unnoticed.  As
wg-quick does for a world-accessible configuration, tunsec warns (review revsecrets F3) -- it does
not refuse: a working set-up must stay up after an upgrade or a reload.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable

from tunsec.conf.errors import ConfigIssue
from tunsec.conf.syntax import Section

# The sections that hold key material, and the keys in them that are: a PSK, an EAP password, a
# private key's passphrase, a RADIUS or DAE secret (``secret``), a manual tunnel's ESP keys.
_KEY_SECTIONS = ("secrets", "manual", "radius")
_KEY_SETTINGS = frozenset({"secret", "key_in", "key_out"})


def files_holding_keys(root: Section, files: Iterable[str]) -> list[str]:
    """Those of ``files`` (in their order) a key setting of :data:`_KEY_SECTIONS` was written in: the
    main file of the recommended split (0644, ``include secrets.conf`` at 0600) holds none, so it is
    not warned about (review revcfg F2)."""
    holding: set[str] = set()
    todo = [root.sections[name] for name in _KEY_SECTIONS if name in root.sections]
    while todo:
        section = todo.pop()
        holding.update(s.file for s in section.settings.values() if s.name in _KEY_SETTINGS)
        todo.extend(section.sections.values())
    return [f for f in dict.fromkeys(files) if f in holding]


def readable_secret_warnings(files: Iterable[str]) -> list[ConfigIssue]:
    """One warning per regular file others (``o+r``) may read; the files are those holding keys
    (Config.sensitive_files: files_holding_keys and the private keys loaded).  A file on a pipe
    (``-c <(...)``) or gone since has no mode worth asking."""
    out: list[ConfigIssue] = []
    for path in dict.fromkeys(files):
        try:
            mode = os.stat(path).st_mode
        except (OSError, ValueError):
            continue
        if stat.S_ISREG(mode) and mode & stat.S_IROTH:
            out.append(ConfigIssue(path, 0, "", (
                f"every local user may read it (mode {stat.S_IMODE(mode):04o}) and it holds keys: "
                "chmod o-r it (root:tunsec 0640, docs/configuration.md)")))
    return out
