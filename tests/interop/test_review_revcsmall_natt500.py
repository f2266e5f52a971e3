"""Review revcsmall F1: a client whose port 4500 a NAT maps to public port 500, which starts an IKE
SA from its port 4500 (strongSwan's reauthentication does: the new IKE SA keeps the old one's ports;
here charon's ``local_port = 4500``, ``remote_port = 4500``): its IKE_SA_INIT request is marked,
as strongSwan's sender marks whenever neither port is 500, and arrives at tunsec's 4500 from port
500.  h/fixcsmall's ``constants.natt_marks`` answers every IKE_SA_INIT response to port 500
unmarked, a rule of the message alone, so the answer reaches the client's 4500 (after the NAT)
without the marker; charon's receiver there takes only marked IKE and drops it: the IKE SA never
comes up (charon retransmits until it gives up).

Real parts: charon (kernel-libipsec) in namespace B, an iptables SNAT rule in B that maps its UDP
source port 4500 to 500 (conntrack translates the answers back), tunsec in namespace A."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from ike_peers import CONN, Charon, PortConn, TunsecIke, requires_strongswan

from tunsec.bench.netns import TwoHosts, wait_until

pytestmark = [pytest.mark.interop, requires_strongswan]


@pytest.fixture
def topo() -> Iterator[TwoHosts]:
    with TwoHosts(ipv6=False, prefix="revcsmall") as t:
        yield t


def behind_nat(topo: TwoHosts, port: int, public_port: int) -> tuple[TunsecIke, Charon, str]:
    """charon in B with ``local_port = port``, ``remote_port = 4500``, behind a NAT (an iptables SNAT
    in B) that sends its UDP port ``port`` out as ``public_port``; tunsec in A.  Both started, charon
    told to initiate; its log after it."""
    r = topo.run(topo.b.ns, ["iptables", "-t", "nat", "-A", "POSTROUTING", "-p", "udp", "--sport", str(port),
                             "-j", "SNAT", "--to-source", f"{topo.b.outer4}:{public_port}"])
    assert r.returncode == 0, r.stderr
    tunsec = TunsecIke(topo, PortConn(topo.a, topo.b, start_action="none"))
    charon = Charon(topo, PortConn(topo.b, topo.a, local_port=port, remote_port=4500))
    charon.start()
    tunsec.start()
    charon.initiate(timeout=10)
    log = charon.log_text()
    assert f"sending packet: from {topo.b.outer4}[{port}] to {topo.a.outer4}[4500]" in log, log[-3000:]
    return tunsec, charon, log


def test_a_marked_ike_sa_init_from_public_port_500_is_answered_marked(topo: TwoHosts) -> None:
    # the NAT in front of the client: its port 4500 leaves as public port 500
    tunsec, charon, log = behind_nat(topo, 4500, 500)
    # the request left charon's 4500 marked and reached tunsec from port 500 (tunsec answered it)
    assert wait_until(lambda: any(sa.get("remote") == f"{topo.b.outer4}[500]" for sa in tunsec.ike_sas()), 10), \
        tunsec.log_tail()
    # the answer must reach charon as IKE: marked, as its port 4500 (behind the NAT) takes IKE only so
    assert f"received packet: from {topo.a.outer4}[4500] to {topo.b.outer4}[4500]" in log, \
        f"charon never took tunsec's IKE_SA_INIT answer:\n{log[-3000:]}\ntunsec:\n{tunsec.log_tail()}"
    assert wait_until(lambda: charon.sas().get(CONN, {}).get("state") == "ESTABLISHED", 15), charon.list_sas()


def test_remote_port_4500_behind_a_nat_that_changes_port_500_connects(topo: TwoHosts) -> None:
    """Review revcsmall F3: docs/configuration.md and "What remains" say a client behind a NAT that
    cannot start on port 500 (different public IPs for its 500 and 4500, some carrier-grade NATs)
    connects with ``remote_port = 4500``.  Such a client's charon sends its IKE_SA_INIT from its
    port 500 to tunsec's 4500 unmarked (strongSwan marks only when neither port is 500); a NAT that
    does not keep port 500 (most carrier-grade NATs: many clients share the address) makes it arrive
    from another port, where ts_inbound_locked lets only the marker decide: read as ESP (its SPI
    unknown), dropped, never answered."""
    tunsec, _, log = behind_nat(topo, 500, 40500)
    assert f"received packet: from {topo.a.outer4}[4500] to {topo.b.outer4}[500]" in log, \
        f"tunsec never answered the IKE_SA_INIT:\n{log[-3000:]}\ntunsec:\n{tunsec.log_tail()}"
    sa = tunsec.wait_established()
    assert sa["remote"].startswith(f"{topo.b.outer4}["), sa
