"""``radius { }``: the RADIUS servers a gateway relays EAP to (``remote { auth = eap-radius }``).

strongSwan configures these in strongswan.conf (``charon.plugins.eap-radius``); tunsec keeps
them in its one config file, with the same key names::

    radius {
      servers {
        primary {
          address = 10.0.0.5       # an IP address (no name to resolve at start)
          secret = "shared secret"
          auth_port = 1812
          acct_port = 1813         # RADIUS accounting (RFC 2866), with accounting = yes
          preference = 0           # the higher, the sooner tried (strongSwan's; -1000..1000)
          sockets = 1              # UDP sockets to it, 256 requests under way each (opened as needed)
        }
      }
      nas_identifier = tunsec
      accounting = no              # Accounting-Request Start/Stop for each IKE SA eap-radius authenticated
      accounting_interval = 0      # an Interim-Update every so long (30s, 5m, ...); 0: none; an
                                   # Access-Accept's Acct-Interim-Interval (60s..7d) wins
      accounting_close_on_timeout = yes  # close an IKE SA whose Start or Interim-Update no server took
      accounting_requires_vip = no # account only IKE SAs that got a virtual IP
      class_group = no             # an Access-Accept's Class attributes are the user's groups
      filter_id = no               # its Filter-Id is a group, when its Tunnel-Type is ESP
      trust_eap_identity = no      # yes: the server ties the EAP identity to the credentials, whatever
                                   # the method (PEAP, TTLS, TLS too): it proves the client is that user
      retransmit_timeout = 2.0     # seconds until the first retransmission
      retransmit_base = 1.4
      retransmit_tries = 4
      dae {                        # RADIUS Dynamic Authorization (RFC 5176), strongSwan's eap-radius.dae
        enable = no
        listen = 0.0.0.0           # the one address the listener binds (strongSwan's default)
        port = 3799
        secret = "DAE secret"      # required with enable = yes
        clients = 10.0.0.5         # who may send requests: addresses or networks, comma-separated
                                   # (default: the addresses of servers { })
        window = 300s              # how old a request's Event-Timestamp may be (10s..1h; tunsec's)
        require_event_timestamp = yes  # a request without one: NAK 402, not acted on (tunsec's)
      }
    }

A new request tries the server of the highest preference first; of equal ones, the one with
the smaller share of its ``sockets`` under way (load sharing), then of its identifiers, then
the one written first (as strongSwan, but for the tie, which it leaves to chance); one with
every identifier in use after those with one free: :mod:`tunsec.radius.health`. ``sockets``
is also how many UDP sockets (source ports, 256 identifiers each) the client may open to the
server; with all in use a request waits for one, bounded: :mod:`tunsec.radius.client`. One that
left a request unanswered is tried last for 30 s (authentication and accounting each keep
their port's health), then one request probes it.

``class_group``, ``filter_id`` (strongSwan's eap-radius keys): the groups an Access-Accept makes
the user a member of, which a connection's ``remote.groups`` requires (one of them): each Class
attribute that is a printable name shorter than 44 bytes (longer ones are left alone, as
strongSwan does: servers such as NPS put other data there), and the Filter-Id when the Accept's
Tunnel-Type says ESP. Without either, ``remote.groups`` is a config error (nothing could satisfy it).

``trust_eap_identity``: who the client is after an Access-Accept (:mod:`tunsec.radius.proven`): the
user its User-Name names, if another than the EAP identity the client gave; that identity if the
method the server ran checks a credential of it (EAP-MSCHAPv2, MD5, GTC, pwd) or this says yes;
else nobody: a tunnelled method's outer identity, or EAP-TLS's, is the client's word only.

``dae``: a Disconnect-Request (RFC 5176 §3) from one of ``clients`` whose Request Authenticator
(and Message-Authenticator, if it has one) verifies with ``secret`` deletes the IKE SAs it
names by User-Name (the EAP identity, as accounting's User-Name), Acct-Session-Id and/or
Framed-IP-Address: :mod:`tunsec.radius.dae`. ``listen`` is bound when tunsec starts, before it
drops root (a reload that changes it binds as tunsec's user: a port below 1024 fails then).

The result is a :class:`~tunsec.radius.settings.RadiusSettings`, which the IKE service hands
to its RADIUS client as it is.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tunsec.conf.errors import BadValue, ConfigIssue, show_value
from tunsec.conf.reader import SectionReader, refuse_keys
from tunsec.conf.syntax import Section
from tunsec.conf.values import float_range, int_range, parse_address, parse_bool, parse_duration, parse_port
from tunsec.ike.ike_sa_cap import UNPROVEN_NAMES_PER_SOURCE
from tunsec.ike.secret import Secret
from tunsec.policy.pools import UNPROVEN_PER_NAME, UNPROVEN_PER_SOURCE
from tunsec.policy.selector import IPAddress, IPNetwork
from tunsec.radius.settings import (
    ACCT_PORT,
    AUTH_PORT,
    DAE_PORT,
    DAE_WINDOW,
    DaeSettings,
    RadiusServer,
    RadiusSettings,
)

if TYPE_CHECKING:
    from tunsec.conf.connections import Connection

__all__ = ["radius_warnings", "read_radius", "unproven_warnings"]

_parse_timeout = float_range(0.05, 60, "a number of seconds")
_parse_base = float_range(1, 10, "a number")
_parse_tries = int_range(0, 20, "a number of retransmissions")
_preference_magnitude = int_range(0, 1000, "a preference (-1000..1000)")


def _parse_preference(text: str) -> int:
    # signed, as strongSwan's: a negative one makes a server the last resort
    value = text.strip()
    if value.startswith("-"):
        return -_preference_magnitude(value[1:])
    return _preference_magnitude(value)


# each socket is a source port of the gateway with 256 requests under way (one octet of
# identifiers): 256 of them (65536 requests under way) are beyond what one server answers
_parse_sockets = int_range(1, 256, "a number of sockets")
MAX_SERVERS = 16
MIN_INTERVAL, MAX_INTERVAL = 10, 7 * 86400   # an Interim-Update per IKE SA more often floods the server


def _parse_secret(text: str) -> Secret:
    # RFC 2865 §3 allows any length; an empty one is a mistake (the config's "key =" resets)
    value = text.encode("utf-8", "surrogateescape")
    if len(value) > 128:
        raise BadValue("at most 128 bytes")
    return Secret(value)


def _parse_nas_identifier(text: str) -> str:
    value = text.strip()
    if not 1 <= len(value.encode()) <= 253 or not value.isprintable():
        raise BadValue("1..253 printable characters (a RADIUS attribute holds 253)")
    return value


def _read_server(sub: Section, issues: list[ConfigIssue]) -> RadiusServer | None:
    r = SectionReader(sub, issues)
    address = r.require("address", parse_address)
    secret = r.require("secret", _parse_secret)
    port = r.get("auth_port", parse_port, AUTH_PORT)
    acct_port = r.get("acct_port", parse_port, ACCT_PORT)
    preference = r.get("preference", _parse_preference, 0)
    sockets = r.get("sockets", _parse_sockets, 1)
    r.finish()
    if address is None or secret is None:
        return None
    return RadiusServer(sub.name, address, secret, port, acct_port, preference, sockets)


def _parse_interval(text: str) -> int:
    seconds = parse_duration(text)
    if seconds and not MIN_INTERVAL <= seconds <= MAX_INTERVAL:
        raise BadValue(f"0 (no Interim-Update) or {MIN_INTERVAL}s..{MAX_INTERVAL // 86400}d")
    return seconds


def _parse_listen(text: str) -> IPAddress:
    # an unspecified address (strongSwan's default 0.0.0.0) binds every address of its family
    value = text.strip()
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise BadValue(f"not an IPv4 or IPv6 address: {show_value(value)} (the listener binds this "
                       "one address)") from None
    if addr.is_multicast:
        raise BadValue(f"{addr} is a multicast address")
    return addr


MAX_CLIENTS = 64


def _parse_clients(text: str) -> tuple[IPNetwork, ...]:
    nets: list[IPNetwork] = []
    for item in (i.strip() for i in text.split(",")):
        try:
            net = ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise BadValue(f"not an address or network: {show_value(item)}") from None
        if net.num_addresses > 1 and net.prefixlen == 0:
            raise BadValue(f"{net} would take requests from anyone: name the dynamic authorization clients")
        nets.append(net)
    if len(nets) > MAX_CLIENTS:
        raise BadValue(f"at most {MAX_CLIENTS} clients")
    return tuple(nets)


MIN_WINDOW, MAX_WINDOW = 10, 3600   # radius.dae.window: how old an Event-Timestamp may be


def _parse_window(text: str) -> int:
    seconds = parse_duration(text)
    if not MIN_WINDOW <= seconds <= MAX_WINDOW:
        raise BadValue(f"{MIN_WINDOW}s..{MAX_WINDOW // 3600}h")
    return seconds


def _read_dae(section: Section, issues: list[ConfigIssue], servers: list[RadiusServer]) -> DaeSettings | None:
    r = SectionReader(section, issues)
    enable = r.get("enable", parse_bool, False)
    listen = r.get("listen", _parse_listen, ipaddress.ip_address("0.0.0.0"))
    port = r.get("port", parse_port, DAE_PORT)
    secret = r.require("secret", _parse_secret) if enable else r.get("secret", _parse_secret, None)
    no_clients: tuple[IPNetwork, ...] = ()
    clients = r.get("clients", _parse_clients, no_clients)
    window = r.get("window", _parse_window, int(DAE_WINDOW))
    stamped = r.get("require_event_timestamp", parse_bool, True)
    r.finish()
    if not enable or secret is None:
        return None
    if not clients:
        # the RADIUS servers are the usual dynamic authorization clients (RFC 5176 §2)
        clients = tuple(ipaddress.ip_network(s.address) for s in servers)
    if not clients:
        r.error("clients", "no dynamic authorization client: name them in clients = ADDRESS, ... "
                "(or configure servers { }, whose addresses are taken)")
        return None
    if any(c.version != listen.version for c in clients):
        r.error("clients", f"a client of another address family than listen = {listen} could never reach it "
                "(without clients =, the addresses of servers { } are the clients): list the clients "
                "of that family only, or listen on an address of theirs")
        return None
    return DaeSettings(listen, secret, port, clients, float(window), stamped)


def read_radius(section: Section, issues: list[ConfigIssue]) -> RadiusSettings:
    r = SectionReader(section, issues)
    d = RadiusSettings()
    nas_identifier = r.get("nas_identifier", _parse_nas_identifier, d.nas_identifier)
    timeout = r.get("retransmit_timeout", _parse_timeout, d.retransmit_timeout)
    base = r.get("retransmit_base", _parse_base, d.retransmit_base)
    tries = r.get("retransmit_tries", _parse_tries, d.retransmit_tries)
    accounting = r.get("accounting", parse_bool, d.accounting)
    interval = r.get("accounting_interval", _parse_interval, d.accounting_interval)
    close_on_timeout = r.get("accounting_close_on_timeout", parse_bool, d.accounting_close_on_timeout)
    requires_vip = r.get("accounting_requires_vip", parse_bool, d.accounting_requires_vip)
    class_group = r.get("class_group", parse_bool, d.class_group)
    filter_id = r.get("filter_id", parse_bool, d.filter_id)
    trust_eap_identity = r.get("trust_eap_identity", parse_bool, d.trust_eap_identity)
    servers_section = r.subsection("servers")
    dae_section = r.subsection("dae")
    r.finish()
    servers: list[RadiusServer] = []
    if servers_section is None:
        r.error("servers", "required section is missing: servers { NAME { address = ..., secret = ... } }")
    else:
        refuse_keys(servers_section, issues,
                    "servers takes one section per server ('NAME { address = ... }'), not keys")
        for sub in servers_section.sections.values():
            server = _read_server(sub, issues)
            if server is not None:
                servers.append(server)
        if len(servers_section.sections) > MAX_SERVERS:
            issues.append(ConfigIssue(servers_section.file, servers_section.line, servers_section.path,
                                      f"at most {MAX_SERVERS} servers"))
        elif not servers_section.sections:
            issues.append(ConfigIssue(servers_section.file, servers_section.line, servers_section.path,
                                      "no server: add NAME { address = ..., secret = ... }"))
    if accounting and (servers_section is None or not servers_section.sections):
        r.error("accounting", "accounting = yes sends Accounting-Requests to the servers of servers { }, and "
                "none is configured: add NAME { address = ..., secret = ... } there")
    if interval and not accounting and "accounting_interval" not in r.failed:
        r.error("accounting_interval", "Interim-Updates are part of accounting: set accounting = yes too "
                "(or remove accounting_interval)")
    dae = None if dae_section is None else _read_dae(dae_section, issues, servers)
    return RadiusSettings(tuple(servers), nas_identifier, timeout, base, tries, accounting, interval,
                          close_on_timeout, requires_vip, class_group=class_group, filter_id=filter_id,
                          trust_eap_identity=trust_eap_identity, dae=dae)


def radius_warnings(section: Section, settings: RadiusSettings, half_open_timeout: float) -> list[ConfigIssue]:
    """A round that waits for every server longer than a client may stay half-open: the IKE SA
    is gone before the gateway gives up, so the client hears no AUTHENTICATION_FAILED."""
    per_server = settings.round_seconds()
    total = per_server * len(settings.servers)
    if total < half_open_timeout:
        return []
    return [ConfigIssue(section.file, section.line, section.path,
                        f"when no server answers, a round waits {total:.1f} s ({len(settings.servers)} server(s) x "
                        f"{per_server:.1f} s), not less than tunsec.half_open_timeout ({half_open_timeout:g} s): "
                        "the client's IKE SA is closed first and gets no AUTHENTICATION_FAILED; lower "
                        "retransmit_timeout/retransmit_tries or raise half_open_timeout")]


def unproven_warnings(connections: Sequence[Connection], settings: RadiusSettings) -> list[ConfigIssue]:
    """eap-radius connections whose clients may be unproven (trust_eap_identity off): what bounds them."""
    if settings.trust_eap_identity:
        return []
    return [ConfigIssue(c.file, c.line, f"connections.{c.ike.name}.remote.auth",
                        "auth = eap-radius without radius.trust_eap_identity: a client whose Access-Accept names "
                        "no user (PEAP or TTLS, unless the server copies the inner User-Name into it) is unproven "
                        f"and limited by its name and source address (an IPv6 one: its /64): {c.ike.max_ike_sas} "
                        f"IKE SAs per name from one source, {c.ike.max_ike_sas * UNPROVEN_NAMES_PER_SOURCE} per "
                        f"source, {UNPROVEN_PER_NAME} virtual IPs per name from one source and "
                        f"{UNPROVEN_PER_SOURCE} per source; clients behind one NAT share a source. Have the "
                        "server name the user (docs/radius.md), or set trust_eap_identity = yes if it ties "
                        "the EAP identity to the credentials")
            for c in connections if c.ike.remote.method == "eap-radius"]
