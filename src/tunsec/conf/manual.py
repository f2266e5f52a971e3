"""The ``manual { <name> { } }`` section: manually keyed tunnels (RFC 4301 §4.5).

Each tunnel is a pair of ESP SAs with fixed SPIs and keys; :mod:`tunsec.services.manual`
turns a :class:`ManualTunnel` into the SAs and policies the worker installs.
Keys are :class:`~tunsec.ike.secret.Secret` from the moment they are parsed.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tunsec.conf.errors import BadValue, ConfigIssue, show_value
from tunsec.conf.reader import SectionReader, check_fast_selectors, refuse_keys
from tunsec.conf.syntax import Section, Setting
from tunsec.conf.values import (
    DEFAULT_REPLAY_WINDOW,
    IPAddress,
    parse_address,
    parse_bool,
    parse_bytes,
    parse_duration,
    parse_manual_ts_list,
    parse_packets,
    parse_port,
    parse_replay_window,
    parse_uint,
)
from tunsec.ike.constants import IKE_PORT, NATT_PORT
from tunsec.ike.secret import Secret
from tunsec.policy.selector import Ts

if TYPE_CHECKING:
    from tunsec.conf.connections import Connection
    from tunsec.policy.pools import PoolConfig

__all__ = ["Esp", "ManualTunnel", "ike_inside_manual_warnings", "parse_spi", "read_manual_section"]


class Esp(enum.StrEnum):
    """The AEAD transforms the dataplane implements (RFC 4106, 16-byte ICV)."""

    AES128GCM16 = "aes128gcm16"
    AES256GCM16 = "aes256gcm16"

    @property
    def key_bytes(self) -> int:
        return 16 if self is Esp.AES128GCM16 else 32

    @property
    def keymat_bytes(self) -> int:
        """AES key || 4-byte salt (RFC 4106 §8.1)."""
        return self.key_bytes + 4


# strongSwan names the ICV length in bytes (gcm16) or bits (gcm128); plain
# "aes128gcm" is its alias for the 16-byte ICV too.
_ESP_ALIASES = {f"aes{bits}gcm{suffix}": Esp(f"aes{bits}gcm16") for bits in (128, 256) for suffix in ("", "16", "128")}
_SHORT_ICV = re.compile(r"aes(128|192|256)gcm(8|12|64|96)")


def _parse_esp_port(text: str) -> int:
    """A port ESP in UDP may use: not 500, which carries IKE only (RFC 7296 §2.23; a datagram
    to or from it has no non-ESP marker, so the dataplane takes one from port 500 as IKE, as
    strongSwan does, and a peer would take our ESP from 500 as IKE too)."""
    port = parse_port(text)
    if port == IKE_PORT:
        raise BadValue("port 500 carries only IKE: ESP in UDP from or to it is taken as IKE "
                       "(use 4500, the default, or another port)")
    return port


def _parse_esp(text: str) -> Esp:
    name = text.strip().lower()
    esp = _ESP_ALIASES.get(name)
    if esp is not None:
        return esp
    if _SHORT_ICV.fullmatch(name):
        raise BadValue(f"{show_value(text)}: tunsec supports only the 16-byte ICV (aes128gcm16, aes256gcm16)")
    raise BadValue(f"unsupported ESP algorithm {show_value(text)} (use aes128gcm16 or aes256gcm16)")


def parse_spi(text: str) -> int:
    try:
        value = parse_uint(text, "a 32-bit SPI")
    except BadValue:
        raise BadValue(f"not a 32-bit SPI: {show_value(text.strip())}") from None
    if value > 0xFFFFFFFF:
        raise BadValue(f"not a 32-bit SPI: {show_value(text.strip())}")
    if value < 256:
        # RFC 4303 §2.1: 0 is never sent, 1..255 are reserved by IANA.
        raise BadValue(f"SPI {value} is reserved (SPIs 0..255 are); use 256 or more")
    return value


_HEX_KEY = re.compile(r"0[xX]([0-9a-fA-F]*)")


def _parse_key(text: str) -> Secret:
    """0x-hex key material. Messages never contain the value, not even in part."""
    m = _HEX_KEY.fullmatch(text.strip())
    if not m:
        raise BadValue("must be 0x followed by hex digits (AES key || 4-byte salt)")
    digits = m.group(1)
    if len(digits) % 2:
        raise BadValue(f"has an odd number of hex digits ({len(digits)})")
    return Secret(bytes.fromhex(digits))



@dataclass(frozen=True)
class ManualTunnel:
    """One manually keyed tunnel (RFC 4301 §4.5): a pair of SAs with fixed keys.

    Lifetimes and soft limits are 0 for "none". ``file``/``line`` locate the
    tunnel's section for messages and are ignored when comparing tunnels.
    """

    name: str
    local_addr: IPAddress
    remote_addr: IPAddress
    local_ts: tuple[Ts, ...]
    remote_ts: tuple[Ts, ...]
    spi_in: int
    spi_out: int
    key_in: Secret
    key_out: Secret
    local_port: int = NATT_PORT
    remote_port: int = NATT_PORT
    esp: Esp = Esp.AES128GCM16
    esn: bool = False
    replay_window: int = DEFAULT_REPLAY_WINDOW
    life_bytes: int = 0
    life_packets: int = 0
    life_time: int = 0
    rekey_bytes: int = 0
    rekey_packets: int = 0
    rekey_time: int = 0
    file: str = field(default="", compare=False)
    line: int = field(default=0, compare=False)






def _check_key_length(r: SectionReader, key: str, secret: Secret | None, esp: Esp) -> None:
    if secret is None or "esp" in r.failed or len(secret) == esp.keymat_bytes:
        return
    want = esp.keymat_bytes
    r.error(key, f"must be {2 * want} hex digits ({want} bytes) for {esp}, got {len(secret)} bytes")


def _check_soft_below_hard(r: SectionReader, soft_key: str, soft: int, hard_key: str, hard: int) -> None:
    if soft and hard and soft >= hard and soft_key not in r.failed and hard_key not in r.failed:
        r.error(soft_key, f"must be below {hard_key} ({soft} >= {hard})")


_LIMITS: tuple[tuple[str, Callable[[str], int]], ...] = (
    ("life_bytes", parse_bytes),
    ("life_packets", parse_packets),
    ("life_time", parse_duration),
    ("rekey_bytes", parse_bytes),
    ("rekey_packets", parse_packets),
    ("rekey_time", parse_duration),
)


def _read_limits(r: SectionReader) -> dict[str, int]:
    limits = {key: r.get(key, parse, 0) for key, parse in _LIMITS}
    for what in ("bytes", "packets", "time"):
        soft, hard = f"rekey_{what}", f"life_{what}"
        _check_soft_below_hard(r, soft, limits[soft], hard, limits[hard])
    return limits


def _check_families(r: SectionReader, local: IPAddress | None, remote: IPAddress | None) -> None:
    if local and remote and local.version != remote.version:
        r.error("remote_addr", f"is IPv{remote.version} but local_addr is IPv{local.version}")


def _manual_tunnel(section: Section, issues: list[ConfigIssue]) -> ManualTunnel | None:
    r = SectionReader(section, issues)
    local_addr = r.require("local_addr", parse_address)
    remote_addr = r.require("remote_addr", parse_address)
    local_ts = r.require("local_ts", parse_manual_ts_list)
    remote_ts = r.require("remote_ts", parse_manual_ts_list)
    spi_in = r.require("spi_in", parse_spi)
    spi_out = r.require("spi_out", parse_spi)
    esp = r.get("esp", _parse_esp, Esp.AES128GCM16)
    key_in = r.require("key_in", _parse_key)
    key_out = r.require("key_out", _parse_key)
    local_port = r.get("local_port", _parse_esp_port, NATT_PORT)
    remote_port = r.get("remote_port", _parse_esp_port, NATT_PORT)
    esn = r.get("esn", parse_bool, False)
    replay_window = r.get("replay_window", parse_replay_window, DEFAULT_REPLAY_WINDOW)
    limits = _read_limits(r)
    r.finish()
    _check_families(r, local_addr, remote_addr)
    _check_key_length(r, "key_in", key_in, esp)
    _check_key_length(r, "key_out", key_out, esp)
    check_fast_selectors(r, local_ts, remote_ts)
    if (
        r.failed
        or local_addr is None or remote_addr is None
        or local_ts is None or remote_ts is None
        or spi_in is None or spi_out is None
        or key_in is None or key_out is None
    ):  # fmt: skip
        return None
    return ManualTunnel(
        name=section.name,
        local_addr=local_addr,
        remote_addr=remote_addr,
        local_ts=local_ts,
        remote_ts=remote_ts,
        spi_in=spi_in,
        spi_out=spi_out,
        key_in=key_in,
        key_out=key_out,
        local_port=local_port,
        remote_port=remote_port,
        esp=esp,
        esn=esn,
        replay_window=replay_window,
        life_bytes=limits["life_bytes"],
        life_packets=limits["life_packets"],
        life_time=limits["life_time"],
        rekey_bytes=limits["rekey_bytes"],
        rekey_packets=limits["rekey_packets"],
        rekey_time=limits["rekey_time"],
        file=section.file,
        line=section.line,
    )


def _check_unique_spi_in(section: Section, issues: list[ConfigIssue]) -> None:
    """Inbound SAs are found by SPI alone, so two tunnels may not share one."""
    seen: dict[int, Setting] = {}
    for tunnel in section.sections.values():
        setting = tunnel.settings.get("spi_in")
        if setting is None:
            continue
        try:
            spi = parse_spi(setting.value)
        except BadValue:
            continue  # already reported by the tunnel's own validation
        first = seen.setdefault(spi, setting)
        if first is not setting:
            issues.append(
                ConfigIssue(
                    setting.file,
                    setting.line,
                    tunnel.key_path("spi_in"),
                    f"SPI {spi:#x} is already the spi_in of another tunnel ({first.file}:{first.line})",
                )
            )


def _check_unique_keys(section: Section, issues: list[ConfigIssue]) -> None:
    """A key in one SA only.  The GCM nonce is salt || sequence number, the SPI is not in it: two SAs
    under one key (two tunnels, or key_in == key_out, where the peer's outbound SA is the other)
    each count from 1 and repeat nonces."""
    seen: dict[bytes, tuple[Setting, str]] = {}
    for tunnel in section.sections.values():
        for name in ("key_in", "key_out"):
            setting = tunnel.settings.get(name)
            if setting is None:
                continue
            try:
                key = _parse_key(setting.value).reveal()
            except BadValue:
                continue  # already reported by the tunnel's own validation
            where = tunnel.key_path(name)
            first, first_where = seen.setdefault(key, (setting, where))
            if first is setting:
                continue
            peer = (" (the peer sends with its key_out = our key_in: both sides' outbound SAs would use it)"
                    if first_where.rsplit(".", 1)[0] == where.rsplit(".", 1)[0] else "")
            issues.append(ConfigIssue(
                setting.file, setting.line, where,
                f"the same key as {first_where} ({first.file}:{first.line}){peer}: one key in two SAs repeats "
                "AES-GCM nonces; give every key_in and key_out a random key of its own "
                "(e.g. openssl rand -hex 20, or 36 for aes256gcm16)"))


def read_manual_section(section: Section, issues: list[ConfigIssue]) -> tuple[ManualTunnel, ...]:
    """The tunnels of ``manual { }``; broken ones are reported and left out."""
    refuse_keys(section, issues, "manual takes one section per tunnel ('<name> { ... }'), not keys")
    tunnels = [_manual_tunnel(sub, issues) for sub in section.sections.values()]
    _check_unique_spi_in(section, issues)
    _check_unique_keys(section, issues)
    return tuple(t for t in tunnels if t is not None)



def ike_inside_manual_warnings(tunnels: Sequence[ManualTunnel], connections: Sequence[Connection],
                               pools: Sequence[PoolConfig] = ()) -> list[ConfigIssue]:
    """What the selector claims (services/manual_claims.py) will refuse or narrow of the connections
    beside the manual tunnels, toward local_ts that meet a tunnel's (its networks are the tunnel's):
    - a child whose every remote selector lies inside a tunnel's remote_ts: its Child SAs toward the
      tunnel's local side are refused (TS_UNACCEPTABLE; a road warrior has nothing left to narrow to);
    - a child of a connection without pools whose remote_ts holds or overlaps a tunnel's (a site's
      full tunnel through a hub beside a manual tunnel toward its LAN, review revclaimfix F1): what we
      start is proposed without the tunnel's network (exchanges/child.py outside_others_claims), and
      a peer whose request or answer holds it is refused, a site not being narrowed;
    - a pool of a connection that overlaps a tunnel's remote_ts: a client leased an address there
      has its IKE SA, but every Child SA of it refused.
    Warned, not refused: the peer may reach other local hosts, other networks of remote_ts, and the
    other addresses of the pool.  A child with a ``dynamic`` side is not warned about (what it
    negotiates is not known here); a road warrior's wider remote_ts is narrowed around the tunnel."""
    out = []
    for c in connections:
        for child in c.children:
            remote, local = child.config.remote_ts, child.config.local_ts
            key = f"connections.{c.name}.children.{child.name}.remote_ts"
            where = (child.file or c.file, child.line or c.line, key)
            if (t := next((t for t in tunnels if _inside_manual(remote, local, t)), None)) is not None:
                out.append(ConfigIssue(*where,
                    f"{_ts_text(remote)} lies inside manual tunnel {t.name}'s remote_ts {_ts_text(t.remote_ts)} "
                    f"toward local_ts that meet its {_ts_text(t.local_ts)}: those networks are the manual "
                    "tunnel's, and this child's Child SAs toward them are refused (TS_UNACCEPTABLE); remove one "
                    "of the two, or give them local_ts apart"))
            elif not c.ike.pools and (t := next((t for t in tunnels if _meets_manual(remote, local, t)), None)):
                out.append(ConfigIssue(*where,
                    f"{_ts_text(remote)} overlaps manual tunnel {t.name}'s remote_ts {_ts_text(t.remote_ts)} "
                    f"toward local_ts that meet its {_ts_text(t.local_ts)}: those networks are the manual "
                    "tunnel's, so a Child SA this host starts proposes remote_ts without them (narrowed around "
                    "the tunnel), and a peer whose request or answer holds them is refused (TS_UNACCEPTABLE); "
                    "leave them out of remote_ts, or give the two local_ts apart"))
    return out + _pool_manual_warnings(tunnels, connections, pools)


def _pool_manual_warnings(tunnels: Sequence[ManualTunnel], connections: Sequence[Connection],
                          pools: Sequence[PoolConfig]) -> list[ConfigIssue]:
    """A pool of a connection that overlaps a manual tunnel's remote_ts, one of its children's
    local_ts meeting the tunnel's: a client leased an address there is refused every Child SA toward
    that side (its lease is its remote side, the tunnel's), and gets the same lease back next time."""
    by_name = {p.name: p for p in pools}
    out = []
    for c in connections:
        locals_ = [ts for child in c.children for ts in child.config.local_ts if not ts.dynamic]
        for name in c.ike.pools:
            if (pool := by_name.get(name)) is None:
                continue
            span = Ts(pool.first, pool.last)
            for t in tunnels:
                held = next((m for m in t.remote_ts if m.intersect(span) is not None), None)
                if held is None or not _locals_meet(locals_, t):
                    continue
                out.append(ConfigIssue(
                    c.file, c.line, f"connections.{c.name}.pools",
                    f"pool {name} ({pool.first}-{pool.last}) overlaps manual tunnel {t.name}'s remote_ts {held} "
                    f"toward local_ts that meet its {_ts_text(t.local_ts)}: a client leased an address there has "
                    "every Child SA toward that side refused (TS_UNACCEPTABLE); take those addresses out of the pool"))
                break
    return out


def _inside_manual(remote: Sequence[Ts], local: Sequence[Ts], t: ManualTunnel) -> bool:
    if any(ts.dynamic for ts in (*remote, *local)):
        return False
    inside = all(any(r.intersect(m) == r for m in t.remote_ts) for r in remote)
    return inside and _locals_meet(local, t)


def _meets_manual(remote: Sequence[Ts], local: Sequence[Ts], t: ManualTunnel) -> bool:
    """remote_ts holds or overlaps some of ``t``'s, toward local_ts that meet its (no ``dynamic`` side)."""
    if any(ts.dynamic for ts in (*remote, *local)):
        return False
    return any(r.intersect(m) is not None for r in remote for m in t.remote_ts) and _locals_meet(local, t)


def _locals_meet(local: Sequence[Ts], t: ManualTunnel) -> bool:
    return any(mine.intersect(m) is not None for mine in local for m in t.local_ts)


def _ts_text(selectors: Sequence[Ts]) -> str:
    return ", ".join(map(str, selectors))
