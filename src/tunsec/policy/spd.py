"""From configured traffic selectors to the fast path's policies and SA selectors.

A tunnel protects every (local_ts, remote_ts) pair of the same address
family.  Outbound policies see packets as they leave us (source = local
side); an inbound SA's selectors see packets as they arrive (source =
remote side), which is what the fast path checks after decryption.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tunsec.config import Selector as TsConfig
from tunsec.dataplane.pipe import MAX_SELECTORS, Action, Policy, Selector


class PolicyError(ValueError):
    """Selectors that cannot be turned into policies (named in the message)."""


@dataclass(frozen=True)
class SelectorPair:
    local: TsConfig
    remote: TsConfig


def pairs(local: Iterable[TsConfig], remote: Iterable[TsConfig]) -> list[SelectorPair]:
    """Every same-family pair whose protocols agree (0 is any)."""
    out = []
    remote = list(remote)
    for lo in local:
        for re in remote:
            if lo.network.version != re.network.version:
                continue
            if lo.proto and re.proto and lo.proto != re.proto:
                continue
            out.append(SelectorPair(lo, re))
    return out


def _selector(src: TsConfig, dst: TsConfig) -> Selector:
    return Selector.from_networks(
        src.network,
        dst.network,
        proto=src.proto or dst.proto,
        sport=(src.port_lo, src.port_hi),
        dport=(dst.port_lo, dst.port_hi),
    )


def outbound_selectors(ps: list[SelectorPair]) -> tuple[Selector, ...]:
    return tuple(_selector(p.local, p.remote) for p in ps)


def inbound_selectors(ps: list[SelectorPair]) -> tuple[Selector, ...]:
    return tuple(_selector(p.remote, p.local) for p in ps)


def protect_policies(name: str, ps: list[SelectorPair], reqid: int, first_id: int, priority: int) -> list[Policy]:
    if not ps:
        raise PolicyError(f"{name}: no local_ts/remote_ts pair of the same address family and protocol")
    if len(ps) > MAX_SELECTORS:
        raise PolicyError(f"{name}: {len(ps)} selector pairs; at most {MAX_SELECTORS} per SA")
    return [
        Policy(id=first_id + i, priority=priority, action=Action.PROTECT, reqid=reqid, selector=sel)
        for i, sel in enumerate(outbound_selectors(ps))
    ]
