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

import connections_data
import pytest
from config_data import KEY_IN_HEX, manual, psk_gateway, tunnel
from connections_data import Pki, moon_dir

from tunsec.conf.config import load_config
from tunsec.conf.readable import readable_secret_warnings

pki = connections_data.pki   # the module-scoped PKI fixture (as test_radius_groups.py takes it)

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


def _mode_warnings(conf: Path) -> list[str]:
    return [str(w) for w in load_config(conf).warnings if "may read" in str(w)]


def test_an_included_file_every_user_may_read_is_named_and_a_pipe_is_not_asked(tmp_path: Path) -> None:
    """Every file read counts (an include holding the secrets too); a configuration on a pipe
    (``-c <(...)``) has no mode worth asking."""
    main, secrets = tmp_path / "tunsec.conf", tmp_path / "secrets.conf"
    main.write_text(STRONG.replace("secrets { ike { secret = 0sQ29ycmVjdC1Ib3JzZS1CYXR0ZXJ5LVN0YXBsZS0xMjM0NQ== } }",
                                   "include secrets.conf"))
    secrets.write_text("secrets { ike { secret = 0sQ29ycmVjdC1Ib3JzZS1CYXR0ZXJ5LVN0YXBsZS0xMjM0NQ== } }\n")
    os.chmod(main, 0o600)
    os.chmod(secrets, 0o644)
    said = _mode_warnings(main)
    assert len(said) == 1 and said[0].startswith(f"{secrets}: ") and "(mode 0644)" in said[0], said
    fifo = tmp_path / "piped.conf"
    os.mkfifo(fifo)
    assert readable_secret_warnings([str(fifo)]) == []


def test_a_private_key_every_user_may_read_is_warned_about(tmp_path: Path, pki: Pki) -> None:
    conf = moon_dir(tmp_path, pki)
    os.chmod(conf, 0o600)
    key = tmp_path / "private" / "moonKey.pem"
    os.chmod(key, 0o644)
    assert [w.split(": ", 1)[0] for w in _mode_warnings(conf)] == [str(key)]
    os.chmod(key, 0o640)
    assert _mode_warnings(conf) == []
