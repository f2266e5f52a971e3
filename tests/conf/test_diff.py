"""conf.diff: two reads of one file compare equal (by value, not identity: private keys from files
too); a changed secret, certificate or key is a change, told apart as credentials only."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import connections_data
from connections_data import Pki, key_bytes, moon_dir, pem, write
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tunsec.conf.config import load_config
from tunsec.conf.diff import comparable, credentials_only, diff_by_name, restart_keys
from tunsec.conf.tunsec_section import TunsecSettings
from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth
from tunsec.ike.identity import Identity
from tunsec.ike.secret import Secret
from tunsec.ike.testing import make_cert

pki = connections_data.pki   # the module-scoped PKI fixture (a conftest here would shadow tests/conftest)


def pem_copy(key: ec.EllipticCurvePrivateKey) -> ec.EllipticCurvePrivateKey:
    text = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    loaded = serialization.load_pem_private_key(text, None)
    assert isinstance(loaded, ec.EllipticCurvePrivateKey)
    return loaded


def test_private_keys_compare_by_value_and_secrets_count() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    assert key != pem_copy(key)                      # what cryptography does: identity
    assert comparable(key) == comparable(pem_copy(key))
    assert comparable(key) != comparable(ec.generate_private_key(ec.SECP256R1()))
    a = IkeConfig("c", LocalAuth("psk", Identity.parse("a")), RemoteAuth("psk"), psk=Secret(b"one secret"))
    b = dataclasses.replace(a, psk=Secret(b"one secret"))
    c = dataclasses.replace(a, psk=Secret(b"another secret"))
    assert comparable(a) == comparable(b) and comparable(a) != comparable(c)
    assert credentials_only(a, c) and not credentials_only(a, b)
    assert not credentials_only(a, dataclasses.replace(c, rekey_time=60.0))


def test_diff_by_name_and_restart_keys() -> None:
    a = IkeConfig("x", LocalAuth("psk", Identity.parse("a")), RemoteAuth("psk"), psk=Secret(b"s"))
    d = diff_by_name([a, dataclasses.replace(a, name="y")],
                     [dataclasses.replace(a, psk=Secret(b"s")), dataclasses.replace(a, name="z"),
                      dataclasses.replace(a, name="y", remote_port=4500)])
    assert [i.name for i in d.kept] == ["x"] and [i.name for i in d.added] == ["z"]
    assert [(o.name, n.remote_port) for o, n in d.changed] == [("y", 4500)] and not d.removed
    s = TunsecSettings()
    changed = dataclasses.replace(s, workers=2, retransmit=dataclasses.replace(s.retransmit, tries=3))
    assert restart_keys(s, changed) == ["workers", "retransmit_tries"]
    assert restart_keys(s, TunsecSettings()) == []


def test_a_config_read_twice_is_unchanged_and_a_new_key_file_is_a_credentials_change(
        tmp_path: Path, pki: Pki) -> None:
    path = moon_dir(tmp_path, pki)
    first, again = load_config(path), load_config(path)
    assert first.connections[0].ike.local.private_key is not again.connections[0].ike.local.private_key
    assert diff_by_name(first.connections, again.connections).empty
    other = make_cert(pki.ca, "moon.strongswan.org", ["moon.strongswan.org", "192.168.0.1"], kind="rsa")
    write(tmp_path / "x509" / "moonCert.pem", pem(other.cert))
    write(tmp_path / "private" / "moonKey.pem", key_bytes(other.key))
    d = diff_by_name(first.connections, load_config(path).connections)
    assert [new.name for _, new in d.changed] == ["host-host"]
    assert credentials_only(*d.changed[0])
