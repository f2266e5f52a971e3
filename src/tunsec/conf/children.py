"""swanctl.conf's ``connections.<name>.children { }``: one :class:`Child` per ``children.<name>`` section.

:func:`read_children` reads a connection's ``children`` section key by key
(traffic selectors, ESP proposals, mode, actions, lifetimes, replay window,
updown script) and gives a :class:`ChildDraft` per child: the :class:`Child`
and the reader that reported on it, so that the connection can add the errors
only it can see (``start_action`` without a peer to initiate to).
:mod:`tunsec.conf.connections` reads the rest of the connection and re-exports
:class:`Child`, :data:`Action`, :data:`DEFAULT_CHILD_REKEY_TIME` and
:func:`rekey_limit`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from tunsec.conf.errors import BadValue, ConfigIssue, show_value
from tunsec.conf.reader import SectionReader, accept_only, check_fast_selectors, refuse_keys
from tunsec.conf.syntax import Section
from tunsec.conf.values import (
    DEFAULT_REPLAY_WINDOW,
    choice,
    lower,
    parse_bool,
    parse_bytes,
    parse_duration,
    parse_packets,
    parse_replay_window,
    parse_ts_list,
    parse_uint32,
    refuse,
)
from tunsec.dataplane.pipe import Lifetime
from tunsec.ike.config import ChildConfig
from tunsec.ike.constants import ProtocolId
from tunsec.ike.proposals import ProposalSpec, parse_proposals
from tunsec.policy.selector import Ts, parse_ts
from tunsec.updown import UpdownError, parse_command

__all__ = [
    "DEFAULT_CHILD_REKEY_TIME",
    "Action",
    "Child",
    "ChildDraft",
    "read_children",
    "rekey_limit",
]

# strongSwan's actions (vici's parse_action): none/clear, trap/route, start/restart.
Action = Literal["none", "trap", "start"]

# strongSwan's default (vici_config.c): Child SA rekeying every hour.
DEFAULT_CHILD_REKEY_TIME = 3600


@dataclass(frozen=True)
class Child:
    """One ``children.<name>`` section: the engine's :class:`ChildConfig` plus what the IKE service needs
    to install its SAs (actions, lifetimes the dataplane counts, replay window).

    Lifetimes are strongSwan's, with its defaults already applied (``life_* =
    rekey_* + 10%``, ``rand_* = life_* - rekey_*``); 0 means "none". The
    actions are normalised to ``none``/``trap``/``start`` as strongSwan does
    (``clear`` is ``none``, ``route`` is ``trap``, ``restart`` is ``start``).
    """

    name: str
    config: ChildConfig
    start_action: Action = "none"
    close_action: Action = "none"
    dpd_action: Action = "none"
    rekey_time: int = DEFAULT_CHILD_REKEY_TIME
    life_time: int = DEFAULT_CHILD_REKEY_TIME * 110 // 100
    rand_time: int = DEFAULT_CHILD_REKEY_TIME * 10 // 100
    rekey_bytes: int = 0
    life_bytes: int = 0
    rand_bytes: int = 0
    rekey_packets: int = 0
    life_packets: int = 0
    rand_packets: int = 0
    replay_window: int = DEFAULT_REPLAY_WINDOW
    inactivity: int = 0
    updown: tuple[str, ...] = ()   # the script and its arguments (tunsec.updown), run without a shell
    hostaccess: bool = False       # only passed to the updown script (PLUTO_HOST_ACCESS)
    file: str = field(default="", compare=False)
    line: int = field(default=0, compare=False)

    def hard_lifetime(self) -> Lifetime:
        """The dataplane's hard limits for one of this child's SAs (rekeying on time is the engine's)."""
        return Lifetime(*self.hard_limits())

    def soft_lifetime(self, randbelow: Callable[[int], int] = secrets.randbelow) -> Lifetime:
        """The dataplane's soft limits (an EXPIRE that starts a rekey) for one new SA, jittered per SA."""
        return Lifetime(*self.soft_limits(randbelow))

    def hard_limits(self) -> tuple[int, int, int]:
        """hard_lifetime's bytes, packets and seconds (pipe.direct takes them so: no Lifetime per SA)."""
        return self.life_bytes, self.life_packets, self.life_time

    def soft_limits(self, randbelow: Callable[[int], int] = secrets.randbelow) -> tuple[int, int, int]:
        """soft_lifetime's bytes, packets and seconds, drawn anew."""
        return (rekey_limit(self.rekey_bytes, self.rand_bytes, randbelow),
                rekey_limit(self.rekey_packets, self.rand_packets, randbelow), 0)


def rekey_limit(rekey: int, rand: int, randbelow: Callable[[int], int] = secrets.randbelow) -> int:
    """strongSwan's soft limit for one SA: ``rekey`` minus a random part of ``rand`` (0: no limit).

    Drawn anew for every SA, so that neither the two peers nor the SAs of a
    busy gateway reach their byte or packet limits, and rekey, all at once.
    The random part is at most ``rekey``, as the time jitter is at most its
    period (ike/sa_timers.jittered): strongSwan's default ``rand`` (life -
    rekey) exceeds ``rekey`` once life is twice rekey, and unbounded it put
    most SAs' limit at the floor of 1, a rekey at every SA's first packet."""
    if rekey <= 0:
        return 0
    return max(1, rekey - (randbelow(min(rand, rekey) + 1) if rand > 0 else 0))


def _parse_esp_proposals(text: str) -> tuple[ProposalSpec, ...]:
    try:
        return parse_proposals(text, ProtocolId.ESP)
    except ValueError as exc:
        raise BadValue(str(exc)) from None


_ACTIONS: dict[str, Action] = {
    "none": "none", "clear": "none", "trap": "trap", "route": "trap", "start": "start", "restart": "start",
}  # fmt: skip


def _parse_action(text: str) -> Action:
    value = text.strip().lower()
    action = _ACTIONS.get(value)
    if action is not None:
        return action
    if value.replace(" ", "") in ("trap|start", "start|trap"):
        raise BadValue("trap|start is not supported: choose trap or start")
    raise BadValue(f"not an action (none, trap, start): {show_value(text)}")


def _parse_mode(text: str) -> Literal["tunnel"]:
    value = text.strip().lower()
    if value == "tunnel":
        return "tunnel"
    if value in ("transport", "transport_proxy", "beet"):
        raise BadValue(f"{value} mode is not supported (tunsec does tunnel mode only)")
    if value in ("pass", "drop"):
        raise BadValue(f"{value} (shunt) policies are not supported (tunsec does tunnel mode only)")
    raise BadValue(f"not an IPsec mode (tunnel): {show_value(text)}")


_HW_OFFLOAD = {"no": "no", "yes": "yes", "auto": "auto", "crypto": "crypto", "packet": "packet"}


_DYNAMIC_ONLY: tuple[Ts, ...] = (parse_ts("dynamic"),)   # strongSwan's default local_ts/remote_ts


@dataclass
class ChildDraft:
    """A child as parsed; becomes a :class:`Child` once the connection is complete."""

    section: Section
    reader: SectionReader
    child: Child


def _lifetimes(r: SectionReader, what: str, parse: Callable[[str], int], default_rekey: int) -> tuple[int, int, int]:
    """(rekey, life, rand) with strongSwan's defaults: life = rekey + 10%, rand = life - rekey."""
    rekey = r.get(f"rekey_{what}", parse, None)
    life = r.get(f"life_{what}", parse, None)
    rand = r.get(f"rand_{what}", parse, None)
    rekey_v = default_rekey if rekey is None else rekey
    life_v = rekey_v * 110 // 100 if life is None else life
    rand_v = life_v - min(life_v, rekey_v) if rand is None else rand
    soft, hard = f"rekey_{what}", f"life_{what}"
    if life and rekey_v >= life and not {soft, hard} & r.failed:
        if rekey is not None:
            r.error(soft, f"must be below {hard} ({rekey} >= {life})")
        else:
            r.error(hard, f"must be above {soft} ({life} <= {rekey_v}, the default {soft})")
    return rekey_v, life_v, rand_v


_CHILD_REFUSED = (
    ("ah_proposals", "AH is not supported (tunsec does ESP only)"),
    ("interface", "restricting policies to an interface is not supported"),
    ("mark_in", "netfilter marks are not supported"),
    ("mark_in_sa", "netfilter marks are not supported"),
    ("mark_out", "netfilter marks are not supported"),
    ("set_mark_in", "netfilter marks are not supported"),
    ("set_mark_out", "netfilter marks are not supported"),
    ("if_id_in", "XFRM interface IDs are not supported"),
    ("if_id_out", "XFRM interface IDs are not supported"),
    ("label", "security labels are not supported"),
    ("label_mode", "security labels are not supported"),
)


def _read_child(section: Section, issues: list[ConfigIssue]) -> ChildDraft | None:
    r = SectionReader(section, issues)
    local_ts = r.get("local_ts", parse_ts_list, _DYNAMIC_ONLY)
    remote_ts = r.get("remote_ts", parse_ts_list, _DYNAMIC_ONLY)
    esp = r.get("esp_proposals", _parse_esp_proposals, None)
    mode: Literal["tunnel"] = r.get("mode", _parse_mode, "tunnel")
    start_action: Action = r.get("start_action", _parse_action, "none")
    close_action: Action = r.get("close_action", _parse_action, "none")
    dpd_action: Action = r.get("dpd_action", _parse_action, "none")
    rekey_time, life_time, rand_time = _lifetimes(r, "time", parse_duration, DEFAULT_CHILD_REKEY_TIME)
    rekey_bytes, life_bytes, rand_bytes = _lifetimes(r, "bytes", parse_bytes, 0)
    rekey_packets, life_packets, rand_packets = _lifetimes(r, "packets", parse_packets, 0)
    replay_window = r.get("replay_window", parse_replay_window, DEFAULT_REPLAY_WINDOW)
    accept_only(r, "inactivity", parse_duration, {0}, "inactivity timeouts are not supported")
    inactivity = 0
    updown: tuple[str, ...] = r.get("updown", _parse_updown, ())
    # only passed to updown scripts (PLUTO_HOST_ACCESS), as in strongSwan
    hostaccess = r.get("hostaccess", parse_bool, False)
    accept_only(r, "policies", parse_bool, {True}, "policies = no is not supported (tunsec always installs policies)")
    accept_only(r, "policies_fwd_out", parse_bool, {False}, "outbound FWD policies are not supported")
    accept_only(r, "ipcomp", parse_bool, {False}, "IPComp is not supported")
    accept_only(r, "sha256_96", parse_bool, {False}, "truncated HMAC-SHA256 is not supported (tunsec's ESP is AES-GCM)")
    accept_only(r, "hw_offload", choice("a hw_offload mode", _HW_OFFLOAD), {"no"}, "hardware offload is not supported")
    accept_only(r, "copy_df", parse_bool, {True}, "only copy_df = yes is supported")
    accept_only(r, "copy_ecn", parse_bool, {True}, "only copy_ecn = yes is supported")
    accept_only(r, "copy_dscp", choice("a copy_dscp mode", {"out": "out", "in": "in", "yes": "yes", "no": "no"}),
          {"out"}, "only copy_dscp = out is supported")  # fmt: skip
    accept_only(r, "reqid", parse_uint32, {0}, "fixed reqids are not supported")
    accept_only(r, "priority", parse_uint32, {0}, "fixed policy priorities are not supported")
    accept_only(r, "tfc_padding", lower, {"0"}, "TFC padding is not supported")
    for key, why in _CHILD_REFUSED:
        r.get(key, refuse(why), None)
    r.finish()
    check_fast_selectors(r, local_ts, remote_ts)
    if r.failed:
        return None
    config = ChildConfig(
        section.name,
        local_ts,
        remote_ts,
        esp if esp is not None else parse_proposals("default", ProtocolId.ESP),
        mode,
        rekey_time=rekey_time or None,   # the engine rekeys on time; the dataplane on bytes/packets
        rand_time=float(rand_time),      # ... rand_time earlier at most (strongSwan's jitter)
        life_time=float(life_time) or None,   # the worker's; a rekey the engine re-arms stays before it
    )
    child = Child(
        section.name,
        config,
        start_action=start_action,
        close_action=close_action,
        dpd_action=dpd_action,
        rekey_time=rekey_time,
        life_time=life_time,
        rand_time=rand_time,
        rekey_bytes=rekey_bytes,
        life_bytes=life_bytes,
        rand_bytes=rand_bytes,
        rekey_packets=rekey_packets,
        life_packets=life_packets,
        rand_packets=rand_packets,
        replay_window=replay_window,
        inactivity=inactivity,
        updown=updown,
        hostaccess=hostaccess,
        file=section.file,
        line=section.line,
    )
    return ChildDraft(section, r, child)


def _parse_updown(text: str) -> tuple[str, ...]:
    """``updown``: a script (with arguments) run without a shell; it must exist and be executable now."""
    try:
        argv = parse_command(text)
    except UpdownError as exc:
        raise BadValue(str(exc)) from None
    if not os.path.isfile(argv[0]) or not os.access(argv[0], os.X_OK):
        raise BadValue(f"{argv[0]} is not an executable file (chmod +x it, or fix the path)")
    return argv


def read_children(r: SectionReader, issues: list[ConfigIssue]) -> list[ChildDraft] | None:
    """The connection's children; None if one of them is broken (already reported)."""
    section = r.subsection("children")
    if section is None or (not section.sections and not section.settings):
        if not r.section.damaged and (section is None or not section.damaged):
            r.error("children", "a connection needs at least one child ('children { NAME { ... } }')")
        return None
    refuse_keys(section, issues, "children takes one section per child ('NAME { local_ts = ... }'), not keys")
    drafts = [_read_child(sub, issues) for sub in section.sections.values()]
    if section.settings or any(d is None for d in drafts):
        return None
    return [d for d in drafts if d is not None]
