"""From a tunnel's traffic selectors to the fast path's PROTECT policies.

The selectors themselves (parsing, pairing, the fast path's form) are
:mod:`tunsec.policy.selector`, shared by manual tunnels and IKE children.
"""

from __future__ import annotations

from collections.abc import Sequence

from tunsec.dataplane.pipe import Action, Policy
from tunsec.policy.selector import FastSelectors, SelectorError, Ts, fast_selectors


class PolicyError(ValueError):
    """Selectors that cannot be turned into policies (named in the message)."""


def tunnel_selectors(name: str, local: Sequence[Ts], remote: Sequence[Ts]) -> FastSelectors:
    try:
        return fast_selectors(local, remote)
    except SelectorError as exc:
        raise PolicyError(f"{name}: {exc}") from None


def protect_policies(sels: FastSelectors, reqid: int, first_id: int, priority: int) -> list[Policy]:
    return [
        Policy(id=first_id + i, priority=priority, action=Action.PROTECT, reqid=reqid, selector=sel)
        for i, sel in enumerate(sels.outbound)
    ]
