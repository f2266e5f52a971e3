"""What changed between two loaded configurations, for ``tunsec reload``.

Compared by configured value, never by object identity: a file read twice gives
new objects, and private keys from ``cryptography`` compare by identity, so
:func:`comparable` turns a parsed object into plain tuples first (a private key
by its public key: the pair is one key).  Credentials count: a changed PSK,
certificate or key is a change (:func:`credentials_only` tells such a change
apart, so the running SAs can stay).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cryptography.hazmat.primitives import serialization

from tunsec.conf.tunsec_section import TunsecSettings

__all__ = ["NameDiff", "comparable", "credentials_only", "diff_by_name", "restart_keys"]

T = TypeVar("T")

# the fields that hold secrets and credentials (IkeConfig.psk and psk_name, peer_psks and eap_secrets, LocalAuth.cert/
# intermediates/private_key, RemoteAuth.cas): a connection that differs only in these keeps its SAs; new
# negotiations use the new ones.  peer_psks is every PSK entry of the file (a connection of %any carries
# them all): a user's PSK added or changed must not end the other users' IKE SAs.  eap_secrets is every
# EAP user of the file (connections.py gives all of them to each EAP connection): a user added or a
# password changed must not end every EAP client's IKE SA
CREDENTIAL_FIELDS = frozenset({"psk", "psk_name", "peer_psks", "eap_secrets", "cert", "intermediates", "private_key",
                               "cas"})


def comparable(value: Any, skip: frozenset[str] = frozenset()) -> Any:
    """value as nested tuples that compare equal exactly when the configured values do.

    Dataclass fields declared compare=False (file, line) do not count; fields named in skip
    are left out at every depth."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__, *((f.name, comparable(getattr(value, f.name), skip))
                                        for f in dataclasses.fields(value) if f.compare and f.name not in skip))
    if isinstance(value, (tuple, list)):
        return tuple(comparable(v, skip) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((comparable(k, skip), comparable(v, skip)) for k, v in value.items()))
    public_key = getattr(value, "public_key", None)
    if callable(public_key) and hasattr(value, "private_bytes"):
        # a private key: cryptography compares those by identity; the public half names the pair
        return ("private key", public_key().public_bytes(serialization.Encoding.DER,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo))
    return value


def credentials_only(old: Any, new: Any) -> bool:
    """old and new differ, but only in secrets and credentials."""
    differ: bool = comparable(old) != comparable(new)
    same_otherwise: bool = comparable(old, CREDENTIAL_FIELDS) == comparable(new, CREDENTIAL_FIELDS)
    return differ and same_otherwise


@dataclass(frozen=True)
class NameDiff(Generic[T]):
    """Named items (connections, manual tunnels) of the running and the new configuration."""

    added: tuple[T, ...] = ()
    removed: tuple[T, ...] = ()
    changed: tuple[tuple[T, T], ...] = ()     # (running, new)
    kept: tuple[T, ...] = ()                  # the running ones, equal in the new configuration

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def summary(self, what: str) -> list[str]:
        """One line per kind of change, naming them; nothing when nothing changed."""
        out = []
        for verb, items in (("added", self.added), ("removed", self.removed),
                            ("replaced", tuple(new for _, new in self.changed))):
            if items:
                out.append(f"{what} {verb}: {', '.join(_name(i) for i in items)}")
        return out


def _name(item: Any) -> str:
    return str(item.name)


def diff_by_name(old: Sequence[T], new: Sequence[T], name: Callable[[T], str] = _name) -> NameDiff[T]:
    """By name, then by configured value (see comparable)."""
    before = {name(i): i for i in old}
    after = {name(i): i for i in new}
    return NameDiff(
        added=tuple(i for n, i in after.items() if n not in before),
        removed=tuple(i for n, i in before.items() if n not in after),
        changed=tuple((before[n], i) for n, i in after.items()
                      if n in before and comparable(before[n]) != comparable(i)),
        kept=tuple(i for n, i in before.items() if n in after and comparable(after[n]) == comparable(i)),
    )


def restart_keys(old: TunsecSettings, new: TunsecSettings) -> list[str]:
    """The tunsec { } keys whose value changed: none of them can change while tunsec runs
    (TUN, workers, user, sockets, MTU, the timers the IKE engine was built with...)."""
    out = []
    for f in dataclasses.fields(old):
        if f.name in _LIVE:
            continue
        a, b = getattr(old, f.name), getattr(new, f.name)
        if comparable(a) == comparable(b):
            continue
        if f.name in _GROUPED and dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b):
            # one field holds several keys (retransmit_timeout, ..., cookie_threshold, ...): name the keys
            out += [_GROUPED[f.name] + g.name for g in dataclasses.fields(a)
                    if comparable(getattr(a, g.name)) != comparable(getattr(b, g.name))]
        else:
            out.append(f.name)
    return out


_GROUPED = {"retransmit": "retransmit_", "dos": ""}   # field -> prefix of the keys it holds
_LIVE = {"auth_ban"}   # fields a reload applies (auth_failures*: the daemon hands them to the ban table)
