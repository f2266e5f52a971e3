"""Where IKE the worker hands up is answered from: the worker's port 4500, always (review revpipe F3).

An IKE event's ADDR_LOCAL names the address the datagram arrived on, with the socket's port (docs/pipe.md):
the worker's sockets for IKE are the port-4500 ones (IkeService.esp_endpoints), and an answer to what came
that way leaves there too (SEND_IKE).  The engine answers from the port it is told a request came in on,
so a worker (taken over, or confused) that named another port chose the socket of the control process's
that answers: its port-500 one, to any address the worker names (a socket the worker never reaches
otherwise), or a line per datagram for a port the control process has none of.  The port is therefore
NATT_PORT whatever the event names; an event that names another is counted (IkeSockets.natt_other_port,
``tunsec status``: ike_natt_other_local_port) and answered from port 4500 all the same.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunsec.dataplane import pipe
from tunsec.ike.constants import IKE_PORT, NATT_PORT
from tunsec.policy.selector import addr_text
from tunsec.services.ike.sockets import _is_init

if TYPE_CHECKING:
    from tunsec.services.ike.service import IkeService


def local_end(svc: IkeService, msg: pipe.Ike) -> tuple[str, int] | None:
    """The local (address, port) the engine is told ``msg`` came in on: the event's address and port 4500;
    None for a message other than an IKE_SA_INIT that names none (the worker could not: an address of the
    other family), which its IKE SA answers from where it has it."""
    if msg.local is not None:
        if msg.local.port != NATT_PORT:
            svc.sockets.natt_other_port += 1
        return addr_text(msg.local.addr), NATT_PORT
    if msg.remote.port == IKE_PORT or _is_init(msg.data, 0):
        # an IKE_SA_INIT from port 500 to our 4500 (a peer with remote_port = 4500, unmarked),
        # or a marked one from a custom port (a tunsec initiator on a custom local_port):
        # its answer leaves from 4500, where it came in (RFC 7296 §2.11; a NAT in front of the
        # peer drops it from another port), not from the port-500 socket the engine assumes
        # when it is not told; the worker's sockets are bound to local_addrs (esp_endpoints),
        # as the IKE sockets' recv says of theirs
        fam = msg.remote.addr.version
        return svc.local_addrs.get(fam, "0.0.0.0" if fam == 4 else "::"), NATT_PORT
    return None
