"""Value parsers: the text of one ``key = value`` to a typed value, or :class:`BadValue`.

Shared by every section (``tunsec``, ``manual``, ``connections``, ``secrets``,
``authorities``). A parser takes the value as written and raises
:class:`~tunsec.conf.errors.BadValue` with a message that is shown after
``file:line: key:``; it never echoes key material (:func:`show_value`).
Numbers are decimal or ``0x`` hex as swanctl.conf documents; times, byte and
packet counts take strongSwan's suffixes.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import TypeVar

from tunsec.conf.errors import BadValue, show_value
from tunsec.ike.identity import Identity
from tunsec.policy.selector import Ts, TsError
from tunsec.policy.selector import parse_ts_list as selector_ts_list

__all__ = [
    "DEFAULT_REPLAY_WINDOW",
    "IPAddress",
    "IPNetwork",
    "auto_or",
    "choice",
    "float_range",
    "int_range",
    "lower",
    "parse_address",
    "parse_bool",
    "parse_bytes",
    "parse_duration",
    "parse_file",
    "parse_files",
    "parse_identity",
    "parse_local_identity",
    "parse_manual_ts_list",
    "parse_packets",
    "parse_port",
    "parse_replay_window",
    "parse_ts_list",
    "parse_uint",
    "parse_uint32",
    "refuse",
]

T = TypeVar("T")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_UINT = re.compile(r"0[xX][0-9a-fA-F]+|[0-9]+")
_U64_MAX = (1 << 64) - 1

# strongSwan's default is 32, but tunsec's loop threads share an SA's sequence
# numbers, and a window that narrow would count their reordering as replays
# (measured with workers = 4: drops at 32, 128 and 1024, rarely at 4096; see
# docs/benchmarks.md, "The worker's memory per client").  520 bytes an SA.
DEFAULT_REPLAY_WINDOW = 4096


# --------------------------------------------------------------------------
# Numbers, and parsers made from other parsers
# --------------------------------------------------------------------------


def parse_uint(text: str, what: str) -> int:
    """Decimal or 0x-hex, as swanctl.conf documents; at most 64 bits. ``what`` names it in errors."""
    text = text.strip()
    if not _UINT.fullmatch(text):
        raise BadValue(f"not {what}: {show_value(text)}")
    if len(text) > 24:  # also keeps int() clear of its digit limit
        raise BadValue(f"{show_value(text)} is too large")
    if len(text) > 1 and text[0] == "0" and text[1] not in "xX":
        # strongSwan's strtoul(..., 0) would read this as octal; refuse to guess.
        raise BadValue(f"leading zero in {show_value(text)} is ambiguous (octal in strongSwan)")
    return int(text, 0)


def int_range(lo: int, hi: int, what: str) -> Callable[[str], int]:
    """A parser for integers in ``lo..hi``."""

    def parse(text: str) -> int:
        value = parse_uint(text, what)
        if not lo <= value <= hi:
            raise BadValue(f"{value} is out of range {lo}..{hi}")
        return value

    return parse


def float_range(lo: float, hi: float, what: str) -> Callable[[str], float]:
    """A parser for decimal numbers in ``lo..hi`` (nan refused)."""

    def parse(text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            raise BadValue(f"not {what}: {show_value(text)}") from None
        if not lo <= value <= hi:  # also refuses nan
            raise BadValue(f"{show_value(text)} is out of range {lo:g}..{hi:g}")
        return value

    return parse


def auto_or(parse: Callable[[str], int]) -> Callable[[str], int | None]:
    """'auto' becomes None, anything else goes to ``parse``."""

    def parse_auto(text: str) -> int | None:
        if text.strip().lower() == "auto":
            return None
        return parse(text)

    return parse_auto


def choice(what: str, table: Mapping[str, T]) -> Callable[[str], T]:
    """One of the table's names (any case) to its value."""

    def parse(text: str) -> T:
        try:
            return table[text.strip().lower()]
        except KeyError:
            raise BadValue(f"not {what} ({', '.join(table)}): {show_value(text)}") from None

    return parse


def refuse(why: str) -> Callable[[str], None]:
    """A parser for keys tunsec does not support: any non-empty value is an error saying ``why``."""

    def parse(text: str) -> None:
        raise BadValue(why)

    return parse


def lower(text: str) -> str:
    return text.strip().lower()


parse_uint32 = int_range(0, 0xFFFFFFFF, "a number")
parse_port = int_range(1, 65535, "a port")


_BOOLEANS = {
    "yes": True, "true": True, "enabled": True, "1": True,
    "no": False, "false": False, "disabled": False, "0": False,
}  # fmt: skip


def parse_bool(text: str) -> bool:
    """strongSwan booleans: yes/no, true/false, enabled/disabled, 1/0 (any case)."""
    try:
        return _BOOLEANS[text.strip().lower()]
    except KeyError:
        raise BadValue(f"not a boolean (yes or no): {show_value(text)}") from None


_DURATION = re.compile(r"\s*([0-9]+)\s*([smhdSMHD]?)\s*")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """Seconds from strongSwan's time format: ``30``, ``30s``, ``5m``, ``1h``, ``1d``."""
    m = _DURATION.fullmatch(text)
    if not m:
        raise BadValue(f"not a duration (e.g. 30s, 5m, 1h, 1d): {show_value(text)}")
    seconds = parse_uint(m.group(1), "a duration") * _DURATION_UNITS[m.group(2).lower()]
    if seconds > _U64_MAX:
        raise BadValue(f"{show_value(text)} does not fit in 64 bits")
    return seconds


_BYTES = re.compile(r"\s*(0[xX][0-9a-fA-F]+|[0-9]+)\s*([kmgKMG]?)\s*")
_BYTE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_bytes(text: str) -> int:
    """A byte count with strongSwan's optional binary suffix: ``512k``, ``100M``, ``2g``."""
    m = _BYTES.fullmatch(text)
    if not m:
        raise BadValue(f"not a byte count (e.g. 1000000, 512k, 100m, 2g): {show_value(text)}")
    value = parse_uint(m.group(1), "a byte count") * _BYTE_UNITS[m.group(2).lower()]
    if value > _U64_MAX:
        raise BadValue(f"{show_value(text)} does not fit in 64 bits")
    return value


def parse_packets(text: str) -> int:
    value = parse_uint(text, "a packet count")
    if value > _U64_MAX:
        raise BadValue(f"{value} does not fit in 64 bits")
    return value


def parse_replay_window(text: str) -> int:
    value = parse_uint(text, "a replay window size")
    if value != 0 and not 32 <= value <= 65536:
        raise BadValue(f"{value} is not 0 (off) or 32..65536")
    return value


# --------------------------------------------------------------------------
# Addresses, traffic selectors, identities, file names
# --------------------------------------------------------------------------


def parse_address(text: str) -> IPAddress:
    """One tunnel endpoint address (not unspecified, not multicast, no scope)."""
    text = text.strip()
    if "%" in text:
        raise BadValue(f"scoped addresses are not supported: {show_value(text)}")
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise BadValue(f"not an IPv4 or IPv6 address: {show_value(text)}") from None
    if addr.is_unspecified or addr.is_multicast:
        raise BadValue(f"{addr} cannot be a tunnel endpoint (unspecified or multicast)")
    return addr


def parse_ts_list(text: str) -> tuple[Ts, ...]:
    """local_ts / remote_ts (one parser, tunsec.policy.selector, for manual{} and connections{})."""
    try:
        return selector_ts_list(text)
    except TsError as exc:
        raise BadValue(str(exc)) from None


def parse_manual_ts_list(text: str) -> tuple[Ts, ...]:
    """A manual tunnel's local_ts / remote_ts: like IKE's, without ``dynamic``."""
    selectors = parse_ts_list(text)
    if any(t.dynamic for t in selectors):
        raise BadValue("'dynamic' needs IKE; manual tunnels need explicit subnets or ranges")
    return selectors


def parse_identity(text: str) -> Identity:
    """strongSwan's identity notation (see :mod:`tunsec.ike.identity`)."""
    value = text.strip()
    if "*" in value:
        raise BadValue(f"wildcard identities are not supported: {show_value(value)}")
    prefix, sep, rest = value.partition(":")
    if sep and prefix.lower() == "dns":  # strongSwan's alias of fqdn:
        value = "fqdn:" + rest
    elif sep and (prefix.lower() == "asn1gn" or prefix.startswith("{")):
        raise BadValue(f"identity type {prefix!r} is not supported")
    try:
        ident = Identity.parse(value)
    except ValueError as exc:
        raise BadValue(str(exc)) from None
    if not ident.is_any and not ident.data:
        # '#' starts a comment, so an unquoted "@#0a0b" arrives here as "@".
        raise BadValue(f"empty identity {show_value(value)} (quote values with '#': id = \"@#0a0b...\")")
    return ident


def parse_local_identity(text: str) -> Identity:
    ident = parse_identity(text)
    if ident.is_any:
        raise BadValue("the local identity cannot be %any")
    return ident


def parse_files(text: str) -> tuple[str, ...]:
    """A comma-separated list of file names."""
    names = tuple(item.strip() for item in text.split(","))
    for name in names:
        if not name:
            raise BadValue("empty item in the list")
        if "\0" in name:
            raise BadValue("file name contains a NUL character")
    return names


def parse_file(text: str) -> str:
    name = text.strip()
    if "\0" in name:
        raise BadValue("file name contains a NUL character")
    return name
