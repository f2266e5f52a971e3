"""Late IKE_SA_INIT retransmissions at a responder, on a fake clock: one that arrives after the IKE SA
was authenticated is dropped and counted, forgotten with its IKE SA, and a client that restarts
from the same address (new SPI, or the same SPI reused) negotiates anew."""

from __future__ import annotations

import pytest
from endpoint_dos_data import (
    A,
    B,
    cfg,
)

from tunsec.ike.constants import ExchangeType
from tunsec.ike.endpoint import DosLimits, IkeEndpoint
from tunsec.ike.events import IkeSaUp
from tunsec.ike.message import decode_message
from tunsec.ike.sa import State
from tunsec.ike.testing import Network, Sent

# ---------------------------------------------------------------------- late IKE_SA_INIT retransmissions


def _established(b_limits: DosLimits | None = None) -> tuple[Network, IkeEndpoint, IkeEndpoint, Sent]:
    """A set up with B; and A's IKE_SA_INIT request as it went over the wire."""
    net = Network()
    a = net.add(A, IkeEndpoint([cfg(True)]))
    b = net.add(B, IkeEndpoint([cfg(False, peer=A)], limits=b_limits))
    a.initiate("conn", "net", net.now)
    net.run()
    assert [type(e) for e in net.take(B)].count(IkeSaUp) == 1
    request = next(s for s in net.log if s.src[0] == A)
    assert decode_message(request.data).exchange == ExchangeType.IKE_SA_INIT
    return net, a, b, request


def test_a_late_init_retransmission_reaches_the_authenticated_sa_and_is_dropped_counted() -> None:
    """A client that waited longer than its retransmission timeout for the IKE_SA_INIT answer (an
    overloaded gateway) sends the request again after all: that is no new negotiation (no second
    IKE SA, no x25519, no answer with a SPIr the client ignores), it is dropped and counted."""
    net, a, b, request = _established()
    (established,) = b.sas
    net.now += 5.0
    b.receive(request.data, request.src, net.now, request.dst)
    assert b.sas == [established] and established.state is State.ESTABLISHED
    assert b.half_open == 0 and b.datagrams_to_send(net.now) == []
    assert b.stats.late_init_retransmits == 1
    assert not net.take(B)
    # the IKE SA still works
    a.sas[0].send_liveness()
    net.run(until=net.now + 1)
    assert established.state is State.ESTABLISHED and a.sas[0].state is State.ESTABLISHED


def test_the_request_is_forgotten_with_its_ike_sa() -> None:
    """The entry goes when the IKE SA goes (nothing accumulates per client that came and went):
    the same request afterwards is a request like any other, as at strongSwan."""
    net, a, b, request = _established()
    a.sas[0].delete(net.now)
    net.run(until=net.now + 1)
    assert b.sa_count == 0 and not b._by_init and not b._init_of
    b.receive(request.data, request.src, net.now, request.dst)
    assert b.half_open == b.sa_count == 1 and b.stats.late_init_retransmits == 0


@pytest.mark.parametrize("rekeyer", ["initiator", "responder"])
def test_a_rekeyed_ike_sa_forgets_the_request_when_the_old_sa_goes(rekeyer: str) -> None:
    """The new IKE SA of a rekey has other SPIs and was made by no IKE_SA_INIT: it has no entry;
    the old SA keeps its own while it lingers, and it goes with it."""
    net, a, b, request = _established()
    (old,) = b.sas
    (a.sas[0] if rekeyer == "initiator" else old).rekey()
    net.step()
    net.step()   # request and response: the new IKE SA is up, the old one lingers (or is being deleted)
    assert len(b.sas) == 2 and not old.is_half_open
    b.receive(request.data, request.src, net.now, request.dst)
    assert b.stats.late_init_retransmits == 1 and len(b.sas) == 2 and b.half_open == 0
    net.run()
    (new,) = b.sas
    assert new is not old and new.state is State.ESTABLISHED and old.is_closed
    assert not b._by_init and not b._init_of


def test_a_client_restarting_with_a_new_spi_from_the_same_address_negotiates() -> None:
    net, _, b, _ = _established()
    restarted = net.add(A, IkeEndpoint([cfg(True)]))
    restarted.initiate("conn", "net", net.now)
    net.run()
    assert any(isinstance(e, IkeSaUp) for e in net.take(A))
    assert restarted.sas[0].state is State.ESTABLISHED and b.stats.late_init_retransmits == 0
    # INITIAL_CONTACT replaced the old IKE SA, and its entry went with it
    (sa,) = b.sas
    assert sa.spi_i == restarted.sas[0].spi_i and list(b._by_init.values()) == [sa]


def test_a_new_request_that_reuses_the_spi_from_the_same_address_is_a_new_negotiation() -> None:
    """As at strongSwan (which keys by a hash of the request): only the same request is a
    retransmission; another one under the same SPIi (new nonce, new KE) is answered by a new SA."""
    net, _, b, request = _established()
    (established,) = b.sas
    other = IkeEndpoint([cfg(True)])
    other.initiate("conn", "net", net.now)
    (fresh,) = other.datagrams_to_send(net.now)
    reused = request.data[:8] + fresh.data[8:]
    b.receive(reused, request.src, net.now, request.dst)
    (answer,) = b.datagrams_to_send(net.now)
    msg = decode_message(answer.data)
    assert msg.spi_i == request.data[:8] and msg.spi_r not in (bytes(8), established.local_spi)
    assert b.half_open == 1 and b.sa_count == 2 and b.stats.late_init_retransmits == 0
    # both requests are known, each for its own SA
    b.receive(reused, request.src, net.now, request.dst)
    (again,) = b.datagrams_to_send(net.now)
    assert again.data == answer.data
    b.receive(request.data, request.src, net.now, request.dst)
    assert b.datagrams_to_send(net.now) == [] and b.stats.late_init_retransmits == 1 and b.sa_count == 2
