"""rand_time and over_time from swanctl.conf reach the engine and act (engines in memory, fake clock).

The connection's IkeConfig runs as parsed (the daemon hands it over as it is); the
peer is the same configuration seen from the other side.
"""

from __future__ import annotations

import pytest

from tunsec.conf.config import parse_config
from tunsec.ike.constants import ExchangeType
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import DownReason, IkeSaDown
from tunsec.ike.message import decode_header
from tunsec.ike.testing import Network

A, B = "192.0.2.1", "192.0.2.2"


def conf(me: str, peer: str, extra: str, child_extra: str) -> str:
    nets = ("10.1.0.0/24", "10.2.0.0/24") if me == A else ("10.2.0.0/24", "10.1.0.0/24")
    return f"""
connections {{
  gw {{
    local_addrs = {me}
    remote_addrs = {peer}
    {extra}
    local {{ auth = psk
            id = {me} }}
    remote {{ auth = psk
             id = {peer} }}
    children {{ net {{ local_ts = {nets[0]}
                     remote_ts = {nets[1]}
                     {child_extra} }} }}
  }}
}}
secrets {{ ike {{ secret = s3cret-of-some-length }} }}
"""


def network(extra: str, child_extra: str) -> Network:
    """A runs the configuration with the keys under test and takes the full rand_time spread;
    B never rekeys first (rekey times far out)."""
    (a_conn,) = parse_config(conf(A, B, extra, child_extra)).connections
    (b_conn,) = parse_config(conf(B, A, "rekey_time = 1d", "rekey_time = 1d")).connections
    net = Network()
    net.add(A, IkeEndpoint([a_conn.ike], jitter=lambda bound: bound))
    net.add(B, IkeEndpoint([b_conn.ike], jitter=lambda bound: 0.0))
    net.nodes[A].initiate("gw", "net", net.now)
    return net


def rekeys(net: Network) -> list[float]:
    return [s.time for s in net.log if s.src[0] == A and decode_header(s.data).exchange == ExchangeType.CREATE_CHILD_SA
            and not decode_header(s.data).is_response]


def test_rand_time_from_the_config_moves_the_rekeys() -> None:
    net = network("rekey_time = 200s\n    rand_time = 60s", "rekey_time = 100s\n    rand_time = 30s")
    net.run(until=150.0)
    # the first, its rekey at 70, and that one's own rekey at 140: queued behind the IKE SA's rekey
    # at 140, it runs on the new IKE SA as soon as that is up (not at the next exchange)
    assert [type(e).__name__ for e in net.take(A)].count("ChildSaUp") == 3
    # the child at 100 - 30, the IKE SA at 200 - 60 (the new child's own rekey comes at 140 too)
    assert rekeys(net)[:2] == [pytest.approx(70.0), pytest.approx(140.0)]


@pytest.mark.parametrize(("over_time", "reason"), [(25, DownReason.EXPIRED), (1000, DownReason.PEER_UNREACHABLE)])
def test_over_time_from_the_config_decides_how_an_ike_sa_whose_rekey_fails_ends(
        over_time: int, reason: DownReason) -> None:
    """The rekey at 200 s never arrives. As strongSwan queues its DELETE behind the exchange in
    flight, the IKE SA lives until the rekey's retransmissions give up either way; over_time decides
    whether that is the end of an expired SA (reached at 225 s: the service re-establishes it) or of
    an unreachable peer (not reached: dpd_action applies)."""
    net = network(f"rekey_time = 200s\n    rand_time = 0s\n    over_time = {over_time}s", "rekey_time = 1d")
    retransmit = net.nodes[A].sas[0].config.retransmit
    give_up = 200.0 + sum(retransmit.delay(i) for i in range(retransmit.tries + 1))
    assert give_up > 225.0 + 1.0                     # the rekey is still retransmitted at 225 s
    net.run(until=100.0)
    net.take(A)
    net.drop = lambda sent: sent.src[0] == A
    net.run(until=give_up - 0.1)
    assert not [e for e in net.take(A) if isinstance(e, IkeSaDown)]
    net.run(until=give_up + 0.1)
    assert [e.reason for e in net.take(A) if isinstance(e, IkeSaDown)] == [reason]


def test_a_short_ike_rekey_time_rekeys_rather_than_expires() -> None:
    """rekey_time under 10 s: 10% of it (over_time's default) must not round to a hard lifetime
    that falls on the rekey itself."""
    net = network("rekey_time = 7s", "rekey_time = 1d")
    net.run(until=10.0)
    events = net.take(A)
    assert [type(e).__name__ for e in events].count("IkeSaRekeyed") == 1
    assert not [e for e in events if isinstance(e, IkeSaDown)]
