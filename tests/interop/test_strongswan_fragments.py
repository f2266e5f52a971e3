"""IKE fragmentation (RFC 7383) against strongSwan's charon over a 1280-byte path.

Both sides authenticate with RSA certificates under three intermediate CAs (each
IKE_AUTH carries several kilobytes of certificates). The veth MTU is 1280 on both
ends and neither namespace reassembles IP fragments, so a message that does not fit
one 1280-byte datagram arrives only as IKE fragments. tunsec is the initiator and
the responder; the tunnel must come up and carry pings, charon's log must show that
it split its IKE_AUTH and reassembled tunsec's, and tunsec's log the same.

Over IPv4 and over IPv6 outer addresses. 1280 is IPv6's minimum MTU, so there a
full-size datagram leaves no room at all: the IPv6 case also drops every packet
with a Fragment header before the kernel's defragmentation sees it (nftables,
``exthdr frag exists``, counted) and checks that the counter stayed at zero, so
IPv6 fragmentation cannot be what makes it pass.

And a road warrior (issue 9): a charon client with EAP-MSCHAPv2 and a virtual IP against the
tunsec gateway, whose chain arrives in IKE fragments before the EAP rounds.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from ike_peers import CONN, Charon, Conn, TunsecIke, ident, ping_both_ways, requires_strongswan
from roadwarrior import GatewayConn, Pool, RoadWarriorConn

from tunsec.bench.netns import Host, TwoHosts, wait_until
from tunsec.ike.testing import Issued, make_ca, make_cert

pytestmark = [
    pytest.mark.interop,
    requires_strongswan,
]

PATH_MTU = 1280
# no memory for IP reassembly in either namespace: every IP fragment is dropped (and counted)
_NO_IP_REASSEMBLY = ["sysctl", "-q", "-w", "net.ipv4.ipfrag_low_thresh=0", "net.ipv4.ipfrag_high_thresh=0"]
_NO_IPV6_REASSEMBLY = ["sysctl", "-q", "-w", "net.ipv6.ip6frag_low_thresh=0", "net.ipv6.ip6frag_high_thresh=0"]
# every IPv6 packet with a Fragment header, dropped and counted before defragmentation (priority -400)
_NFT_TABLE = "tunsec_fragtest"
_NFT_DROP_V6_FRAGMENTS = [
    ["nft", "add", "table", "inet", _NFT_TABLE],
    ["nft", "add", "chain", "inet", _NFT_TABLE, "pre", "{ type filter hook prerouting priority -500 ; }"],
    ["nft", "add", "rule", "inet", _NFT_TABLE, "pre", "exthdr", "frag", "exists", "counter", "drop"],
]


def _ip_counters(topo: TwoHosts, host: Host) -> dict[str, int]:
    """The Ip: line of /proc/net/snmp in the host's namespace."""
    names, values = [ln.split()[1:] for ln in topo.run(host, ["cat", "/proc/net/snmp"]).stdout.splitlines()
                     if ln.startswith("Ip:")][:2]
    return dict(zip(names, map(int, values), strict=True))


def _ip6_counters(topo: TwoHosts, host: Host) -> dict[str, int]:
    """/proc/net/snmp6 in the host's namespace (one "name value" per line)."""
    lines = topo.run(host, ["cat", "/proc/net/snmp6"]).stdout.splitlines()
    return {name: int(value) for name, value in (ln.split() for ln in lines if len(ln.split()) == 2)}


def _v6_fragments_dropped(topo: TwoHosts, host: Host) -> int:
    out = topo.run(host, ["nft", "list", "chain", "inet", _NFT_TABLE, "pre"]).stdout
    (packets,) = re.findall(r"counter packets (\d+) bytes", out)
    return int(packets)


@dataclass(frozen=True)
class Conn6(Conn):
    """The same connection with the IPv6 outer addresses (IKE and ESP over IPv6)."""

    def swanctl_text(self) -> str:
        text = super().swanctl_text()
        return (text.replace(f"local_addrs = {self.me.outer4}\n", f"local_addrs = {self.me.outer6}\n")
                .replace(f"remote_addrs = {self.peer.outer4}\n", f"remote_addrs = {self.peer.outer6}\n"))


@pytest.fixture(params=[4, 6], ids=["ipv4", "ipv6"])
def topo(request: pytest.FixtureRequest) -> Iterator[TwoHosts]:
    with TwoHosts(ipv6=request.param == 6, veth_mtu=PATH_MTU) as t:
        for host in (t.a, t.b):
            t.run(host, _NO_IP_REASSEMBLY)
            if t.ipv6:
                t.run(host, _NO_IPV6_REASSEMBLY)
                for argv in _NFT_DROP_V6_FRAGMENTS:
                    t.run(host, argv)
        yield t


@pytest.fixture(scope="module")
def chain() -> tuple[Issued, tuple[Issued, ...]]:
    """An RSA root and three intermediate CAs (nearest the root first)."""
    root = make_ca("tunsec frag test root", "rsa")
    ims = [make_ca("tunsec frag intermediate 1", "rsa", issuer=root)]
    for n in (2, 3):
        ims.append(make_ca(f"tunsec frag intermediate {n}", "rsa", issuer=ims[-1]))
    return root, tuple(ims)


def _pem(issued: Issued) -> bytes:
    return issued.cert.public_bytes(serialization.Encoding.PEM)


def _install(confdir: Path, host: Host, chain: tuple[Issued, tuple[Issued, ...]]) -> str:
    """The root and intermediates in x509ca/, the host's certificate and key; the cert's file name.

    The end-entity certificate carries a long subjectAltName list, so that even a peer
    that sent no intermediates would need more than one datagram for its IKE_AUTH."""
    root, ims = chain
    name = ident(host)
    # charon and tunsec check validity against the real clock, so the leaf starts yesterday
    # rather than at testing.EPOCH, whose default 365 days run out on 2027-01-01.
    yesterday = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    ee = make_cert(ims[-1], name, [name, *(f"pad{i}.{name}" for i in range(40))], kind="rsa",
                   not_before=yesterday)
    for sub in ("x509", "x509ca", "private"):
        (confdir / sub).mkdir(parents=True, exist_ok=True)
    (confdir / "x509ca" / "root.crt").write_bytes(_pem(root))
    for n, im in enumerate(ims, 1):
        (confdir / "x509ca" / f"intermediate{n}.crt").write_bytes(_pem(im))
    (confdir / "x509" / f"{name}.crt").write_bytes(_pem(ee))
    key = confdir / "private" / f"{name}.key"
    key.write_bytes(ee.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                         serialization.NoEncryption()))
    key.chmod(0o600)
    return f"{name}.crt"


@pytest.mark.parametrize("tunsec_initiates", [True, False], ids=["tunsec-initiator", "tunsec-responder"])
def test_certificate_chains_over_a_1280_path(
    topo: TwoHosts, chain: tuple[Issued, tuple[Issued, ...]], tunsec_initiates: bool
) -> None:
    extra = "    fragmentation = yes\n    send_cert = always\n"
    conn = Conn6 if topo.ipv6 else Conn
    tunsec = TunsecIke(topo, conn(topo.a, topo.b, auth="pubkey", extra_conn=extra,
                                  start_action="start" if tunsec_initiates else "none"))
    charon = Charon(topo, conn(topo.b, topo.a, auth="pubkey", extra_conn=extra))
    tunsec.write(cert=_install(tunsec.dir, topo.a, chain))
    charon.write(cert=_install(charon.inst.dir, topo.b, chain))
    charon.start()
    tunsec.start()
    if not tunsec_initiates:
        r = charon.initiate()
        assert r.returncode == 0, f"swanctl --initiate: {r.stdout[-2000:]}{r.stderr}\ntunsec:\n{tunsec.log_tail()}"
    sa = tunsec.wait_established()
    assert sa["initiator"] is tunsec_initiates
    outer = topo.b.outer6 if topo.ipv6 else topo.b.outer4
    assert sa["remote"].startswith(f"{outer}["), sa  # IKE ran over the family under test
    assert wait_until(lambda: charon.sas().get(CONN, {}).get("state") == "ESTABLISHED", 10), charon.list_sas()
    ping_both_ways(topo)
    # charon split its IKE_AUTH and put tunsec's back together; tunsec did the same
    charon.wait_log(r"splitting IKE message \(\d+ bytes\) into \d+ fragments")
    charon.wait_log(r"reassembled fragmented IKE message \(\d+ bytes\)")
    tunsec.wait_log(r"splitting IKE message 1 into \d+ fragments")
    tunsec.wait_log(r"reassembled message 1 from \d+ fragments")
    counted = tunsec.status()["ike_fragments"]
    assert counted["messages_fragmented"] == counted["messages_reassembled"] == 1
    assert counted["fragments_dropped"] == 0
    # and nothing arrived as IP fragments (they would have been dropped and counted)
    for host in (topo.a, topo.b):
        assert _ip_counters(topo, host)["ReasmReqds"] == 0
        if topo.ipv6:
            assert _v6_fragments_dropped(topo, host) == 0
            assert _ip6_counters(topo, host)["Ip6ReasmReqds"] == 0


USER, PASSWORD = "alice", "Alice-Fragments-pw-2"
VIP = "10.3.0.1"


@pytest.fixture
def topo4() -> Iterator[TwoHosts]:
    with TwoHosts(veth_mtu=PATH_MTU) as t:
        for host in (t.a, t.b):
            t.run(host, _NO_IP_REASSEMBLY)
        yield t


def test_road_warrior_with_eap_and_a_pool_over_a_1280_path(
        topo4: TwoHosts, chain: tuple[Issued, tuple[Issued, ...]]) -> None:
    """Issue 9's road warrior over a 1280 path: a charon client (EAP-MSCHAPv2, ``vips = 0.0.0.0``)
    against the tunsec gateway, whose certificate chain makes its first IKE_AUTH response several
    kilobytes: it arrives only as IKE fragments, and the EAP rounds and the pool's address follow."""
    topo = topo4
    frag = "    fragmentation = yes\n    send_cert = always\n"
    gateway = TunsecIke(topo, GatewayConn(topo.a, topo.b, method="eap-mschapv2", users=((USER, PASSWORD),),
                                          pools=(Pool("rw4", "10.3.0.0/24"),), extra_conn=frag))
    client = Charon(topo, RoadWarriorConn(topo.b, topo.a, method="eap-mschapv2", eap_user=USER, psk=PASSWORD,
                                          vips=("0.0.0.0",), extra_conn=frag))
    gateway.write(cert=_install(gateway.dir, topo.a, chain))
    _install(client.inst.dir, topo.b, chain)      # the CAs to check the gateway with
    client.write()
    client.start()
    gateway.start()
    r = client.initiate()
    assert r.returncode == 0, f"swanctl --initiate: {r.stdout[-2000:]}{r.stderr}\ntunsec:\n{gateway.log_tail()}"
    sa = gateway.wait_established()
    assert sa["remote_id"] == USER and sa["remote_vips"] == [VIP]
    assert topo.wait_ping(topo.b, topo.a.inner4, src=VIP, timeout=10)
    gateway.wait_log(r"splitting IKE message 1 into \d+ fragments")
    client.wait_log(r"reassembled fragmented IKE message \(\d+ bytes\)")
    client.wait_log(r"EAP method EAP_MSCHAPV2 succeeded, MSK established")
    assert gateway.status()["ike_fragments"]["fragments_dropped"] == 0
    for host in (topo.a, topo.b):
        assert _ip_counters(topo, host)["ReasmReqds"] == 0
