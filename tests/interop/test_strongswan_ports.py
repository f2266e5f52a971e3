"""IKE on custom ports against strongSwan's charon (kernel-libipsec, ``encap = yes``): charon's
sockets on charon.port 5500 and charon.port_nat_t 5501, tunsec's IKE on local_port 1500.

What strongSwan does there, and tunsec must match: IKE between two ports neither of which is
500 carries the non-ESP marker from IKE_SA_INIT on (sender.c/receiver.c); the initiator floats
after IKE_SA_INIT as ike_sa.c's float_ports: its own port to its NAT-T socket, the peer's to 4500
only if either end was on 500, else the peer stays on its custom port; the responder follows,
and ESP in UDP goes between the ports IKE ended up on.

- tunsec initiates: it moves to 4500 (the worker's ESP socket), charon stays on 5500: IKE and
  ESP both ways work.
- charon initiates: it moves to 5501 and keeps tunsec's 1500, so its ESP arrives on tunsec's IKE
  port 1500, which tunsec does not take ESP on (only on 4500): the IKE SA comes up, the ESP is a
  counted drop (``ike_drops.esp_on_ike_port``) with a warning saying why (the limitation
  docs/configuration.md names).
- charon with ``remote_port = 4500`` (its own port 500) initiates: its IKE_SA_INIT leaves from 500
  to tunsec's 4500 without the marker (strongSwan marks only when neither port is 500); tunsec's
  worker takes it as IKE and the answer goes back from 4500 to 500, unmarked; and tunsec with
  ``remote_port = 4500`` does the same towards charon.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from ike_peers import CONN, Charon, PortConn, TunsecIke, ping_both_ways, requires_strongswan

from tunsec.bench.netns import TwoHosts, wait_until

pytestmark = [pytest.mark.interop, requires_strongswan]

TUNSEC_PORT = 1500
CHARON_PORT, CHARON_NATT = 5500, 5501


@pytest.fixture
def topo() -> Iterator[TwoHosts]:
    with TwoHosts(ipv6=False) as t:
        yield t


def peers(topo: TwoHosts, tunsec_initiates: bool) -> tuple[TunsecIke, Charon]:
    start = "start" if tunsec_initiates else "none"
    tunsec = TunsecIke(topo, PortConn(topo.a, topo.b, start_action=start, local_port=TUNSEC_PORT,
                                      remote_port=CHARON_PORT))
    charon = Charon(topo, PortConn(topo.b, topo.a, local_port=CHARON_PORT, remote_port=TUNSEC_PORT,
                                   charon_ports=(CHARON_PORT, CHARON_NATT)))
    charon.start()
    tunsec.start()
    return tunsec, charon


def charon_sa(charon: Charon) -> dict[str, str]:
    assert wait_until(lambda: charon.sas().get(CONN, {}).get("state") == "ESTABLISHED", 15), charon.list_sas()
    sa: dict[str, str] = charon.sas()[CONN]
    return sa


def test_tunsec_initiates_from_a_custom_port_to_charon_on_a_custom_port(topo: TwoHosts) -> None:
    tunsec, charon = peers(topo, tunsec_initiates=True)
    sa = tunsec.wait_established()
    theirs = charon_sa(charon)
    # tunsec moved to 4500, charon stayed on its port (it was not 500 and neither was ours)
    assert (theirs["local-port"], theirs["remote-port"]) == (str(CHARON_PORT), "4500")
    assert sa["remote"] == f"{topo.b.outer4}[{CHARON_PORT}]"
    (child,) = sa["children"]
    assert child["remote"] == f"{topo.b.outer4}[{CHARON_PORT}]"
    ping_both_ways(topo)
    # charon parsed every IKE datagram tunsec sent (a missing non-ESP marker reads as ESP there)
    assert "invalid" not in charon.log_text().lower() and "parsing" not in charon.log_text()
    assert tunsec.status()["ike_drops"]["esp_on_ike_port"] == 0


def test_charon_initiating_from_a_custom_port_sends_esp_to_tunsecs_ike_port(topo: TwoHosts) -> None:
    tunsec, charon = peers(topo, tunsec_initiates=False)
    r = charon.initiate()
    assert r.returncode == 0, f"swanctl --initiate: {r.stdout[-2000:]}{r.stderr}\ntunsec:\n{tunsec.log_tail()}"
    sa = tunsec.wait_established()
    theirs = charon_sa(charon)
    # charon floated its own side to its NAT-T socket and kept tunsec's custom port
    assert (theirs["local-port"], theirs["remote-port"]) == (str(CHARON_NATT), str(TUNSEC_PORT))
    assert sa["remote"] == f"{topo.b.outer4}[{CHARON_NATT}]"
    topo.ping(topo.b, topo.a.inner4, count=2, src=topo.b.inner4)     # charon's ESP goes to port 1500
    assert wait_until(lambda: tunsec.status()["ike_drops"]["esp_on_ike_port"] >= 1, 10), tunsec.log_tail()
    tunsec.wait_log(rf"ESP in UDP from {topo.b.outer4} port {CHARON_NATT} arrived on IKE port {TUNSEC_PORT}")


def test_charon_with_remote_port_4500_starts_unmarked_from_500(topo: TwoHosts) -> None:
    # charon's IKE_SA_INIT leaves from 500 to tunsec's 4500 without the non-ESP marker (its
    # sender marks only when neither port is 500): tunsec's worker must take it as IKE, not ESP,
    # and the answer must go back to 500 unmarked, as charon's receiver expects there
    tunsec = TunsecIke(topo, PortConn(topo.a, topo.b, start_action="none"))
    charon = Charon(topo, PortConn(topo.b, topo.a, local_port=500, remote_port=4500))
    charon.start()
    tunsec.start()
    r = charon.initiate()
    assert r.returncode == 0, f"swanctl --initiate: {r.stdout[-2000:]}{r.stderr}\ntunsec:\n{tunsec.log_tail()}"
    log = charon.log_text()
    assert f"sending packet: from {topo.b.outer4}[500] to {topo.a.outer4}[4500]" in log, log[-3000:]
    assert f"received packet: from {topo.a.outer4}[4500] to {topo.b.outer4}[500]" in log, log[-3000:]
    sa = tunsec.wait_established()
    theirs = charon_sa(charon)
    # after IKE_SA_INIT charon floated its own side to 4500 (tunsec's NAT detection says "NAT")
    assert (theirs["local-port"], theirs["remote-port"]) == ("4500", "4500")
    assert sa["remote"] == f"{topo.b.outer4}[4500]"
    ping_both_ways(topo)
    assert "invalid" not in log.lower() and "parsing" not in log


def test_tunsec_with_remote_port_4500_starts_unmarked_from_500(topo: TwoHosts) -> None:
    # the other way round: tunsec's IKE_SA_INIT leaves its port-500 socket for charon's 4500
    # unmarked, charon answers 4500 -> 500 unmarked, and both float to 4500
    tunsec = TunsecIke(topo, PortConn(topo.a, topo.b, start_action="start", remote_port=4500))
    charon = Charon(topo, PortConn(topo.b, topo.a))
    charon.start()
    tunsec.start()
    sa = tunsec.wait_established()
    theirs = charon_sa(charon)
    log = charon.log_text()
    assert f"received packet: from {topo.a.outer4}[500] to {topo.b.outer4}[4500]" in log, log[-3000:]
    assert f"sending packet: from {topo.b.outer4}[4500] to {topo.a.outer4}[500]" in log, log[-3000:]
    assert (theirs["local-port"], theirs["remote-port"]) == ("4500", "4500")
    assert sa["remote"] == f"{topo.b.outer4}[4500]"
    ping_both_ways(topo)
    assert "invalid" not in log.lower() and "parsing" not in log
