"""Review revsecrets F2 / reveapimpl F2, the wider guard: no dataclass of the engine shows key
material in its repr.

EapAuthenticator._msk was a plain ``bytes`` field, so repr() of a gateway's half-open IKE SA carried
the MSK.  This walks every dataclass of the packages that hold keys and fails on a field named like
key material (msk, key, secret, password, psk, sk_*) that holds raw ``bytes``/``str`` and is shown in
the repr: such a field must be ``field(repr=False)`` or a ``Secret`` (whose repr hides the value)."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import re

PACKAGES = ("tunsec.ike", "tunsec.radius", "tunsec.conf", "tunsec.dataplane", "tunsec.services")
KEY_WORDS = {"msk", "key", "keys", "secret", "secrets", "password", "passwords", "psk", "passphrase"}
RAW = re.compile(r"\b(bytes|bytearray|memoryview|str)\b")
# fields whose name says "key" in another sense: a lookup key or a settings key, never key material
NOT_KEYS = {
    ("tunsec.dataplane.pipeio", "_WaitingIke", "key"),  # the share a queued datagram counts in
    ("tunsec.ike.endpoint", "_HalfOpen", "init_key"),  # a request's digest, its key in a table
    ("tunsec.conf.credentials", "Passphrase", "key"),  # the settings key the passphrase was written at
    ("tunsec.conf.errors", "ConfigIssue", "key"),  # the settings key an issue is about
    ("tunsec.ike.config", "IkeConfig", "psk_name"),  # the name of the secrets entry, not the PSK
    ("tunsec.conf.syntax", "ValueTail", "key"),  # the settings key of a value ending at '}', never its tail
}


def _key_like(name: str) -> bool:
    words = {w for w in name.lower().split("_") if w}
    return bool(words & KEY_WORDS) or name.lower().lstrip("_").startswith("sk_")


def _raw_key_in_repr(f: dataclasses.Field[object]) -> bool:
    return f.repr and _key_like(f.name) and bool(RAW.search(str(f.type))) and "Secret" not in str(f.type)


def _dataclasses() -> list[tuple[str, type]]:
    found = []
    for pkg in PACKAGES:
        for info in pkgutil.walk_packages(importlib.import_module(pkg).__path__, pkg + "."):
            mod = importlib.import_module(info.name)
            for obj in vars(mod).values():
                if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == mod.__name__:
                    found.append((mod.__name__, obj))
    return found


def test_no_dataclass_field_named_like_key_material_shows_raw_bytes_or_text_in_its_repr() -> None:
    classes = _dataclasses()
    names = {cls.__qualname__ for _, cls in classes}
    assert {"EapAuthenticator", "EapPeer", "GatewayEap", "IkeSaState", "IkeKeys"} <= names  # the walk reached them
    shown = [
        f"{module}.{cls.__qualname__}.{f.name}: {f.type}"
        for module, cls in classes
        for f in dataclasses.fields(cls)
        if _raw_key_in_repr(f) and (module, cls.__qualname__, f.name) not in NOT_KEYS
    ]
    assert shown == [], "key material in a repr (give it field(repr=False) or make it a Secret): " + ", ".join(shown)


def test_the_guard_catches_a_raw_msk_field() -> None:
    """The rule itself: a plain ``_msk: bytes`` is caught, a repr=False or Secret one is not."""

    @dataclasses.dataclass
    class Probe:
        _msk: bytes = b""
        sk_ai: bytes = dataclasses.field(default=b"", repr=False)
        label: str = ""

    flagged = [f.name for f in dataclasses.fields(Probe) if _raw_key_in_repr(f)]
    assert flagged == ["_msk"]
