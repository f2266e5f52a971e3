"""tunsec { ke_pool }: parsed, checked, and the pool a daemon built from the configuration fills."""

from __future__ import annotations

import asyncio

import pytest
from config_data import psk_gateway

from tunsec.conf.config import parse_config
from tunsec.conf.errors import ConfigError
from tunsec.daemon import Daemon
from tunsec.ike import dh
from tunsec.ike.dh_pool import KeyPairPool


def _filled(text: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """What the IKE service of a daemon built from ``text`` puts in the pool at start."""
    pool = KeyPairPool(dh.generate_key_exchange)
    monkeypatch.setattr(dh, "POOL", pool)
    daemon = Daemon(parse_config(text))
    assert daemon.ike is not None

    async def start() -> dict[str, int]:
        assert daemon.ike is not None
        daemon.ike.ke_refill.start(c.ike for c in daemon.ike.connections.values())
        sizes = {dh.DhGroup(g).name: n for g, n in pool.sizes().items()}
        daemon.ike.ke_refill.stop()
        return sizes

    return asyncio.run(start())


@pytest.mark.parametrize(
    ("tunsec", "proposals", "filled"),
    [
        ("", "", {"CURVE25519": 256}),    # the default proposal's first group, 256 key pairs
        ("ke_pool = 3", "proposals = aes128gcm16-prfsha256-ecp384-curve25519", {"ECP_384": 3}),
        ("ke_pool = 100", "proposals = aes256-sha256-modp2048", {"MODP_2048": 64}),   # MODP: at most 64
        ("ke_pool = 0", "", {}),           # off
    ],
)
def test_ke_pool_fills_the_first_group(tunsec: str, proposals: str, filled: dict[str, int],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    assert _filled(f"tunsec {{\n  {tunsec}\n}}\n" + psk_gateway(proposals), monkeypatch) == filled


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1", "not a number of key pairs per key exchange group (0: no pool): '-1'"),
        ("4097", "4097 is out of range 0..4096"),
        ("lots", "not a number of key pairs per key exchange group (0: no pool): 'lots'"),
    ],
)
def test_bad_ke_pool_names_line_and_key(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(f"tunsec {{\n  log_level = info\n  ke_pool = {value}\n}}\n", "t.conf")
    (issue,) = err.value.errors
    assert (issue.file, issue.line, issue.key) == ("t.conf", 3, "tunsec.ke_pool")
    assert message in issue.message
