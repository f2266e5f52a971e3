"""A client and a gateway on two subnets joined by a router: each reaches the other through its
default route, as a road warrior reaches its gateway over the internet (TwoHosts' peers share one
link, whose connected route is more specific than any tunnel's route).

    client a (192.0.2.2, 2001:db8:1::2) -- router r -- gateway b (198.51.100.2, 2001:db8:2::2)
"""

from __future__ import annotations

from tunsec.bench.netns import _LIVE, Host, NetnsError, TwoHosts, _ip, netns_run


class RoutedHosts(TwoHosts):
    """TwoHosts' a (the client) and b (the gateway) on subnets of their own, a default route each
    through the router namespace r (forwarding on, both families)."""

    def __init__(self, *, prefix: str = "rt") -> None:
        super().__init__(ipv6=True, prefix=prefix)
        self.a = Host(ns=f"{prefix}-a-{self.suffix}", outer4="192.0.2.2", outer6="2001:db8:1::2", inner4="10.1.0.1",
                      inner6="fd00:1::1", inner_net4="10.1.0.0/24", inner_net6="fd00:1::/64")
        self.b = Host(ns=f"{prefix}-b-{self.suffix}", outer4="198.51.100.2", outer6="2001:db8:2::2",
                      inner4="10.2.0.1", inner6="fd00:2::1", inner_net4="10.2.0.0/24", inner_net6="fd00:2::/64")
        self.r = f"{prefix}-r-{self.suffix}"
        # the router's side of each link: its veth, its IPv4 and IPv6 address, the host on the other side
        self.links = ((f"ra{self.suffix}", "192.0.2.1", "2001:db8:1::1", self.a),
                      (f"rb{self.suffix}", "198.51.100.1", "2001:db8:2::1", self.b))

    def create(self) -> None:
        _LIVE.add(self)
        try:
            for name in (self.r, self.a.ns, self.b.ns):
                _ip("netns", "add", name)
                self._namespaces.append(name)
                self._no_dad(name)
            netns_run(self.r, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"])
            _ip("-n", self.r, "link", "set", "lo", "up")
            for veth, gw4, gw6, host in self.links:
                _ip("link", "add", veth, "netns", self.r, "type", "veth", "peer", "name", host.veth, "netns", host.ns)
                _ip("-n", self.r, "link", "set", veth, "up")
                _ip("-n", self.r, "addr", "add", f"{gw4}/24", "dev", veth)
                _ip("-n", self.r, "-6", "addr", "add", f"{gw6}/64", "dev", veth, "nodad")
                self._links_up(host)
                self._add_addresses(host)
                _ip("-n", host.ns, "route", "add", "default", "via", gw4)
                _ip("-n", host.ns, "-6", "route", "add", "default", "via", gw6)
            for dst in (self.b.outer4, self.b.outer6):
                if not self.wait_ping(self.a, dst, timeout=10.0):
                    raise NetnsError(f"{self.a.ns} cannot ping {dst} through the router")
        except BaseException:
            self.close()
            raise

    def default_routes(self, host: Host) -> str:
        """The host's default routes, both families, as ip prints them."""
        return "".join(self.run(host, ["ip", *fam, "route", "show", "default"]).stdout for fam in ([], ["-6"]))
