"""Remote-access connections for the interop tests: a gateway and its road warriors.

:class:`GatewayConn` and :class:`RoadWarriorConn` are :class:`ike_peers.Conn` s (the same
swanctl.conf text serves tunsec and charon, on either side) with what remote access adds:
the way the client authenticates (``method``: psk, eap-mschapv2, eap-tls, or eap-radius at
the gateway), address pools and virtual IPs, a gateway for any client address (and, with a
PSK, any identity), a client with no fixed address (for MOBIKE and redirects), MOBIKE,
fragmentation and ports. With an EAP method both sides use certificates (``auth = pubkey``
for :class:`~ike_peers.TunsecIke` and :class:`~ike_peers.Charon` to install them): the
gateway proves itself with its own, the client checks it with the CA (and, with EAP-TLS,
proves itself with its own), and charon loads the EAP plugins the method needs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ike_peers import CONN, Conn

from tunsec.bench.netns import StarHosts
from tunsec.bench.systems.strongswan import PLUGINS, Instance, strongswan_conf

# charon's plugins for each method, on top of ike_peers' (MD4 and DES for MSCHAPv2 come from
# OpenSSL's legacy provider, which the openssl plugin loads). charon as an eap-radius gateway
# would also need its RADIUS server in strongswan.conf: no test has it, nothing here writes it.
EAP_PLUGINS = {
    "psk": "",
    "eap-mschapv2": "eap-mschapv2 eap-identity",
    "eap-tls": "eap-identity eap-tls",
    "eap-radius": "eap-radius eap-identity",
    "eap-ttls": "eap-ttls eap-mschapv2 eap-md5 eap-identity",   # a client of a RADIUS server's EAP-TTLS
}
SITES = "10.2.0.0/16"                   # StarHosts' sites: 10.2.1.0/24 (A) and 10.2.2.0/24 (B)


@dataclass(frozen=True)
class Pool:
    """An address pool of the gateway (swanctl.conf ``pools``)."""

    name: str
    addrs: str                          # a network or a range
    dns: str = ""                       # the DNS server it hands out with an address

    def text(self) -> str:
        dns = f"    dns = {self.dns}\n" if self.dns else ""
        return f"  {self.name} {{\n    addrs = {self.addrs}\n{dns}  }}\n"


@dataclass(frozen=True)
class RemoteAccessConn(Conn):
    """What both ends of a remote-access connection have."""

    method: str = "psk"                 # how the client authenticates: psk | eap-mschapv2 | eap-tls (| eap-radius)
    gateway_id: str = ""                # the gateway's identity (default: ident() of its host)
    fixed_address: bool = True          # local_addrs = my outer IPv4 address (False: whatever I have)
    mobike: bool | None = None          # mobike = yes/no (None: the default, yes)
    fragmentation: str = ""             # fragmentation = yes/accept/force/no
    local_port: int = 0                 # 0: the default (500, then 4500)
    remote_port: int = 0

    def __post_init__(self) -> None:
        assert self.method in EAP_PLUGINS, f"method {self.method!r}: one of {sorted(EAP_PLUGINS)}"
        if self.method != "psk":        # see the module's docstring
            object.__setattr__(self, "auth", "pubkey")

    def remote_addrs(self) -> str:
        raise NotImplementedError

    def more_conn_lines(self) -> str:
        return ""

    def conn_lines(self) -> str:
        local = f"    local_addrs = {self.me.outer4}\n" if self.fixed_address else ""
        lines = [f"{key} = {value}" for key, value in (
            ("mobike", {None: "", True: "yes", False: "no"}[self.mobike]), ("fragmentation", self.fragmentation),
            ("local_port", self.local_port or ""), ("remote_port", self.remote_port or "")) if value]
        return (f"{local}    remote_addrs = {self.remote_addrs()}\n    encap = yes\n"
                f"    proposals = {self.proposals}\n{self.more_conn_lines()}"
                + "".join(f"    {line}\n" for line in lines))

    def charon_conf(self, inst: Instance) -> str:
        plugins = EAP_PLUGINS[self.method]
        conf = strongswan_conf(inst, level=2, extra=self.charon_extra())
        return conf.replace(f"load = {PLUGINS}", f"load = {PLUGINS} {plugins}") if plugins else conf

    def charon_extra(self) -> str:
        return ""


@dataclass(frozen=True)
class GatewayConn(RemoteAccessConn):
    """The gateway: any client address; local_ts my inner IPv4 network, remote_ts ``dynamic``
    with pools (the client's virtual IPs) or else the peer's inner network.

    The peer host only names the client's identity and network where the connection pins
    them (a PSK gateway without ``any_peer``, remote_ts without pools)."""

    pools: tuple[Pool, ...] = ()
    any_peer: bool = False              # psk: any client identity (the secret is keyed by mine only)
    users: tuple[tuple[str, str], ...] = ()     # eap-mschapv2: (name, password) the gateway checks itself
    radius_secret: str = ""             # eap-radius: the secret of the RADIUS server on 127.0.0.1
    radius_port: int = 1812
    accounting: bool = False            # eap-radius: RADIUS accounting to the server's port 1813
    dae: str = ""                       # eap-radius: the lines of radius { dae { } } (RFC 5176)
    # eap-radius: instead of ``tun``, one connection per (group, pool), ``tun-GROUP``, alike but for
    # remote.groups and pools (strongSwan's group selection), with radius { class_group = yes }
    group_pools: tuple[tuple[str, Pool], ...] = ()
    group: str = ""                     # remote.groups of this connection (set by connections())

    def connections(self) -> str:
        if not self.group_pools:
            return super().connections()
        return "".join(replace(self, pools=(pool,), group_pools=(), group=group).connection(f"{CONN}-{group}")
                       for group, pool in self.group_pools)

    def sections(self) -> str:
        acct_port = "      acct_port = 1813\n" if self.accounting else ""
        accounting = "  accounting = yes\n" if self.accounting else ""
        accounting += "  class_group = yes\n" if self.group_pools else ""
        dae = f"  dae {{\n{self.dae}  }}\n" if self.dae else ""
        radius = f"""radius {{
  servers {{
    fr {{
      address = 127.0.0.1
      auth_port = {self.radius_port}
      secret = "{self.radius_secret}"
{acct_port}    }}
  }}
  retransmit_timeout = 0.5
  retransmit_base = 1.0
  retransmit_tries = 1
{accounting}{dae}}}
""" if self.method == "eap-radius" else ""       # one retransmission after 0.5 s: a silent server fails fast
        every = (*self.pools, *(p for _, p in self.group_pools))
        pools = f"pools {{\n{''.join(p.text() for p in every)}}}\n" if every else ""
        return radius + pools

    def remote_addrs(self) -> str:
        return "%any"

    def more_conn_lines(self) -> str:
        return f"    pools = {', '.join(p.name for p in self.pools)}\n" if self.pools else ""

    def my_id(self) -> str:
        return self.gateway_id or super().my_id()

    def remote_lines(self) -> str:
        if self.method == "psk":
            return "      auth = psk\n" if self.any_peer else super().remote_lines()
        cacerts = "      cacerts = ca.crt\n" if self.method == "eap-tls" else ""
        groups = f"      groups = {self.group}\n" if self.group else ""
        return f"      auth = {self.method}\n      eap_id = %any\n{cacerts}{groups}"

    def traffic_selectors(self) -> tuple[str, str]:
        local_ts, remote_ts = super().traffic_selectors()
        return local_ts, self.remote_ts or ("dynamic" if self.pools else remote_ts)

    def secrets(self) -> str:
        if self.method == "psk" and self.any_peer:
            keys = [f'  ike-gw {{\n    id-gw = {self.my_id()}\n    secret = "{self.psk}"\n  }}\n']
        elif self.method == "psk":
            return super().secrets()
        else:
            keys = [f'  eap-{name} {{\n    id = {name}\n    secret = "{pw}"\n  }}\n' for name, pw in self.users]
        return f"secrets {{\n{''.join(keys)}}}\n" if keys else ""


@dataclass(frozen=True)
class RoadWarriorConn(RemoteAccessConn):
    """The road warrior, to the peer's outer IPv4 address: with ``vips`` local_ts is ``dynamic``
    (its virtual IPs), else its inner IPv4 network; remote_ts the gateway's inner IPv4 network."""

    vips: tuple[str, ...] = ()          # the addresses it asks for: 0.0.0.0 (any IPv4), :: (any IPv6)
    eap_user: str = ""                  # eap-mschapv2, eap-ttls: the EAP identity, whose password is ``psk``

    def remote_addrs(self) -> str:
        return self.peer.outer4

    def more_conn_lines(self) -> str:
        return f"    vips = {', '.join(self.vips)}\n" if self.vips else ""

    def peer_id(self) -> str:
        return self.gateway_id or super().peer_id()

    def local_lines(self) -> str:
        if self.method == "psk":
            return super().local_lines()
        user = f"      eap_id = {self.eap_user}\n" if self.method in ("eap-mschapv2", "eap-ttls") else ""
        certs = f"      certs = {self.cert}\n" if self.method == "eap-tls" else ""
        return f"      auth = {self.method}\n      id = {self.my_id()}\n{user}{certs}"

    def remote_lines(self) -> str:
        auth = "psk" if self.method == "psk" else "pubkey"
        return f"      auth = {auth}\n      id = {self.peer_id()}\n"

    def traffic_selectors(self) -> tuple[str, str]:
        local_ts, remote_ts = super().traffic_selectors()
        return self.local_ts or ("dynamic" if self.vips else local_ts), remote_ts

    def secrets(self) -> str:
        if self.method == "psk":
            return super().secrets()
        if self.method in ("eap-mschapv2", "eap-ttls"):
            return f'secrets {{\n  eap-user {{\n    id = {self.eap_user}\n    secret = "{self.psk}"\n  }}\n}}\n'
        return ""

    def charon_extra(self) -> str:
        # charon puts its virtual IPs on its TUN, as a real road warrior does
        return "  install_virtual_ip = yes\n" if self.vips else ""

    def charon_conf(self, inst: Instance) -> str:
        conf = super().charon_conf(inst)
        # the TLS handshake in charon's log ("negotiated TLS 1.2")
        return conf.replace("      esp = 1\n", "      esp = 1\n      tls = 2\n") if self.method == "eap-tls" else conf


def hub_gateway(star: StarHosts, **changes: Any) -> GatewayConn:
    """StarHosts' gateway G for both sites: on every address of G, any site with the PSK and
    G's identity, the sites' networks (each site's child narrowed to its own)."""
    return GatewayConn(star.g, star.a, fixed_address=False, any_peer=True, remote_ts=SITES, **changes)
