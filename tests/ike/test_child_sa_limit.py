"""max_child_sas: a peer's Child SAs per IKE SA are bounded (NO_ADDITIONAL_SAS, RFC 7296 §3.10.1),
rekeys are not counted twice, and nothing is allocated for a refused request."""

from __future__ import annotations

from test_engine import A, B, initiator_cfg, make_net, only, responder_cfg

from tunsec.ike.constants import NotifyType
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaLimit, ChildSaUp, NegotiationFailed
from tunsec.ike.exchanges import create_child_sa
from tunsec.ike.message import NotifyPayload, SaPayload
from tunsec.ike.sa import IkeSa, State
from tunsec.ike.state import ChildSa, random_spi_allocator
from tunsec.ike.testing import Network

LIMIT = 3


class CountingAllocator:
    """The responder's inbound SPIs, counted: a refused request must take none."""

    def __init__(self) -> None:
        self.taken = 0
        self._allocate = random_spi_allocator()

    def __call__(self) -> int:
        self.taken += 1
        return self._allocate()


def _at_limit(limit: int = LIMIT) -> tuple[Network, IkeSa, IkeSa, CountingAllocator]:
    """An IKE SA whose responder holds ``limit`` = max_child_sas Child SAs (IKE_AUTH's and the rest)."""
    spis = CountingAllocator()
    net = Network()
    a = net.add(A, IkeEndpoint([initiator_cfg()]))
    b = net.add(B, IkeEndpoint([responder_cfg(max_child_sas=limit)], spi_allocator=spis))
    a.initiate("a-to-b", "net", net.now)
    net.run()
    sa = a.sas[0]
    for _ in range(limit - 1):
        sa.initiate("net")
        net.run()
    assert len(b.sas[0].children) == limit and spis.taken == limit
    assert len(only(net.take(A), ChildSaUp)) == limit
    net.take(B)
    return net, sa, b.sas[0], spis


def test_a_child_sa_past_the_limit_is_refused_and_takes_no_spi() -> None:
    net, sa, gw, spis = _at_limit()
    sa.initiate("net")
    net.run()
    refused = only(net.take(A), NegotiationFailed)
    assert [(e.reason, e.child) for e in refused] == [("NO_ADDITIONAL_SAS", "net")]
    limit = only(net.take(B), ChildSaLimit)
    assert [(e.held, e.limit, e.rekey, e.peer) for e in limit] == [(LIMIT, LIMIT, False, "moon.example")]
    assert spis.taken == LIMIT   # the SPI pool was not touched
    assert len(gw.children) == LIMIT and len(sa.children) == LIMIT   # the initiator dropped its larval one
    assert sa.state is State.ESTABLISHED and gw.state is State.ESTABLISHED


def test_the_rekey_of_a_child_sa_at_the_limit_goes_through() -> None:
    net, sa, gw, spis = _at_limit()
    old = sa.children[0]
    sa.rekey_child(old.unique_id)
    net.run()
    ups = only(net.take(B), ChildSaUp)
    assert len(ups) == 1 and ups[0].rekey_of is not None
    assert spis.taken == LIMIT + 1
    # the old one went (the initiator's DELETE): still LIMIT, and a new one is still refused
    assert len(gw.children) == LIMIT and old.spi_in not in {c.spi_out for c in gw.children}
    sa.initiate("net")
    net.run()
    assert [e.reason for e in only(net.take(A), NegotiationFailed)] == ["NO_ADDITIONAL_SAS"]


def test_the_default_limit_is_finite() -> None:
    net, a, b = make_net()
    a.initiate("a-to-b", "net", net.now)
    net.run()
    limit = b.sas[0]._st.config.max_child_sas
    sa = a.sas[0]
    for _ in range(limit + 2):   # queued at once: IKE_AUTH's Child SA and limit + 2 more asked for
        sa.initiate("net")
    net.run(max_steps=10**6)
    assert len(b.sas[0].children) == limit
    assert len(only(net.take(B), ChildSaLimit)) == 3


def _rekey_request(sa: IkeSa, child: ChildSa) -> tuple[list[object], ChildSa]:
    """The initiator's real CREATE_CHILD_SA payloads to rekey ``child`` (and the Child SA they offer)."""
    task = create_child_sa.CreateChildTask(child.config, rekey=child)
    payloads = task.build(sa._st)
    new = task.proposed
    assert new is not None
    # as if installed (this side never sees the answer): the next rekey of it proposes the same selectors
    new.local_ts, new.remote_ts = child.local_ts, child.remote_ts
    return payloads, new


def _notify(payloads: list[object]) -> int | None:
    return next((p.type for p in payloads if isinstance(p, NotifyPayload)), None)


def test_a_child_sa_is_not_rekeyed_twice() -> None:
    """Each second rekey of one Child SA would add a Child SA while the live count stays put."""
    _, sa, gw, _ = _at_limit()
    old = sa.children[0]
    first, _ = _rekey_request(sa, old)
    assert any(isinstance(p, SaPayload) for p in create_child_sa.respond(gw._st, first).payloads)  # type: ignore[arg-type]
    again, _ = _rekey_request(sa, old)
    assert _notify(create_child_sa.respond(gw._st, again).payloads) == NotifyType.CHILD_SA_NOT_FOUND  # type: ignore[arg-type]
    assert len(gw.children) == LIMIT + 1


def test_rekeys_whose_old_child_sas_the_peer_never_deletes_are_bounded() -> None:
    _, sa, gw, spis = _at_limit(2)
    assert len(gw.children) == 2
    child = sa.children[0]
    for _ in range(2):   # each rekey's predecessor left undeleted
        payloads, child = _rekey_request(sa, child)
        assert any(isinstance(p, SaPayload) for p in create_child_sa.respond(gw._st, payloads).payloads)  # type: ignore[arg-type]
    taken = spis.taken
    payloads, _ = _rekey_request(sa, child)
    assert _notify(create_child_sa.respond(gw._st, payloads).payloads) == NotifyType.NO_ADDITIONAL_SAS  # type: ignore[arg-type]
    assert spis.taken == taken and len(gw.children) == 4
    assert [(e.rekey, e.held) for e in gw._st.events if isinstance(e, ChildSaLimit)] == [(True, 2)]
