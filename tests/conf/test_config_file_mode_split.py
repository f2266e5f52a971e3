"""Review revcfg F2: the world-readable warning names a file that holds no key.

conf/config.py:175 counts every file read (the main file and each include) as sensitive as soon as the
configuration holds any secret anywhere.  The common split -- tunsec.conf 0644 with the connections
(no keys: it may be shown, diffed, shipped in a docker image) and ``include secrets.conf`` at 0600 --
is exactly what the warning asks for, yet it warns about tunsec.conf at every load and reload."""

from __future__ import annotations

import os
from pathlib import Path

from config_data import psk_gateway

from tunsec.conf.config import load_config

STRONG = "0sQ29ycmVjdC1Ib3JzZS1CYXR0ZXJ5LVN0YXBsZS0xMjM0NQ=="


def test_a_readable_main_file_without_keys_is_not_warned_when_its_secrets_include_is_private(
        tmp_path: Path) -> None:
    main, secrets = tmp_path / "tunsec.conf", tmp_path / "secrets.conf"
    main.write_text(psk_gateway().replace("secrets { ike { secret = s3cret } }", "include secrets.conf"))
    secrets.write_text(f"secrets {{ ike {{ secret = {STRONG} }} }}\n")
    os.chmod(main, 0o644)
    os.chmod(secrets, 0o600)
    said = [str(w) for w in load_config(main).warnings if "may read" in str(w)]
    assert said == [], f"warned about a file that holds no key: {said}"
