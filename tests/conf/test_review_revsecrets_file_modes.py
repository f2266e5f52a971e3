"""Review revsecrets F3: a configuration every local user may read, holding the keys, is loaded
without a word.

tunsec.conf holds PSKs, EAP passwords, RADIUS secrets and manual ESP keys in clear text.  At mode
0644 (what an editor or `install` gives under the usual umask 022) any local account reads them;
tunsec checks who may *change* the file (safefs, root_check) but not who may *read* it.  WireGuard's
wg-quick warns of a world-accessible config, OpenSSH refuses such a private key.  The proof asks for a
load warning that names the file (a refusal would break working set-ups)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from config_data import KEY_IN_HEX, manual, psk_gateway, tunnel

from tunsec.conf.config import load_config

# a strong PSK: no weak-PSK warning to confuse with the one asked for
STRONG = psk_gateway().replace("secret = s3cret", "secret = 0sQ29ycmVjdC1Ib3JzZS1CYXR0ZXJ5LVN0YXBsZS0xMjM0NQ==")


def _says_others_read(warning: str, conf: Path) -> bool:
    return str(conf) in warning and any(w in warning for w in ("readable", "read by", "may read", "0644", "mode"))


@pytest.mark.parametrize("body", [STRONG, manual(tunnel())], ids=["psk", "manual-keys"])
def test_a_world_readable_configuration_with_secrets_is_warned_about(tmp_path: Path, body: str) -> None:
    conf = tmp_path / "tunsec.conf"
    conf.write_text(body)
    os.chmod(conf, 0o644)
    cfg = load_config(conf)
    assert KEY_IN_HEX in body or "secret = 0s" in body
    said = [str(w) for w in cfg.warnings]
    assert any(_says_others_read(w, conf) for w in said), f"no warning that others may read it: {said}"


def test_a_configuration_only_its_owner_reads_is_not_warned_about(tmp_path: Path) -> None:
    conf = tmp_path / "tunsec.conf"
    conf.write_text(STRONG)
    os.chmod(conf, 0o600)
    said = [str(w) for w in load_config(conf).warnings]
    assert not said, said
