"""What an address is to this host's IKE endpoint: asked of a virtual IP a gateway assigns us
(exchanges/ike_config.py) and of a REDIRECT's target (redirect.py), before a client takes either.

"own": a connection has it as its local address; "peer": the peer of an established IKE SA or a
connection's remote address.  As a virtual IP such an address would take that traffic (it becomes a
local address of the host), as a REDIRECT target it would send our IKE to ourselves.  Asked once per
CFG_REPLY or REDIRECT a client gets, so a pass over the connections is fine.
"""

from __future__ import annotations

from collections.abc import Iterable

from tunsec.policy.pad import AddressMatch, address_match, same_ip
from tunsec.policy.selector import IPAddress

from .by_address import EstablishedByAddress
from .config import IkeConfig


def address_role(configs: Iterable[IkeConfig], established: EstablishedByAddress, ip: IPAddress) -> str | None:
    """"own", "peer" (see the module) or None; ``established``: the endpoint's established IKE SAs."""
    configs = list(configs)
    text = str(ip)
    if any(c.local_addr is not None and same_ip(c.local_addr, text) for c in configs):
        return "own"
    if ip in established or any(address_match(c.remote_addr, text) is AddressMatch.EXACT for c in configs):
        return "peer"
    return None
