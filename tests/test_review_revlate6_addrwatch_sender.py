"""Review revlate6 F1 (of h/fixaddr): the IKE service's list of the host's addresses takes address
notices from any sender.

Since h/fixaddr the list (services/ike/host_addresses.py) applies each RTM_NEWADDR / RTM_DELADDR the
address watch (services/addrwatch.py) reads, and lists the kernel's addresses again only after a lost
or malformed notice.  The watch reads with ``recv``: a notice unicast to its port id by another
netlink socket of the namespace (one with CAP_NET_ADMIN there: the root worker of review revlate4 F1,
whose csrc/addrwatch.c socket can send) is applied as if the kernel had sent it.  Before h/fixaddr such
a datagram only made the service dump the kernel's list (the truth); now a forged DELADDR takes one of
the host's addresses out of the list (a REDIRECT or a peer's move to it is no longer refused:
address_role.refused_address) and a forged NEWADDR puts a stranger's in (a legitimate peer's move or
REDIRECT to it refused), until the next overflow."""

from __future__ import annotations

import json
import textwrap

from test_review_revperf_host_addresses import NEEDS_ROOT, run_in_own_netns

_FORGE = textwrap.dedent("""
    import asyncio, json, socket, struct, subprocess
    from tunsec.ike.endpoint import IkeEndpoint
    from tunsec.services.addrwatch import AddressWatch, dump_addresses
    from tunsec.services.ike.host_addresses import HostAddresses

    RTM_NEWADDR, RTM_DELADDR = 20, 21

    def notice(mtype, addr, prefixlen, index):
        raw = socket.inet_aton(addr)
        attrs = b"".join(struct.pack("=HH", 8, t) + raw for t in (1, 2))   # IFA_ADDRESS, IFA_LOCAL
        body = struct.pack("=BBBBI", socket.AF_INET, prefixlen, 0, 0, index) + attrs
        return struct.pack("=IHHII", 16 + len(body), mtype, 0, 0, 0) + body

    def kernel():
        return sorted({str(a.local) for a in dump_addresses()})

    async def main():
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "addr", "add", "10.66.0.1/32", "dev", "lo"], check=True)
        endpoint = IkeEndpoint([])
        hosts = HostAddresses(endpoint)
        watch = AddressWatch(lambda: None, settle=0.05, listener=hosts)
        watch.start()
        await hosts.refresh()
        out = {"before": sorted(map(str, endpoint.host_addresses)), "kernel": kernel()}
        port = watch._sock.getsockname()[0]
        lo = socket.if_nametoindex("lo")
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as forger:
            forger.bind((0, 0))
            forger.sendto(notice(RTM_DELADDR, "10.66.0.1", 32, lo), (port, 0))
            forger.sendto(notice(RTM_NEWADDR, "192.0.2.66", 32, lo), (port, 0))
        await asyncio.sleep(0.5)   # ten settle periods: a resync, had one been asked, is done too
        out["after"] = sorted(map(str, endpoint.host_addresses))
        out["kernel_after"] = kernel()
        print(json.dumps(out))
        watch.close()
        hosts.close()

    asyncio.run(main())
""")


@NEEDS_ROOT
def test_a_notice_not_from_the_kernel_does_not_change_the_hosts_addresses() -> None:
    """A DELADDR of a real address and a NEWADDR of a stranger's, unicast to the watch's port by another
    netlink socket (not the kernel: its port id is not 0): the list stays the kernel's."""
    out = json.loads(run_in_own_netns(_FORGE).splitlines()[-1])
    assert out["before"] == out["kernel"] and "10.66.0.1" in out["before"], out
    assert out["kernel_after"] == out["kernel"], out   # nothing changed on the host
    assert out["after"] == out["kernel_after"], (
        f"forged notices changed the host's address list: {out['before']} -> {out['after']} "
        f"(the kernel has {out['kernel_after']})")
