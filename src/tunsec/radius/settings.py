"""The RADIUS client's settings (``radius { }`` in the config file, read by
:mod:`tunsec.conf.radius`), as the client in :mod:`tunsec.radius.client` takes them."""

from __future__ import annotations

from dataclasses import dataclass, field

from tunsec.ike.secret import Secret
from tunsec.policy.selector import IPAddress, IPNetwork

AUTH_PORT = 1812  # RFC 2865 §3
ACCT_PORT = 1813  # RFC 2866 §3
DAE_PORT = 3799  # RFC 5176 §3.1
DAE_WINDOW = 300.0  # seconds an Event-Timestamp may be old (RFC 5176 §3.3's example window)
IDS = 256  # requests one socket can have outstanding: the Identifier is one octet (RFC 2865 §3)


@dataclass(frozen=True)
class RadiusServer:
    """One ``radius.servers.NAME`` section: where Access-Requests (and Accounting-Requests) go,
    and the shared secret."""

    name: str
    address: IPAddress
    secret: Secret = field(repr=False)
    auth_port: int = AUTH_PORT
    acct_port: int = ACCT_PORT
    # strongSwan's servers.NAME.preference and .sockets: which server a new request tries first
    # (tunsec.radius.health.score): the higher preference, then the fewer requests under way
    # of ``sockets``; and the UDP sockets (source ports) the client opens to it as load needs
    # them, each with its own IDS identifiers (tunsec.radius.client)
    preference: int = 0
    sockets: int = 1

    @property
    def capacity(self) -> int:
        """Requests to one of its ports that can be outstanding at once: IDS per socket."""
        return self.sockets * IDS

    def __str__(self) -> str:
        return self.at(self.auth_port)

    def at(self, port: int) -> str:
        """The server's name and ``address:port``, for log lines."""
        return f"{self.name} ({self.endpoint(port)})"

    def endpoint(self, port: int) -> str:
        host = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"{host}:{port}"


@dataclass(frozen=True)
class DaeSettings:
    """``radius.dae { enable = yes }``: RADIUS Dynamic Authorization (RFC 5176), as strongSwan's
    ``eap-radius.dae``: Disconnect-Requests (and CoA-Requests, answered with a NAK) from
    ``clients``, authenticated with ``secret``, on UDP ``listen``:``port`` (that address only)."""

    listen: IPAddress
    secret: Secret = field(repr=False)
    port: int = DAE_PORT
    # who may send requests: each request's source address must be in one of these networks
    # (strongSwan takes them from anyone who knows the secret)
    clients: tuple[IPNetwork, ...] = ()
    # how old a request's Event-Timestamp may be, and so how long an answer is kept (tunsec.radius.dae)
    window: float = DAE_WINDOW
    # a request without Event-Timestamp gets a NAK (402 Missing-Attribute) and is not acted on: the
    # answer cache is its only replay check, and it forgets after the window (RFC 5176 §3.3: a NAS
    # SHOULD be configurable to discard them; strongSwan takes them)
    require_event_timestamp: bool = True

    def endpoint(self) -> str:
        host = f"[{self.listen}]" if self.listen.version == 6 else str(self.listen)
        return f"{host}:{self.port}"

    def admits(self, source: IPAddress) -> bool:
        return any(source in net for net in self.clients)


@dataclass(frozen=True)
class RadiusSettings:
    """``radius { }``: the servers, tried by preference and load, the one written first on a
    tie (the next one only for a new conversation when one does not answer; one that did not
    answer lately goes last: :mod:`tunsec.radius.health`), and the retransmission of requests: the first
    after ``retransmit_timeout`` seconds, each wait ``retransmit_base`` times the one before,
    ``retransmit_tries`` retransmissions (strongSwan's eap-radius keys and defaults).

    ``accounting``: RADIUS accounting (RFC 2866) of the IKE SAs eap-radius authenticated, with
    an Interim-Update every ``accounting_interval`` seconds (0: none) unless the Access-Accept
    says otherwise, as strongSwan's ``accounting`` and ``accounting_interval``;
    ``accounting_close_on_timeout``: an IKE SA whose Start or Interim-Update no server takes is
    closed (strongSwan's key and default); ``accounting_requires_vip``: only IKE SAs that got a
    virtual IP are accounted (strongSwan's, default no).

    ``class_group``, ``filter_id``: where an Access-Accept's group memberships come from, which a
    connection's ``remote.groups`` requires (strongSwan's keys, default no): each Class attribute
    that is a printable name shorter than 44 bytes, and the Filter-Id when the Accept's
    Tunnel-Type is ESP (:meth:`tunsec.radius.messages.Answer.groups`).

    ``trust_eap_identity``: an Access-Accept that names no other user proves the EAP identity the
    client gave, whatever method the server ran (default no: only a method that checks a credential
    of that identity does, MSCHAPv2...; else it is unproven and acts on no other IKE SA:
    :mod:`tunsec.radius.proven`)."""

    servers: tuple[RadiusServer, ...] = ()
    nas_identifier: str = "tunsec"
    retransmit_timeout: float = 2.0
    retransmit_base: float = 1.4
    retransmit_tries: int = 4
    accounting: bool = False
    accounting_interval: float = 0
    accounting_close_on_timeout: bool = True
    accounting_requires_vip: bool = False
    class_group: bool = False
    filter_id: bool = False
    trust_eap_identity: bool = False
    dae: DaeSettings | None = None   # radius.dae { enable = yes }: Dynamic Authorization (RFC 5176)

    @property
    def gives_groups(self) -> bool:
        """Whether an Access-Accept can make a user a member of groups (``remote.groups``)."""
        return self.class_group or self.filter_id

    def wait(self, attempt: int) -> float:
        """Seconds to wait for an answer after send number ``attempt`` (0 = the first send)."""
        return self.retransmit_timeout * self.retransmit_base**attempt

    def round_seconds(self) -> float:
        """How long one request to one server lasts at most: its sends and their waits. A request
        that first waits for a free identifier gets what is left of it (tunsec.radius.client)."""
        return sum(self.wait(n) for n in range(self.retransmit_tries + 1))
