"""The RADIUS client's settings (``radius { }`` in the config file, read by
:mod:`tunsec.conf.radius`), as the client in :mod:`tunsec.radius.client` takes them."""

from __future__ import annotations

from dataclasses import dataclass, field

from tunsec.ike.secret import Secret
from tunsec.policy.selector import IPAddress

AUTH_PORT = 1812  # RFC 2865 §3


@dataclass(frozen=True)
class RadiusServer:
    """One ``radius.servers.NAME`` section: where Access-Requests go, and the shared secret."""

    name: str
    address: IPAddress
    secret: Secret = field(repr=False)
    auth_port: int = AUTH_PORT

    def __str__(self) -> str:
        host = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"{self.name} ({host}:{self.auth_port})"


@dataclass(frozen=True)
class RadiusSettings:
    """``radius { }``: the servers, tried in the order written (the next one only for a new
    conversation when one does not answer), and the retransmission of requests: the first
    after ``retransmit_timeout`` seconds, each wait ``retransmit_base`` times the one before,
    ``retransmit_tries`` retransmissions (strongSwan's eap-radius keys and defaults)."""

    servers: tuple[RadiusServer, ...] = ()
    nas_identifier: str = "tunsec"
    retransmit_timeout: float = 2.0
    retransmit_base: float = 1.4
    retransmit_tries: int = 4

    def wait(self, attempt: int) -> float:
        """Seconds to wait for an answer after send number ``attempt`` (0 = the first send)."""
        return self.retransmit_timeout * self.retransmit_base**attempt
